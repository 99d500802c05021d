"""docs/cluster.md's session on a local multi-node Ray cluster: a head and one node per host,
each with the host's custom resource (`ray.cluster_utils.Cluster`, one CPU each), the day's
hosts pinned one per node (`runtime.pin: resource`). `inject fail-host --real` removes a real
Ray node: the host's actor and Redis server die with it, the driver logs the failure and HA
restarts the guest on a survivor; `recover-host` is refused until a node with the host's
resource joins again, then brings the host back on it; a `fail-host` without `--real` kills
a host's actor only. The run directory is valid and its log replays.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import pytest
from test_gameday import DAY, assert_gone, cli, pids_of, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ("host-1", "host-2", "host-3")

# test_gameday's day, its hosts' actors pinned to the nodes that carry their resources
LAB = (
    DAY.replace("name: day", "name: lab")
    .replace("seed: 5", "seed: 11")
    .replace("guests: actors}", "guests: packed, pin: resource}")
)


@contextlib.contextmanager
def _quiet() -> object:
    """Ray's notes when nodes start and die go to this process's stdout and stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _ray_auth(mode: str | None) -> None:
    """Set this process's Ray token-authentication mode, in the environment (which the Ray
    processes a Cluster starts inherit) and in Ray's cached config (which its client uses)."""
    from ray._raylet import Config

    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")


@pytest.fixture
def cluster():
    """A head with no host on it (the day's driver goes there) and a node per host."""
    from ray.cluster_utils import Cluster

    # Ray turns token authentication on by itself (an earlier in-process ray.init sets
    # RAY_AUTH_MODE=token here; a token in ~/.ray enables it when the mode is unset): this
    # cluster runs without tokens, as the `up` it is given to (RAY_AUTH_MODE=disabled, see
    # `env`) expects. Afterwards both halves go back as they were, together.
    before = os.environ.get("RAY_AUTH_MODE")
    _ray_auth("disabled")
    try:
        with _quiet():
            c = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 1, "include_dashboard": False},
            )
            c.host_nodes = {h: c.add_node(num_cpus=1, resources={h: 1}) for h in HOSTS}
            c.wait_for_nodes()
        try:
            yield c
        finally:
            with _quiet():
                c.shutdown()
    finally:
        _ray_auth(before)


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["OVERCOMMIT_STATE_DIR"] = str(tmp_path / "state")
    e["RAY_AUTH_MODE"] = "disabled"  # the cluster fixture's mode (a token in ~/.ray: not used)
    return e


def _raylet_exited(node) -> bool:
    return all(p.process.poll() is not None for p in node.all_processes.get("raylet", []))


def test_gameday_session_on_three_ray_nodes_with_a_real_node_failure(cluster, env, tmp_path):
    config = tmp_path / "lab.yaml"
    config.write_text(LAB)
    out = tmp_path / "run"
    p = cli(env, "up", config, "--address", cluster.address, "--name", "lab", "--pace", "2x",
            "--out", out)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "dashboard: http://127.0.0.1:" in p.stdout
    st = wait_for(env, "lab", lambda s: s["t"] >= 3)
    pids = pids_of(st)
    on_2 = st["hosts"]["host-2"]["guests"]
    assert on_2, st["hosts"]
    host2_pids = [st["processes"]["hosts"]["host-2"][k] for k in ("pid", "redis_pid")]

    # a real node failure: host-2's Ray node goes, with the host's actor and Redis server
    p = cli(env, "inject", "lab", "fail-host", "host-2", "--real", "--by", "chaos-team", check=0)
    assert "fail-host host-2 queued by chaos-team" in p.stdout
    st = wait_for(env, "lab", lambda s: all(s["guests"][g]["restarts"] >= 1 for g in on_2))
    assert st["hosts"]["host-2"]["up"] is False and st["state"] == "running"
    assert st["real_nodes_removed"] == ["host-2"]
    assert _raylet_exited(cluster.host_nodes["host-2"])
    assert_gone(host2_pids)
    for g in on_2:
        assert st["guests"][g]["host"] in ("host-1", "host-3")
    assert not _raylet_exited(cluster.host_nodes["host-1"])

    # no node for host-2 any more: recover-host is refused, the day untouched
    p = cli(env, "inject", "lab", "recover-host", "host-2")
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert "recover-host: no Ray node has the custom resource 'host-2'" in line
    p = cli(env, "inject", "lab", "fail-host", "host-2", "--real")
    assert p.returncode == 2 and "host-2 is down" in p.stderr
    # a repaired machine joins with host-2's resource: the host comes back on it
    with _quiet():
        cluster.remove_node(cluster.host_nodes["host-2"], allow_graceful=False)  # bookkeeping
        cluster.add_node(num_cpus=1, resources={"host-2": 1})
        cluster.wait_for_nodes()
    cli(env, "inject", "lab", "recover-host", "host-2", check=0)
    st = wait_for(env, "lab", lambda s: s["hosts"]["host-2"]["up"])
    # a fail-host without --real on the same day: the host's actor only, its node stays
    on_3 = st["hosts"]["host-3"]["guests"]
    pids = sorted({*pids, *pids_of(st)} - set(host2_pids))
    cli(env, "inject", "lab", "fail-host", "host-3", check=0)
    st = wait_for(env, "lab", lambda s: not s["hosts"]["host-3"]["up"])
    assert st["real_nodes_removed"] == []  # host-2 is back
    assert not _raylet_exited(cluster.host_nodes["host-3"])

    p = cli(env, "down", "lab", "--no-report")
    assert p.returncode in (0, 1), p.stdout + p.stderr  # 1: no hypothesis is met or not
    assert_gone(pids)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid"], summary["checks"]
    assert summary["totals"]["host_failures"] == 2
    log = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    fail, fail_3 = [e for e in log if e["kind"] == "fail_host"]
    assert fail["host"] == "host-2" and fail["real"] is True
    assert fail["detected"] == "the host's Ray actor died" and fail["injected_by"] == "chaos-team"
    assert fail_3["host"] == "host-3" and "real" not in fail_3 and "detected" not in fail_3
    assert sorted(fail_3["guests"]) == sorted(on_3)
    restarts = [e for e in log if e["kind"] == "ha_restart" and e["epoch"] < fail_3["epoch"]]
    assert sorted(e["guest"] for e in restarts) == sorted(on_2)
    assert all(e["epoch"] > fail["epoch"] and e["host"] != "host-2" for e in restarts)
    (rec,) = [e for e in log if e["kind"] == "recover_host"]
    assert rec["host"] == "host-2" and rec["epoch"] > fail["epoch"]
    assert log[-1]["kind"] == "end"
    # the log replays the day, real fault and all, in one process
    again = tmp_path / "again"
    cli(env, "run", config, "--replay", out / "events.jsonl", "--runtime", "inline", "--out",
        again, "--quiet", "--no-report")  # fmt: skip
    replayed = json.loads((again / "summary.json").read_text())
    strip = lambda s: {k: v for k, v in s.items() if k not in ("run", "events")}  # noqa: E731
    assert strip(replayed) == strip(summary)
    # the same events, but for how the day learnt of the failure (its actor died)
    plain = [{k: v for k, v in e.items() if k != "detected"} for e in summary["events"]]
    assert replayed["events"] == plain
