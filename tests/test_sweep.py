"""`overcommit sweep`: grids of real runs on a real local Ray (one per module), resumable
results, and goal answers on scenarios whose thresholds are derived by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from overcommit.capacity import (
    RESULTS,
    SweepError,
    SweepInterrupted,
    evaluate_goal,
    load_results,
    parse_grid,
    plan_sweep,
    ratio,
    run_sweep,
)
from overcommit.config import ConfigError, load_scenario_text

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "overcommit"]

# One host with 288 MiB of RAM and a 32 MiB reserve: 256 MiB for guests that reserve 64 MiB
# each, so 4 guests fit and a 5th cannot be placed. The working set (32 MiB) fits in a guest's
# RAM, so a placed guest barely stalls.
TINY = """
name: tiny
seed: 0
duration: 5s
epoch: 100ms
sync_window: 500ms
runtime: {{kind: inline}}
mechanism: frontswap
hosts: {{count: {hosts}, ram: 288MiB, reserve: 32MiB}}
guests:
  - name: g
    count: {count}
    memory: 64MiB
    maxmem: {maxmem}
    workload: {{kind: zipf, working_set: {ws}, access_rate: 20k/s, write_fraction: 0.3}}
"""


def tiny(hosts: int = 1, count: int = 1, maxmem: str = "64MiB", ws: str = "32MiB"):
    return load_scenario_text(
        TINY.format(hosts=hosts, count=count, maxmem=maxmem, ws=ws), "tiny.yaml"
    )


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def test_grid_syntax():
    assert parse_grid("hosts.count=1,2,4") == ("hosts.count", [1, 2, 4])
    assert parse_grid("overcommit=1:2:0.25") == ("overcommit", [1.0, 1.25, 1.5, 1.75, 2.0])
    assert parse_grid("guests.0.count=2:6:2,9") == ("guests.0.count", [2, 4, 6, 9])
    assert parse_grid("guests.0.maxmem=64MiB:128MiB:32MiB")[1] == [2**26, 3 * 2**25, 2**27]
    assert parse_grid("guests.0.maxmem=96MiB,128MiB")[1] == ["96MiB", "128MiB"]
    for bad, why in (
        ("hosts.count", "PATH="),
        ("=1,2", "empty path"),
        ("hosts.count=1,,2", "empty value"),
        ("hosts.count=3:1:1", "ends below"),
        ("hosts.count=1:3:0", "positive"),
        ("hosts.count=1:3", "A:B:STEP"),
        ("overcommit=0,1", "positive numbers"),
        ("hosts.count=1,1.0", "twice"),
    ):
        with pytest.raises(SweepError, match=why):
            parse_grid(bad)


def test_overcommit_knob_scales_guest_counts():
    base = tiny(count=1)  # 64 MiB of maxmem on 288 MiB: ratio 0.2222
    assert ratio(base) == pytest.approx(64 / 288)
    plan = plan_sweep(base, {"overcommit": [0.5, 0.9, 1.2]})
    # counts: 0.5 / 0.2222 = 2.25 -> 2; 0.9 -> 4.05 -> 4; 1.2 -> 5.4 -> 5
    assert [r.scenario.guests[0].count for r in plan.runs] == [2, 4, 5]
    with pytest.raises(ConfigError, match="hosts.count"):
        plan_sweep(base, {"hosts.count": ["many"]})


def test_2x2x2_sweep_stores_8_real_rows_and_resumes_only_the_missing(tmp_path):
    plan = plan_sweep(tiny(), {"guests.0.count": [1, 2]}, ["none", "frontswap"], seeds=2)
    assert len(plan.runs) == 8
    with pytest.raises(SweepInterrupted) as stopped:
        run_sweep(plan, tmp_path, parallel=2, stop_after=3)
    assert stopped.value.outcome.executed == 3
    stored = pd.read_parquet(tmp_path / RESULTS)
    assert len(stored) == 3 and stored["key"].is_unique
    partial = json.loads((tmp_path / "sweep.json").read_text())  # lists what finished
    assert partial["status"] == "aborted" and partial["reason"] == "stopped after 3 executed run(s)"
    assert sorted(partial["finished"]) == sorted(stored["dir"]) and len(partial["finished"]) == 3

    outcome = run_sweep(plan, tmp_path, parallel=2)
    assert (outcome.executed, outcome.skipped) == (5, 3)
    rows = pd.read_parquet(tmp_path / RESULTS)
    assert len(rows) == 8 and set(rows["key"]) == {r.key for r in plan.runs}
    assert set(stored["key"]) < set(rows["key"])
    for r in rows.to_dict("records"):  # every row is a real run with its directory
        summary = json.loads((tmp_path / r["dir"] / "summary.json").read_text())
        assert summary["mechanism"] == r["mechanism"] and summary["seed"] == r["seed"]
        assert len(summary["guests"]) == r["guests.0.count"] == r["guests"]
        assert r["progress"] == summary["totals"]["progress"]
        assert r["touches"] == summary["totals"]["touches"] > 0
        assert r["status"] == "done" and r["valid"] and r["exit_code"] == 0
        assert "disk_pages" in r and "fault_latency_p99" in r
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert report["status"] == "complete" and "finished" not in report
    assert report["runs"]["executed"] == 5 and report["runs"]["skipped"] == 3
    assert report["runs"]["planned"] == 8

    again = run_sweep(plan, tmp_path, parallel=2)
    assert (again.executed, again.skipped) == (0, 8)

    # another base config in the same directory is refused, not mixed in
    other = plan_sweep(tiny(ws="16MiB"), {"guests.0.count": [1, 2]}, ["none"])
    with pytest.raises(SweepError, match="another base config"):
        run_sweep(other, tmp_path)


def _sweep_worker_processes() -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::_SweepWorker"):
            found.append(proc)
    return found


def test_a_killed_sweep_worker_fails_its_run_and_a_new_one_runs_the_rest(tmp_path):
    """The process of a sweep's actor is killed (SIGKILL, as the OOM killer would): the run it
    was given is reported failed and not stored, a new actor runs the rest, and the same sweep
    run again executes only the failed run."""
    plan = plan_sweep(tiny(), {"guests.0.count": [1, 2]}, ["none", "frontswap"])
    killed: list[int] = []

    def kill_the_worker(row: dict, done: int, total: int) -> None:
        if not killed:
            procs = _sweep_worker_processes()
            assert procs, "no sweep worker process found"
            for proc in procs:
                proc.kill()
                killed.append(proc.pid)

    outcome = run_sweep(plan, tmp_path, parallel=1, on_row=kill_the_worker)
    assert killed
    assert outcome.executed == 4 and len(outcome.failed) == 1, outcome.failed
    assert "Actor" in outcome.failed[0] and outcome.exit_code == 2
    stored = load_results(tmp_path)
    assert len(stored) == 3 and (stored["status"] == "done").all()
    again = run_sweep(plan, tmp_path, parallel=1)
    assert (again.executed, again.skipped, again.failed) == (1, 3, [])
    assert len(load_results(tmp_path)) == 4


def test_goal_largest_overcommit_is_the_last_that_places(tmp_path):
    # By hand: 4 guests of 64 MiB fit in 256 MiB; overcommit 0.9 -> 4 guests (ratio
    # 4*64/288 = 0.889), 1.2 -> 5 guests, which cannot be placed.
    plan = plan_sweep(tiny(), {"overcommit": [0.5, 0.9, 1.2]}, ["none"], 2, "progress >= 0.5")
    outcome = run_sweep(plan, tmp_path, parallel=2)
    (answer,) = outcome.report["answers"]["none"]
    assert answer["best"] == 0.9
    assert answer["binding"].startswith("cannot run at overcommit 1.2 (seed 0)")
    assert "fits on no host" in answer["binding"]
    rows = outcome.rows.set_index(["overcommit", "seed"])
    assert rows.loc[(0.9, 0), "overcommit_actual"] == pytest.approx(4 * 64 / 288, abs=1e-6)
    assert rows.loc[(1.2, 0), "status"] == "preflight"


def test_goal_fewest_hosts(tmp_path):
    # By hand: 6 guests of 64 MiB need ceil(384 / 256) = 2 hosts of 256 MiB usable each.
    plan = plan_sweep(
        tiny(count=6), {"hosts.count": [1, 2, 3]}, ["frontswap"], 1, "guest_oom_kills == 0"
    )
    assert plan.direction == "min"
    outcome = run_sweep(plan, tmp_path, parallel=2)
    (answer,) = outcome.report["answers"]["frontswap"]
    assert answer["best"] == 2 and answer["passing"] == [3, 2]
    assert answer["binding"].startswith("cannot run at hosts.count 1 (seed 0)")


def test_goal_binding_condition_message_and_unknown_names(tmp_path):
    # the goal logic on stored rows: a condition failing at the next step names its value
    plan = plan_sweep(tiny(), {"overcommit": [1.0, 1.6]}, ["none"], 3, "progress >= 0.8")
    rows = pd.DataFrame(
        [
            {"mechanism": "none", "overcommit": oc, "seed": s, "status": "done", "valid": True,
             "progress": 0.74 if (oc, s) == (1.6, 2) else 0.9}
            for oc in (1.0, 1.6) for s in plan.seeds
        ]
    )  # fmt: skip
    (answer,) = evaluate_goal(plan, rows)["none"]
    assert answer["best"] == 1.0
    assert answer["binding"] == "progress 0.74 < 0.8 at overcommit 1.6 (seed 2)"

    bad = plan_sweep(tiny(), {"guests.0.count": [1, 2]}, ["none"], 1, "no_such_figure >= 1")
    with pytest.raises(SweepError, match=r"unknown figure 'no_such_figure'.*known: .*progress"):
        run_sweep(bad, tmp_path, parallel=1)
    assert len(pd.read_parquet(tmp_path / RESULTS)) >= 1  # what finished is kept
    with pytest.raises(SweepError, match="--goal"):
        plan_sweep(tiny(), {"hosts.count": [1]}, None, 1, "progress >>= 1")


def write_tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(hosts=1, count=1, maxmem="96MiB", ws="64MiB"))
    return path


def test_cli_sweep_interrupted_then_resumed(tmp_path):
    config = write_tiny(tmp_path)
    out = tmp_path / "sw"
    args = [
        *CLI, "sweep", str(config), "--grid", "guests.0.count=1:3:1", "--mechanisms",
        "none,frontswap", "--parallel", "2", "--goal", "progress >= 0.5", "--out", str(out),
    ]  # fmt: skip
    import os

    env = {**os.environ, "OVERCOMMIT_SWEEP_STOP_AFTER": "2"}
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 130, first.stderr
    assert "Traceback" not in first.stderr
    assert "2 executed" in first.stderr + first.stdout
    assert len(pd.read_parquet(out / RESULTS)) == 2

    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "6 planned, 4 executed, 2 skipped, 0 failed" in second.stdout
    assert "largest guests.0.count meeting the goal" in second.stdout
    report = json.loads((out / "sweep.json").read_text())
    assert report["runs"]["executed"] == 4 and report["runs"]["skipped"] == 2
    assert set(report["answers"]) == {"none", "frontswap"}
    assert (out / "report.html").is_file()
    assert len(pd.read_parquet(out / RESULTS)) == 6


def test_cli_sweep_bad_input_is_one_line_exit_2(tmp_path):
    config = write_tiny(tmp_path)
    for extra, message in (
        ([], "at least one --grid"),
        (["--grid", "hosts.count=1", "--grid", "hosts.count=2"], "given twice"),
        (["--grid", "hosts.count=1", "--goal", "progress >>= 1"], "--goal"),
        (["--grid", "nosuch.path=1"], "nosuch"),
        (["--grid", "hosts.count=1", "--mechanisms", "bogus"], "unknown mechanism 'bogus'"),
    ):
        proc = subprocess.run(
            [*CLI, "sweep", str(config), *extra, "--out", str(tmp_path / "x")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, (extra, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cli_sweep_killed_by_a_signal_midway_resumes_only_the_missing(tmp_path):
    """Ctrl-C from outside while runs are in flight: the rows already stored stay, whole; the
    same command then runs only what is missing."""
    import os
    import signal
    import time

    config = tmp_path / "slow.yaml"
    config.write_text(
        TINY.format(hosts=1, count=2, maxmem="96MiB", ws="64MiB").replace("5s", "20s")
    )
    out = tmp_path / "sw"
    args = [
        *CLI, "sweep", str(config), "--grid", "guests.0.count=1:4:1", "--mechanisms",
        "none,frontswap", "--parallel", "2", "--out", str(out), "--no-report", "-q",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if (out / RESULTS).exists():
            stored = len(load_results(out))  # read whole: the sweep is replacing it
            if stored >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None and stored >= 2, "the sweep finished before it could be stopped"
    proc.send_signal(signal.SIGINT)
    _, err_text = proc.communicate(timeout=120)
    assert proc.returncode == 130, err_text
    kept = pd.read_parquet(out / RESULTS)
    assert 2 <= len(kept) < 8 and kept["key"].is_unique
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"8 planned, {8 - len(kept)} executed, {len(kept)} skipped" in again.stdout
    rows = pd.read_parquet(out / RESULTS)
    assert len(rows) == 8 and set(kept["key"]) < set(rows["key"])
