"""The Ray runtime on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster):
placement equality, where state and Redis servers live, joining a cluster, failing fast, and
cleaning up after SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from overcommit.cluster.engine import run_scenario
from overcommit.config import apply_overrides, load_scenario_text

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "overcommit"]
# a CLI started from here must not inherit this process's connection to the test cluster
LOCAL_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}

SCENARIO = """
name: ray-small
seed: 11
duration: 6s
sync_window: 500ms
mechanism: {mechanism}
runtime: {{kind: ray, guests: actors, pin: resource}}
hosts: {{count: 2, ram: 320MiB, reserve: 32MiB}}
shared_storage: {{device: ssd}}
guests:
  - name: g
    count: 4
    memory: 64MiB
    maxmem: 96MiB
    swap: 96MiB
    workload: {{kind: zipf, working_set: 96MiB, access_rate: 40k/s, skew: 0.5}}
"""
EVENTS = """events:
  - {at: 2s, tmem_freeze: host-1}
  - {at: 3s, tmem_thaw: host-1}
  - {at: 4s, tmem_flush: g-2}
"""


def scenario(mechanism: str = "frontswap", events: bool = False, **overrides: object):
    text = SCENARIO.format(mechanism=mechanism) + (EVENTS if events else "")
    sc = load_scenario_text(text, "ray-small.yaml")
    return apply_overrides(sc, overrides) if overrides else sc


@pytest.fixture(scope="module")
def cluster():
    """A head with no CPUs and two 1-CPU raylets, each carrying one emulated host's label."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    c.add_node(num_cpus=1, resources={"host-1": 1})
    c.add_node(num_cpus=1, resources={"host-2": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


#: packed guests, one host per actor process (`auto` would group hosts on this 2-CPU cluster)
ONE_PER_ACTOR = {"runtime.guests": "packed", "runtime.hosts_per_actor": 1}


def comparable(result) -> tuple:
    s = {k: v for k, v in result.summary.items() if k != "run"}
    return s, result.guests, result.hosts, result.events


def assert_same_run(result, ref: tuple, name: str) -> None:
    """`result` has the summary (apart from `run`), time series and event log of `ref`."""
    other = comparable(result)
    assert other[0] == ref[0], name
    pd.testing.assert_frame_equal(other[1], ref[1])
    pd.testing.assert_frame_equal(other[2], ref[2])
    assert other[3] == ref[3]


XEN_TMEM = {  # frontswap+cleancache: page cache, image pages, a compressing, deduplicating pool
    "guests.0.workload.file_cache": "40%",
    "guests.0.workload.duplicates": "30%",
    "hosts.tmem.compress": True,
    "hosts.tmem.dedup": True,
    "hosts.ram": "400MiB",  # the four guests share host-1: RAM left for both pools
    "guests.0.maxmem": "72MiB",
}


@pytest.mark.parametrize(
    "mechanism", ["frontswap", "none", "balloon+host-swap", "frontswap+cleancache"]
)
def test_same_results_in_every_placement(cluster, mechanism):
    extra = XEN_TMEM if mechanism == "frontswap+cleancache" else {}
    runs = {
        "inline": run_scenario(scenario(mechanism, True, **{"runtime.kind": "inline"}, **extra)),
        "packed": run_scenario(scenario(mechanism, True, **ONE_PER_ACTOR, **extra)),
        "actors": run_scenario(scenario(mechanism, True, **extra)),
    }
    base = comparable(runs["inline"])
    assert base[0]["valid"], base[0]["checks"]
    t = base[0]["totals"]
    if mechanism == "frontswap":
        assert t["frontswap_puts"] > 0 and t["frontswap_gets"] > 0 and t["disk_writes"] > 0
    if mechanism == "frontswap+cleancache":
        assert t["cleancache_puts"] > 0 and t["cleancache_hits"] > 0 and t["file_writes"] > 0
        assert t["frontswap_dedup_puts"] > 0 and base[2]["tmem_shared_pages"].max() > 0
        assert (base[2]["tmem_pages"] < base[2]["tmem_stored"]).any()  # compressed
    for name in ("packed", "actors"):
        assert_same_run(runs[name], base, name)
        assert runs[name].summary["run"]["runtime"]["kind"] == "ray"
        assert runs[name].summary["run"]["epochs_per_call"] == 5.0  # 500 ms windows


def test_hosts_on_distinct_nodes_with_their_redis_there(cluster):
    seen = {}

    def look(epoch, runtime, fleet):
        if not seen:
            seen["infos"] = list(runtime.infos.values())
            seen["nodes"] = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
            seen["children"] = {
                i["host"]: [p.pid for p in psutil.Process(i["pid"]).children()]
                for i in runtime.infos.values()
            }

    r = run_scenario(scenario(duration="1s"), on_window=look)
    infos = seen["infos"]
    assert [i["host"] for i in infos] == ["host-1", "host-2"]
    assert infos[0]["node_id"] != infos[1]["node_id"]
    for info in infos:
        node = seen["nodes"][info["node_id"]]
        assert node["Resources"].get(info["host"]) == 1  # the node labelled for that host
        # the host's redis-server is a child of the host actor's worker process, and is gone
        assert info["redis_pid"] in seen["children"][info["host"]]
        assert (
            not psutil.pid_exists(info["redis_pid"])
            or psutil.Process(info["redis_pid"]).status() == psutil.STATUS_ZOMBIE
        )
    assert r.summary["run"]["nodes"] == {i["host"]: i["node_id"] for i in infos}


def test_guest_state_lives_only_in_its_actor(cluster):
    seen = {}

    def look(epoch, runtime, fleet):
        if epoch == 10 and not seen:
            ga = runtime.guest_actors["g-1"]
            seen["versions"] = ray.get(ga.page_versions.remote())
            seen["guest_pid"] = ray.get(ga.pid.remote())
            seen["hosts_hold_state"] = ray.get(
                [h.has_guest_state.remote() for h in runtime.hosts.values()]
            )
            seen["host_pids"] = [i["pid"] for i in runtime.infos.values()]
            seen["driver_models"] = hasattr(runtime, "models") or hasattr(runtime, "by_name")

    run_scenario(scenario(duration="2s"), on_window=look)
    assert seen["versions"].sum() > 0  # the guest wrote pages: its versions are there
    assert seen["hosts_hold_state"] == [False, False]
    assert seen["guest_pid"] not in seen["host_pids"] and seen["guest_pid"] != os.getpid()
    assert seen["driver_models"] is False


def test_joining_an_existing_cluster_leaves_its_actors_alone(cluster, tmp_path):
    @ray.remote(num_cpus=0)
    class Bystander:
        def ping(self) -> str:
            return "pong"

    by = Bystander.options(name="bystander", lifetime="detached").remote()
    assert ray.get(by.ping.remote()) == "pong"
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.format(mechanism="frontswap"))
    proc = subprocess.run(
        [
            *CLI,
            "run",
            str(f),
            "--duration",
            "2s",
            "-q",
            "--address",
            cluster.address,
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "summary.json").is_file()
    assert ray.get(by.ping.remote()) == "pong"
    ray.kill(by)


def test_address_pointing_at_nothing_fails_fast():
    t0 = time.monotonic()
    proc = subprocess.run(
        [*CLI, "run", "configs/quickstart.yaml", "--address", "127.0.0.1:1", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert time.monotonic() - t0 < 20
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


def _family(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_sigint_leaves_no_ray_process_and_no_redis_server(tmp_path):
    proc = subprocess.Popen(
        [
            *CLI,
            "run",
            "configs/quickstart.yaml",
            "--duration",
            "3600s",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 90
        family: dict[int, psutil.Process] = {}
        names: dict[int, str] = {}
        redis_seen = 0
        while time.time() < deadline:
            for p in _family(proc.pid):
                family[p.pid] = p
                names.setdefault(p.pid, _name(p))
            redis_seen = sum(1 for n in names.values() if "redis-server" in n)
            if redis_seen >= 2:  # the shared store and the host's store are up
                break
            time.sleep(0.3)
        assert redis_seen >= 2
        time.sleep(2.0)
        for p in _family(proc.pid):
            family[p.pid] = p
            names.setdefault(p.pid, _name(p))
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    seen = sorted(set(names.values()))
    assert any("raylet" in n for n in seen) and any("gcs_server" in n for n in seen), seen
    _, alive = psutil.wait_procs(list(family.values()), timeout=30)
    assert [(p.pid, names[p.pid]) for p in alive] == []


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return ""


def test_failover_same_results_in_every_placement(cluster):
    """A host death with HA restarts and reclaim, a recovery, a tmem backend failure, a guest
    that stops cooperating and slow storage: identical in inline, packed and actors."""
    from test_failover import failover

    events = [
        {"at": 1.0, "stop_cooperating": "g-3"},
        {"at": 2.0, "fail_host": "host-1"},
        {"at": 2.5, "slow_storage": {"factor": 0.5, "duration": 1.0}},
        {"at": 3.0, "tmem_backend_failure": "host-2"},
        {"at": 6.0, "recover_host": "host-1"},
    ]
    base = failover(duration="8s", deadline="3s")
    base = apply_overrides(base, {"events": events, "runtime.kind": "ray", "runtime.pin": "spread"})
    seen: dict = {}

    def look(epoch, runtime, fleet):
        # two hosts per actor: host-1 and host-2 in one process, with a Redis server each;
        # host-1's server is killed with the host, its repaired self joins with a new one
        infos = {h: ray.get(a.info.remote()) for h, a in runtime.hosts.items()}
        seen.setdefault(len(infos), []).append(infos)

    # `auto`: 3 hosts over the cluster's 2 CPUs, 2 hosts per actor process
    grouped = {"runtime.guests": "packed", "runtime.hosts_per_actor": "auto"}
    runs = {
        "inline": run_scenario(apply_overrides(base, {"runtime.kind": "inline"})),
        "packed": run_scenario(apply_overrides(base, ONE_PER_ACTOR)),
        "actors": run_scenario(base),
        "grouped": run_scenario(apply_overrides(base, grouped), on_window=look),
    }
    ref = comparable(runs["inline"])
    s = ref[0]
    assert s["valid"], s["checks"]
    t = s["totals"]
    assert t["host_failures"] == 1 and t["backend_failures"] == 1 and t["host_recoveries"] == 1
    assert t["ha_restarts"] >= 1 and t["guests_crashed"] >= 3
    for name in ("packed", "actors", "grouped"):
        assert_same_run(runs[name], ref, name)
    per_actor = {n: r.summary["run"]["runtime"]["hosts_per_actor"] for n, r in runs.items()}
    assert per_actor == {"inline": None, "packed": 1, "actors": 1, "grouped": 2}
    first, last = seen[3][0], seen[3][-1]
    assert first["host-1"]["pid"] == first["host-2"]["pid"] == last["host-1"]["pid"]
    assert first["host-3"]["pid"] != first["host-1"]["pid"]
    old, new = first["host-1"]["redis_pid"], last["host-1"]["redis_pid"]
    assert len({old, new, first["host-2"]["redis_pid"]}) == 3
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    assert list(seen[2][0]) == ["host-2", "host-3"]  # while host-1 was down


def test_migration_same_results_and_the_guest_really_moves(cluster):
    """A frontswap guest (pool pages in host-1's Redis) migrates to host-2: identical results
    in every placement; with actors, a new actor on host-2's node owns it afterwards."""
    from test_migration import mech

    base = apply_overrides(
        mech("frontswap", duration="6s"), {"runtime.kind": "ray", "runtime.pin": "resource"}
    )
    seen: dict = {}

    def look(epoch, runtime, fleet):
        if epoch == 30:
            ga = runtime.guest_actors["a-1"]
            seen["before"] = (ray.get(ga.node_id.remote()), ray.get(ga.pid.remote()), ga)
        if epoch >= 50 and "after" not in seen:
            ga = runtime.guest_actors["a-1"]
            seen["after"] = (ray.get(ga.node_id.remote()), ray.get(ga.pid.remote()))
            seen["nodes"] = runtime.nodes()
            seen["versions"] = ray.get(ga.page_versions.remote())

    runs = {
        "inline": run_scenario(apply_overrides(base, {"runtime.kind": "inline"})),
        "packed": run_scenario(apply_overrides(base, ONE_PER_ACTOR)),
        "actors": run_scenario(base, on_window=look),
    }
    ref = comparable(runs["inline"])
    assert ref[0]["valid"], ref[0]["checks"]
    (m,) = ref[0]["migrations"]
    assert m["outcome"] == "completed" and m["tmem_pages_moved"] > 0
    for name in ("packed", "actors"):
        assert_same_run(runs[name], ref, name)
    node0, pid0, old = seen["before"]
    node1, pid1 = seen["after"]
    assert node0 == seen["nodes"]["host-1"] and node1 == seen["nodes"]["host-2"]
    assert pid0 != pid1 and seen["versions"].sum() > 0
    with pytest.raises(ray.exceptions.RayActorError):  # the old actor stopped
        ray.get(old.pid.remote(), timeout=30)
    assert runs["actors"].summary["run"]["migration_bytes_crossed"] > 0
    assert runs["inline"].summary["run"]["migration_bytes_crossed"] == 0


@pytest.mark.parametrize(
    "ending", ["runs out in post-copy", "destination fails", "source fails", "source store fails"]
)
def test_postcopy_same_results_in_every_placement(cluster, ending):
    """A post-copy migration whose remote pages the guest reads from host-1's Redis after it
    moved to host-2 (with actors: from its new actor on host-2's node): identical results in
    every placement, whether the run ends in post-copy (the final read-back reads host-1 too)
    or the destination fails in it (host-1 drops what it held), or host-1's Redis fails in it
    (the guest crashes on host-2)."""
    from test_migration import mech

    extra = {
        "destination fails": "  - {at: 4.9s, fail_host: host-2}",
        "source fails": "  - {at: 4.9s, fail_host: host-1}",
        "source store fails": "  - {at: 4.9s, tmem_backend_failure: host-1}",
    }.get(ending, "")
    base = apply_overrides(
        mech("frontswap", duration="4.9s" if not extra else "6s", extra=extra),
        {"runtime.kind": "ray", "runtime.pin": "resource", "migration.mode": "postcopy"},
    )
    runs = {
        "inline": run_scenario(apply_overrides(base, {"runtime.kind": "inline"})),
        "packed": run_scenario(apply_overrides(base, ONE_PER_ACTOR)),
        "actors": run_scenario(apply_overrides(base, {"runtime.guests": "actors"})),
    }
    ref = comparable(runs["inline"])
    assert ref[0]["valid"], ref[0]["checks"]
    if extra:
        (m,) = ref[0]["migrations"]
        assert m["outcome"].startswith("lost: ") and m["remote_pages_read"] > 0
        if ending == "source fails":  # lost with host-1; HA restarted it on host-2
            assert m["remote_pages_lost"] > 0
        if ending == "source store fails":  # the guest crashed on host-2 and rebooted there
            assert m["remote_pages_lost"] > 0 and ref[0]["guests"]["a-1"]["host"] == "host-2"
    else:
        assert any(e["kind"] == "migrated" for e in ref[3])
    for name in ("packed", "actors"):
        assert_same_run(runs[name], ref, name)


def _actors_migration(duration: str = "6s"):
    from test_migration import mech

    return apply_overrides(
        mech("none", duration=duration),
        {"runtime.kind": "ray", "runtime.pin": "resource", "runtime.guests": "actors"},
    )


def test_migration_streams_page_records_between_actors(cluster):
    """With actors the rounds cross as page records (digest here): exactly one record per page
    each round sent, checked by the receiving actor."""
    from overcommit.stores.codec import record_len

    seen: dict = {}
    r = run_scenario(_actors_migration(), on_window=lambda e, rt, f: seen.setdefault("rt", rt))
    s = r.summary
    assert s["valid"], s["checks"]
    (m,) = s["migrations"]
    assert m["outcome"] == "completed"
    pages = sum(e["pages"] for e in r.events if e["kind"] == "migration_round")
    assert pages >= m["pages_sent"] > 0
    assert seen["rt"].streamed == pages * record_len("a-1", "digest", 4096)
    assert s["run"]["migration_bytes_crossed"] > seen["rt"].streamed  # and the state itself


def test_take_over_catches_a_page_version_the_stream_did_not_carry(cluster, monkeypatch):
    """One resident page's version is corrupted in the state handed to the destination's
    actor: its check against what streamed stops the run."""
    import numpy as np

    from overcommit.cluster.ray_runtime import RayRuntime
    from overcommit.cluster.runners import GuestRunner

    hit: list[int] = []
    real_get = RayRuntime._get

    def corrupting(self, refs):
        out = real_get(self, refs)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], GuestRunner):
            g = out[1].model
            p = int(np.flatnonzero((g.loc == 1) & ~g.migration.dirty)[0])
            g.version = g.version.copy()
            g.version[p] += 1
            hit.append(p)
        return out

    monkeypatch.setattr(RayRuntime, "_get", corrupting)
    with pytest.raises(Exception, match="did not stream") as err:
        run_scenario(_actors_migration())
    assert hit and f"pages [{hit[0]}]" in str(err.value)
