"""Game days on a real Ray: `up` (detached and in the foreground), `inject`, `status`, `down`.

The module shares one Ray head (started as `up` starts one, and stopped at the end); every
day is passed its address, except the one that checks `up` starting and `down` stopping a Ray
of its own. Each test ends every day it starts and checks that their processes are gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from overcommit import gameday as gd

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "overcommit"]

DAY = """
name: day
seed: 5
duration: 10m
epoch: 100ms
sync_window: 1s
runtime: {kind: ray, guests: actors}
mechanism: frontswap
placement: balanced
hosts: {count: 3, ram: 256MiB, reserve: 32MiB, boot: lazy}
shared_storage: {device: ssd}
ha: {admission: host-failures, tolerate: 1, detection: 1s, restart_deadline: 30s}
guests:
  - name: g
    count: 3
    memory: 48MiB
    maxmem: 64MiB
    swap: 64MiB
    workload: {kind: zipf, working_set: 56MiB, access_rate: 5k/s, skew: 0.3}
"""


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """One Ray head for the module, in a state directory of its own."""
    state = tmp_path_factory.mktemp("gameday-ray")
    old = os.environ.get("OVERCOMMIT_STATE_DIR")
    os.environ["OVERCOMMIT_STATE_DIR"] = str(state)
    try:
        rec = gd.start_local_ray()
    finally:
        if old is None:
            os.environ.pop("OVERCOMMIT_STATE_DIR")
        else:
            os.environ["OVERCOMMIT_STATE_DIR"] = old
    yield rec
    gd._stop_ray(rec)
    assert not gd._alive(rec["pid"])


@pytest.fixture
def env(tmp_path):
    """The commands' environment: this checkout, a state directory per test, token auth."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["OVERCOMMIT_STATE_DIR"] = str(tmp_path / "state")
    e["RAY_AUTH_MODE"] = "token"
    return e


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "day.yaml"
    path.write_text(DAY)
    return path


def cli(env, *args, timeout=240, check=None):
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=ROOT)  # fmt: skip
    if check is not None:
        assert p.returncode == check, p.stdout + p.stderr
    return p


def status(env, name):
    return json.loads(cli(env, "status", name, "--json", check=0).stdout)


def wait_for(env, name, pred, timeout=120):
    end = time.monotonic() + timeout
    while True:
        st = status(env, name)
        if pred(st):
            return st
        assert st["state"] != "failed", st["error"]
        assert time.monotonic() < end, f"timed out waiting; last status: {st['t']} {st['state']}"
        time.sleep(0.5)


def pids_of(st):
    p = st["processes"]
    hosts = [x for h in p["hosts"].values() for x in (h["pid"], h["redis_pid"]) if x]
    return [p["driver"], *p["driver_children"], *hosts]


def assert_gone(pids, timeout=30):
    def alive():
        out = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.NoSuchProcess:
                pass
        return out

    end = time.monotonic() + timeout
    while alive() and time.monotonic() < end:
        time.sleep(0.5)
    assert alive() == []


def fetch(url):
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def up(env, config, ray_head, name, *extra, pace="2x"):
    return cli(env, "up", config, "--address", ray_head["address"], "--name", name,
               "--pace", pace, *extra)  # fmt: skip


