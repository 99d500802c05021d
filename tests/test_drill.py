"""`overcommit drill`: the console command, drill.json, and real faults — a Ray node of a
multi-node cluster on this machine removed under a running scenario."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest
from test_failover import FAILOVER, failover

from overcommit.cluster.engine import run_scenario
from overcommit.config import apply_overrides
from overcommit.drill import RealFaults, replay_events, with_replay

CLI = [sys.executable, "-m", "overcommit"]


def test_drill_command_puts_mechanisms_side_by_side(tmp_path):
    cfg = tmp_path / "drill.yaml"
    cfg.write_text(
        FAILOVER.format(
            mechanism="frontswap", cooperative="false", duration="16s", deadline="8s", extra=""
        )
    )
    out = tmp_path / "out"
    p = subprocess.run(
        [
            *CLI,
            "drill",
            str(cfg),
            "--mechanisms",
            "frontswap,host-swap",
            "--out",
            str(out),
            "--no-report",
            "--set",
            "hypothesis=restart_failures == 0",
            "--junit",
            str(tmp_path / "junit.xml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1, p.stderr  # frontswap's hypothesis is not met
    report = json.loads((out / "drill.json").read_text())
    fs, hs = report["mechanisms"]["frontswap"], report["mechanisms"]["host-swap"]
    assert fs["mean"]["restart_failures"] == 2 and fs["mean"]["recovery_seconds"] is None
    assert hs["mean"]["restart_failures"] == 0 and hs["mean"]["recovery_seconds"] > 0
    assert "uncooperative" in fs["runs"][0]["restart_failure_reasons"][0]
    assert "restart failed: frontswap s11: g-1: host-2 still lacked" in p.stdout
    assert "never" in p.stdout  # frontswap's guests never came back
    assert (out / "frontswap-s11" / "summary.json").exists()
    # JUnit: a test case per mechanism and fault, failed where the hypothesis failed
    from xml.etree import ElementTree as ET

    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.get("tests") == "2" and root.get("failures") == "1"
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert set(cases) == {
        ("drill.failover.frontswap", "fail_host host-1 at 4s (seed 11)"),
        ("drill.failover.host-swap", "fail_host host-1 at 4s (seed 11)"),
    }
    failure = cases[("drill.failover.frontswap", "fail_host host-1 at 4s (seed 11)")].find(
        "failure"
    )
    assert failure.get("message") == "hypothesis not met: restart_failures == 0 (value 2)"
    assert (
        cases[("drill.failover.host-swap", "fail_host host-1 at 4s (seed 11)")].find("failure")
        is None
    )


def test_drill_set_option_errors_are_located(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(
        FAILOVER.format(
            mechanism="frontswap", cooperative="true", duration="8s", deadline="4s", extra=""
        )
    )
    p = subprocess.run(
        [*CLI, "drill", str(cfg), "--set", "guests.0.cooperative"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "expected PATH=VALUE" in p.stderr
    p = subprocess.run(
        [*CLI, "drill", str(cfg), "--set", "ha.restart_deadline=soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "ha.restart_deadline" in p.stderr and "Traceback" not in p.stderr


def _procs(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_real_node_kill_is_detected_survived_and_replayable():
    sc = apply_overrides(
        failover(duration="14s", deadline="8s"),
        {"runtime.kind": "ray", "runtime.guests": "packed", "runtime.pin": "resource"},
    )
    seen: dict = {}

    after: list[tuple[int, list[int]]] = []  # (window end, host-1's Redis if still running)

    def look(epoch, runtime, fleet):
        if not seen:
            seen["pids"] = [i["pid"] for i in runtime.infos.values()]
            seen["redis"] = [i["redis_pid"] for i in runtime.infos.values()]
            seen["redis-1"] = runtime.infos["host-1"]["redis_pid"]
            seen["nodes"] = dict(runtime.nodes())
        after.append((epoch, _procs([seen["redis-1"]])))

    rf = RealFaults(sc.host_names())
    try:
        killed_node = rf.nodes["host-1"].node_id
        r = run_scenario(sc, address=rf.address, real_faults=rf, on_window=look)
    finally:
        rf.shutdown()
    s = r.summary
    assert s["valid"], s["checks"]
    assert rf.killed == ["host-1"] and seen["nodes"]["host-1"] == killed_node
    fail = next(e for e in r.events if e["kind"] == "fail_host")
    assert fail["host"] == "host-1" and "detected" in fail
    assert fail["t"] == pytest.approx(4.0)  # detected at the window the node died in
    # the failed host's Redis is gone at the failure, not only when the run ends: in the
    # first window after it (checked right then, from the window hook) and every later one
    later = [alive for epoch, alive in after if epoch > fail["epoch"]]
    assert later and all(alive == [] for alive in later), after
    ep = s["failover"]["episodes"][0]
    assert ep["host"] == "host-1" and set(ep["guests"]) == {"g-1", "g-4"}
    assert s["totals"]["ha_restarts"] + s["totals"]["restart_failures"] == 2
    # nothing of the run is left: host actors and their Redis servers
    deadline = time.time() + 20
    while _procs(seen["pids"] + seen["redis"]) and time.time() < deadline:
        time.sleep(0.5)
    assert _procs(seen["pids"] + seen["redis"]) == []
    # the event log replays the run exactly, here in one process
    assert replay_events(r.events) == [{"at": 4.0, "fail_host": "host-1"}]
    again = run_scenario(apply_overrides(with_replay(sc, r.events), {"runtime.kind": "inline"}))
    a = {k: v for k, v in s.items() if k not in ("run", "events", "scenario")}
    b = {k: v for k, v in again.summary.items() if k not in ("run", "events", "scenario")}
    assert a == b
    strip = [{k: v for k, v in e.items() if k != "detected"} for e in r.events]
    assert strip == again.events


def test_cli_drill_with_real_faults_keeps_rays_noise_off_the_console(tmp_path):
    import os

    cfg = tmp_path / "real.yaml"
    cfg.write_text(
        FAILOVER.format(
            mechanism="frontswap", cooperative="true", duration="8s", deadline="4s", extra=""
        )
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    p = subprocess.run(
        [*CLI, "drill", str(cfg), "--mechanisms", "frontswap", "--real-faults", "--out",
         str(out), "--no-report"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert p.returncode in (0, 1), p.stderr
    assert "real faults" in p.stdout and "Raylet is terminated" not in p.stdout + p.stderr
    run = out / "frontswap-s11"
    assert "Raylet is terminated" in (run / "ray-messages.txt").read_text()
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    fail = next(e for e in events if e["kind"] == "fail_host")
    assert fail["host"] == "host-1" and "detected" in fail
    report = json.loads((out / "drill.json").read_text())
    assert report["real_faults"] is True
