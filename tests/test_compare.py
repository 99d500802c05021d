"""`overcommit compare`: every mechanism on the same accesses, one table, compare.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from overcommit.compare import (
    DEFAULT_MECHANISMS,
    exit_code,
    mean_ci,
    parse_mechanisms,
    plan_runs,
    run_compare,
    t95,
)
from overcommit.config import ConfigError, load_scenario_text

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "overcommit"]


def test_shipped_peaks_and_valleys_compare_shows_every_mechanism(tmp_path):
    out = tmp_path / "pv"
    proc = subprocess.run(
        [*CLI, "compare", "configs/peaks-and-valleys.yaml", "--duration", "1s", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads((out / "compare.json").read_text())
    assert report["schema"] == "overcommit.compare/1"
    assert list(report["mechanisms"]) == list(DEFAULT_MECHANISMS)
    for name, m in report["mechanisms"].items():
        assert name in proc.stdout  # a row per mechanism in the table
        assert m["verdict"] == "valid"
        run = m["runs"][0]
        assert (Path(run["dir"]) / "summary.json").is_file()
        summary = json.loads((Path(run["dir"]) / "summary.json").read_text())
        assert summary["mechanism"] == name
        assert m["mean"]["progress"] == summary["totals"]["progress"]
    for col in ("progress", "p99 fault", "double swaps", "puts rejected", "balloon lag", "verdict"):
        assert col in proc.stdout


def test_common_random_numbers_and_confidence_intervals(tmp_path):
    base = load_scenario_text(
        """
name: crn
seed: 4
duration: 1s
runtime: {kind: inline}
hosts: {ram: 256MiB, reserve: 16MiB, boot: lazy}
guests:
  - {name: g, memory: 48MiB, maxmem: 64MiB,
     workload: {kind: zipf, working_set: 40MiB, access_rate: 20k/s, skew: 0.5}}
""",
        "crn.yaml",
    )
    runs = plan_runs(base, ["none", "balloon", "zram"], seeds=3)
    assert [(m, sc.seed) for m, sc in runs][:3] == [("none", 4), ("none", 5), ("none", 6)]
    seen: list[int] = []
    report = run_compare(runs, tmp_path, on_run=lambda i, cr: seen.append(i))
    assert seen == list(range(9))
    assert report["seeds"] == [4, 5, 6] and exit_code(report) == 0
    none = report["mechanisms"]["none"]
    # no memory pressure: each seed makes the same touches under every mechanism
    for m in ("balloon", "zram"):
        for a, b in zip(none["runs"], report["mechanisms"][m]["runs"]):
            sa = json.loads((Path(a["dir"]) / "summary.json").read_text())["totals"]
            sb = json.loads((Path(b["dir"]) / "summary.json").read_text())["totals"]
            assert sa["touches"] == sb["touches"]
    values = [r["progress"] for r in none["runs"]]
    mean, half = mean_ci(values)
    assert none["mean"]["progress"] == pytest.approx(mean)
    assert none["ci95"]["progress"] == pytest.approx(half)
    assert (tmp_path / "compare.json").is_file()


def test_confidence_interval_arithmetic():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / 3**0.5)
    assert mean_ci([5.0]) == (5.0, None)
    assert t95(1) == 12.706 and t95(100) == 1.96


def test_mechanism_lists_and_bad_names():
    assert parse_mechanisms(None) == list(DEFAULT_MECHANISMS)
    assert parse_mechanisms(" none, balloon + host-swap ") == ["none", "balloon+host-swap"]
    base = load_scenario_text(
        "name: x\nduration: 1s\nhosts: {ram: 1GiB}\nguests:\n  - {name: g, memory: 64MiB, "
        "workload: {kind: zipf, working_set: 32MiB, access_rate: 1k/s}}\n"
    )
    with pytest.raises(ConfigError, match="unknown mechanism 'nope'"):
        plan_runs(base, ["none", "nope"], 1)
    with pytest.raises(ConfigError, match="cannot be combined"):
        plan_runs(base, ["zswap+zram"], 1)


def test_cli_bad_mechanism_is_exit_2(tmp_path):
    proc = subprocess.run(
        [*CLI, "compare", "configs/quickstart.yaml", "--mechanisms", "none,bogus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown mechanism 'bogus'" in proc.stderr