def test_up_inject_status_down_and_replay(ray_head, env, config, tmp_path):
    out = tmp_path / "run"
    p = up(env, config, ray_head, "day", "--out", out)
    assert p.returncode == 0, p.stderr
    assert "cluster day is up" in p.stdout
    st = wait_for(env, "day", lambda s: s["t"] >= 3)
    # the live dashboard: its URL printed by up and status, 403 without the token
    url = st["dashboard"]
    assert url.startswith("http://127.0.0.1:") and f"dashboard: {url}" in p.stdout
    assert f"dashboard: {url}" in cli(env, "status", "day", check=0).stdout
    base, token = url.split("?", 1)
    assert fetch(base)[0] == 403 and fetch(base + "data")[0] == 403
    code, body = fetch(base + "data?" + token)
    assert code == 200
    before = json.loads(body)
    assert [h["name"] for h in before["hosts"]] == ["host-1", "host-2", "host-3"]
    assert "fail_host" not in [e["kind"] for e in before["events"]]
    p = cli(env, "inject", "day", "fail-host", "host-1", "--by", "tester", check=0)
    assert "fail-host host-1 queued by tester" in p.stdout
    st = wait_for(env, "day", lambda s: s["guests"]["g-1"]["restarts"] >= 1)
    assert st["hosts"]["host-1"]["up"] is False and st["state"] == "running"
    (inj,) = st["injections"]
    assert inj["action"] == "fail_host" and inj["by"] == "tester"
    after = json.loads(fetch(base + "data?" + token)[1])
    assert after["epoch"] > before["epoch"] and len(after["t"]) > len(before["t"])
    assert {h["name"]: h["up"] for h in after["hosts"]}["host-1"] is False
    kinds = [e["kind"] for e in after["events"]]
    assert "fail_host" in kinds and "ha_restart" in kinds
    assert "fail_host" in [m["kind"] for m in after["markers"]]
    pids = pids_of(st)
    assert len(pids) >= 7  # the driver, its shared redis-server, 3 hosts and their servers
    p = cli(env, "down", "day", "--no-report", check=0)
    assert f"run directory: {out}" in p.stdout
    assert_gone(pids)
    with pytest.raises(urllib.error.URLError):  # the dashboard went with the day
        fetch(url)
    assert cli(env, "status", "day").returncode == 2
    # the run directory is what `run` writes
    for f in ("summary.json", "events.jsonl", "guests.parquet", "hosts.csv"):
        assert (out / f).exists(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid"], summary["checks"]
    log = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    fail = next(e for e in log if e["kind"] == "fail_host")
    assert fail["epoch"] == inj["epoch"] and fail["injected_by"] == "tester"
    assert fail["guests"] == ["g-1"] and "wall_time" in fail
    restart = next(e for e in log if e["kind"] == "ha_restart")
    assert restart["guest"] == "g-1" and restart["epoch"] > fail["epoch"]
    end = log[-1]
    assert end["kind"] == "end" and end["reason"] == "down"
    assert summary["emulated_seconds"] == end["t"] < 600
    assert summary["totals"]["host_failures"] == 1 and summary["totals"]["ha_restarts"] == 1
    # the log replays the day to the same summary
    again = tmp_path / "again"
    cli(env, "run", config, "--replay", out / "events.jsonl", "--runtime", "inline", "--out",
        again, "--quiet", "--no-report", check=0)  # fmt: skip
    replayed = json.loads((again / "summary.json").read_text())
    strip = lambda s: {k: v for k, v in s.items() if k != "run"}  # noqa: E731
    assert strip(replayed) == strip(summary)


def test_up_outlives_its_terminal_and_two_days_run_side_by_side(ray_head, env, config, tmp_path):
    # a shell in a session of its own (a terminal) starts a day, then is killed
    shell = subprocess.Popen(
        ["bash", "-c", " ".join([*CLI, "up", str(config), "--address", ray_head["address"],
                                 "--name", "one", "--pace", "10x", "--out", str(tmp_path / "one"),
                                 ";", "sleep", "600"])],
        env=env, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        end = time.monotonic() + 120
        while cli(env, "status", "one", "--json").returncode != 0:
            assert shell.poll() is None and time.monotonic() < end
            time.sleep(1)
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    one = wait_for(env, "one", lambda s: s["t"] >= 2)
    assert one["state"] == "running"
    # a second day by another name; the first name is taken
    assert up(env, config, ray_head, "two", "--out", tmp_path / "two").returncode == 0
    taken = up(env, config, ray_head, "one")
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines() == [
        "error: a cluster named 'one' is already up (overcommit down one)"
    ]
    listed = json.loads(cli(env, "status", "--json", check=0).stdout)
    assert {r["name"]: r["state"] for r in listed} == {"one": "running", "two": "running"}
    # down of one from another process leaves the other running
    pids_one = pids_of(status(env, "one"))
    cli(env, "down", "one", "--no-report", check=0)
    assert (tmp_path / "one" / "summary.json").exists()
    assert_gone(pids_one)
    before = status(env, "two")["t"]
    two = wait_for(env, "two", lambda s: s["t"] > before)
    assert two["state"] == "running"
    pids_two = pids_of(two)
    cli(env, "down", "two", "--no-report", check=0)
    assert_gone(pids_two)
    assert json.loads(cli(env, "status", "--json", check=0).stdout) == []


def test_bad_commands_exit_2_and_leave_the_day_untouched(ray_head, env, config, tmp_path):
    assert up(env, config, ray_head, "bad", "--out", tmp_path / "bad").returncode == 0
    try:
        wait_for(env, "bad", lambda s: s["t"] >= 1)
        cases = {
            ("inject", "nope", "fail-host", "host-1"): "no cluster named 'nope' is up",
            ("inject", "bad", "fail-host", "host-9"): "unknown host 'host-9'",
            ("inject", "bad", "explode", "host-1"): "unknown action 'explode'",
            ("inject", "bad", "stop-cooperating", "g-9"): "unknown guest 'g-9'",
            ("inject", "bad", "recover-host", "host-2"): "recover-host: host-2 is up",
            ("inject", "bad", "migrate", "g-1"): "migrate needs --to HOST",
            ("inject", "bad", "migrate", "g-1", "--to", "host-1"): "g-1 already runs on host-1",
            ("inject", "bad", "slow-storage", "--factor", "2", "--duration", "5s"): "factor",
            ("inject", "bad", "slow-storage", "--factor", "0.5"): "needs --factor F",
            ("inject", "bad", "fail-host", "host-1", "--real"): "needs the hosts pinned",
            ("inject", "bad", "host-reclaim", "host-1", "--real"): "--real applies to fail-host",
            ("down", "nope"): "no cluster named 'nope' is up",
            ("status", "nope"): "no cluster named 'nope' is up",
        }
        for args, message in cases.items():
            p = cli(env, *args)
            assert p.returncode == 2, (args, p.stdout, p.stderr)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and message in lines[0], (args, lines)
        st = status(env, "bad")
        assert st["state"] == "running" and st["injections"] == []
        assert st["pending_injections"] == 0 and all(h["up"] for h in st["hosts"].values())
    finally:
        pids = pids_of(status(env, "bad"))
        cli(env, "down", "bad", "--no-report", check=0)
        assert_gone(pids)


def test_up_without_address_starts_a_ray_that_the_last_down_stops(env, config, tmp_path):
    p = cli(env, "up", config, "--name", "solo", "--pace", "max", "--out", tmp_path / "solo")
    assert p.returncode == 0, p.stderr
    ray_rec = json.loads((tmp_path / "state" / "ray.json").read_text())
    assert gd._alive(ray_rec["pid"])
    st = wait_for(env, "solo", lambda s: s["t"] >= 1)
    pids = pids_of(st)
    cli(env, "inject", "solo", "host-reclaim", "host-2", check=0)
    wait_for(env, "solo", lambda s: len(s["injections"]) == 1)
    code = cli(env, "down", "solo", "--no-report").returncode
    assert code in (0, 1)
    log = (tmp_path / "solo" / "events.jsonl").read_text()
    assert '"kind": "host_reclaim"' in log and '"injected_by"' in log
    assert not (tmp_path / "state" / "ray.json").exists()
    assert_gone([ray_rec["pid"], *pids])
    assert not Path(ray_rec["temp_dir"]).exists()


def test_foreground_day_ends_on_sigint_with_its_run_directory(ray_head, env, config, tmp_path):
    out = tmp_path / "fg"
    proc = subprocess.Popen(
        [*CLI, "up", str(config), "--address", ray_head["address"], "--name", "fg",
         "--pace", "10x", "--out", str(out), "--foreground"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 120
        while True:
            p = cli(env, "status", "fg", "--json")
            if p.returncode == 0 and json.loads(p.stdout)["t"] >= 2:
                break
            assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()
            time.sleep(1)
        pids = pids_of(json.loads(p.stdout))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert f"run directory: {out}" in stdout
    assert json.loads((out / "summary.json").read_text())["valid"]
    assert_gone(pids)
    assert cli(env, "status", "fg").returncode == 2


@pytest.mark.parametrize("page", ["gameday.md", "cluster.md"])
def test_docs_session_uses_real_commands_and_options(page):
    """Every `overcommit` line of docs/gameday.md's and docs/cluster.md's session (and
    synopsis) names a command and options that the command's --help lists (no Ray needed)."""
    import re

    from typer.testing import CliRunner

    from overcommit.cli import app

    doc = (ROOT / "docs" / page).read_text()
    lines = re.findall(r"^\$? ?overcommit (\w+) (.*)$", doc, re.M)
    assert {cmd for cmd, _ in lines} >= {"up", "inject", "status", "down"}
    runner = CliRunner()
    helps = {}
    for cmd, rest in lines:
        if cmd not in helps:
            result = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
            assert result.exit_code == 0, result.output
            helps[cmd] = result.output
        for opt in re.findall(r"(--[a-z-]+)", rest):
            assert opt in helps[cmd], f"overcommit {cmd} has no {opt}"


def test_cluster_recipe_pins_one_host_per_node():
    """docs/cluster-launcher.yaml has a node type per host of docs/cluster-lab.yaml, each one
    machine with that host's custom resource alone, a head with none, and installs this
    checkout with pip on every node; the scenario loads and pins hosts by resource."""
    import yaml

    from overcommit.config import load_scenario

    sc = load_scenario(ROOT / "docs" / "cluster-lab.yaml")
    assert sc.runtime.pin == "resource" and sc.runtime.kind == "ray"
    hosts = sc.host_names()
    launcher = yaml.safe_load((ROOT / "docs" / "cluster-launcher.yaml").read_text())
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert not set(head["resources"]) & set(hosts)
    for h in hosts:
        t = types[h]
        assert t["min_workers"] == t["max_workers"] == 1
        assert {k for k in t["resources"] if k in hosts} == {h} and t["resources"][h] == 1
    assert launcher["max_workers"] == len(hosts)
    assert launcher["file_mounts"]["~/overcommit"] == "."
    assert launcher["file_mounts"]["~/lab.yaml"] == "docs/cluster-lab.yaml"
    assert any("pip install" in c and "~/overcommit" in c for c in launcher["setup_commands"])
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert "cluster-launcher.yaml" in doc and "fail-host host-2 --real" in doc


def test_ray_cluster_messages_stay_off_stdout(ray_head, capfd, monkeypatch):
    """A node marked dead while `status --json` runs: Ray's driver prints the message, and
    it must not land on stdout between (or after) the JSON."""
    from ray._private import worker

    ray = gd.connect(ray_head["address"], token=True)
    try:
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)  # as in a command's own process
        msg = {"lines": ["node 1a2b has been marked dead"], "pid": "raylet", "is_err": False}
        worker.print_to_stdstream(msg, ignore_prefix=False)
        sys.__stdout__.flush()
    finally:
        ray.shutdown()
    assert "marked dead" not in capfd.readouterr().out
