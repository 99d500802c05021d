"""The `overcommit` command as a user runs it: exit codes, located errors, run directories,
and no redis-server left behind (normal exit, SIGINT, SIGTERM)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from overcommit.metrics import GUEST_COLUMNS, HOST_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "overcommit"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The README's first command (with an explicit run directory)."""
    out = tmp_path_factory.mktemp("run") / "quickstart"
    return cli("run", "configs/quickstart.yaml", "--out", str(out)), out


def test_quickstart_runs_valid_and_writes_run_directory(quickstart):
    proc, out = quickstart
    assert proc.returncode == 0, proc.stderr
    assert "verdict: valid" in proc.stdout and "hypothesis: met" in proc.stdout
    assert "Traceback" not in proc.stderr
    for name in (
        "summary.json",
        "guests.parquet",
        "guests.csv",
        "hosts.parquet",
        "hosts.csv",
        "events.jsonl",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*"))  # no temporary files left
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "overcommit.summary/1"
    assert summary["valid"] is True and summary["mechanism"] == "frontswap"
    for key in (
        "progress",
        "stall_seconds",
        "downtime_seconds",
        "disk_reads",
        "disk_writes",
        "disk_read_ops",
        "disk_write_ops",
        "frontswap_puts",
        "frontswap_put_failures",
        "frontswap_gets",
        "frontswap_flushes",
        "lost_pages",
        "stale_reads",
        "guest_oom_kills",
    ):
        assert key in summary["totals"], key
    assert summary["totals"]["frontswap_puts"] > 0
    for g in summary["guests"].values():
        assert set(g["fault_latency"]) == {"p50", "p99", "p99.9"}
        assert set(g["stall_by_source"]) >= {"frontswap_get", "swap_read"}
    guests = pd.read_parquet(out / "guests.parquet")
    assert list(guests.columns) == ["epoch", "t", "guest", "host", *GUEST_COLUMNS]
    assert len(guests) == 600 * 3
    pd.testing.assert_frame_equal(guests, pd.read_csv(out / "guests.csv"), check_dtype=False)
    hosts = pd.read_parquet(out / "hosts.parquet")
    assert list(hosts.columns) == ["epoch", "t", "host", *HOST_COLUMNS]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events == summary["events"]
    assert [e["kind"] for e in events].count("boot") == 3


BAD = {
    "unknown key": (None, None, "colour"),
    "negative size": (None, None, "hosts.ram"),
    "malformed duration": (None, None, "duration"),
    "guest larger than every host": (None, None, "guests[0].memory"),
    "maxmem below memory": (None, None, "guests[0].maxmem"),
    "yaml syntax error": ("name: x\nhosts: {ram: 1GiB\n", None, "(yaml)"),
}

GOOD = """name: ok
duration: 1s
hosts: {ram: 1GiB}
guests:
  - {name: g, memory: 256MiB, workload: {kind: zipf, working_set: 128MiB, access_rate: 1k/s}}
"""


def _bad_text(case: str) -> str:
    text, _, _ = BAD[case]
    if text is not None:
        return text
    return {
        "unknown key": GOOD + "colour: red\n",
        "negative size": GOOD.replace("ram: 1GiB", "ram: -1GiB"),
        "malformed duration": GOOD.replace("duration: 1s", "duration: 1 fortnight"),
        "guest larger than every host": GOOD.replace("memory: 256MiB", "memory: 2GiB"),
        "maxmem below memory": GOOD.replace("memory: 256MiB", "memory: 256MiB, maxmem: 128MiB"),
    }[case]


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_config_is_one_located_line_and_exit_2(tmp_path, case, command):
    f = tmp_path / "bad.yaml"
    f.write_text(_bad_text(case))
    proc = cli(command, str(f), timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    field = BAD[case][2]
    assert lines[0].startswith(f"{f}:"), lines[0]
    assert field in lines[0]
    line_no = lines[0].split(":")[1]
    assert line_no.isdigit() and 1 <= int(line_no) <= len(_bad_text(case).splitlines()) + 1


def test_good_config_validates():
    proc = cli("validate", "configs/frontswap-vs-none.yaml", timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--mechanism", "teleport"], "mechanism"),
        (["--duration", "soon"], "duration"),
        (["--seed", "-1"], "seed"),
        (["--seed", "abc"], "seed"),
        (["--hosts-per-actor", "2"], "runtime.hosts_per_actor: 2 hosts per actor needs guests"),
        (["--guests", "packed", "--hosts-per-actor", "0"], "runtime.hosts_per_actor"),
        (["--guests", "packed", "--hosts-per-actor", "many"], "'auto', got 'many'"),
    ],
)
def test_bad_flags_exit_2_without_traceback(flags, needle):
    proc = cli("run", "configs/quickstart.yaml", *flags, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_missing_file_exit_2():
    proc = cli("run", "configs/does-not-exist.yaml", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_preflight_refuses_stores_that_do_not_fit(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(
        GOOD.replace("duration: 1s", "duration: 1s\npayload: full\nlimits: {store_memory: 64MiB}")
        .replace("memory: 256MiB,", "memory: 256MiB, swap: 512MiB,")
        .replace("working_set: 128MiB", "working_set: 512MiB")
    )
    proc = cli("run", str(f), timeout=60)
    assert proc.returncode == 2
    assert "stores may need" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_prints_the_expected_peak_memory_and_refuses_what_cannot_fit(tmp_path):
    proc = cli("validate", "configs/bench-1k.yaml", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1024 guest(s)" in proc.stdout and "expected peak memory" in proc.stdout
    assert "1024 guests, 24 B of arrays per page" in proc.stdout.replace("\n", " ")  # BENCHMARKS.md
    # 100,000 guests of 1 GiB each: their page arrays alone are ~2 TB
    f = tmp_path / "huge.yaml"
    f.write_text(
        GOOD.replace("hosts: {ram: 1GiB}", "hosts: {count: 100, ram: 1TiB}")
        .replace("{name: g, memory: 256MiB,", "{name: g, count: 100000, memory: 1GiB,")
        .replace("working_set: 128MiB", "working_set: 1GiB")
    )
    proc = cli("validate", str(f), timeout=120)
    assert proc.returncode == 2, proc.stdout
    assert "may need" in proc.stderr and "at its peak" in proc.stderr
    assert "Traceback" not in proc.stderr


def _redis_children(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "redis-server" in " ".join(_cmd(k))]


def _cmd(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline() or [p.name()]
    except psutil.Error:
        return []


def _wait_gone(procs: list[psutil.Process], timeout: float = 10) -> list[int]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_leaves_no_redis_server(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        # inline: this test is about the Redis servers; test_ray covers Ray's processes
        [
            *CLI,
            "run",
            "configs/quickstart.yaml",
            "--duration",
            "3600s",
            "--runtime",
            "inline",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        servers: list[psutil.Process] = []
        while time.time() < deadline and len(servers) < 2:
            servers = _redis_children(proc.pid)
            time.sleep(0.2)
        assert len(servers) == 2, "one host server and the shared server should be running"
        time.sleep(1.0)  # let it get into the epoch loop
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert _wait_gone(servers) == []
    summary = json.loads((out / "summary.json").read_text())  # what it computed is kept
    assert summary["status"] == "aborted"
    assert summary["reason"] == f"interrupted by {signal.Signals(sig).name}"


def test_normal_run_leaves_no_redis_server(tmp_path):
    proc = subprocess.Popen(
        [
            *CLI,
            "run",
            "configs/quickstart.yaml",
            "--duration",
            "5s",
            "-q",
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: list[psutil.Process] = []
    deadline = time.time() + 60
    while time.time() < deadline and len(servers) < 2 and proc.poll() is None:
        servers = _redis_children(proc.pid)
        time.sleep(0.05)
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert len(servers) == 2
    assert _wait_gone(servers) == []


@pytest.mark.parametrize("command", ["run", "compare", "drill", "sweep", "validate", "report"])
def test_help_reads_like_ordinary_flags(command):
    """Flags are `-q, --quiet`, never with a `<bool>` type; the usage names the argument in
    capitals (`CONFIG`, `DIR`), not `{config}`; options with values show a metavar."""
    proc = cli(command, "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    usage = text.splitlines()[0]
    arg = "DIR" if command == "report" else "CONFIG"
    assert usage.endswith(f"{command} [OPTIONS] {arg}"), usage
    for bad in ("<bool>", "<path>", "<str>", "<int", "<list", "{config}", "{CONFIG}", "╭"):
        assert bad not in text, (bad, text)
    if command not in ("validate", "report"):
        assert re.search(r"^\s+-q, --quiet\s+No progress bar", text, re.M), text
        assert re.search(r"^\s+--no-report\s+Do not write", text, re.M), text
        assert re.search(r"^\s+--duration D\s", text, re.M), text
    if command == "run":
        assert re.search(r"^\s+-v, --verbose\s", text, re.M), text
        assert re.search(r"^\s+--seed N\s", text, re.M), text


def test_run_table_splits_puts_into_ok_and_rejected():
    """The run table has separate, labelled columns for stored and refused puts (not a
    `puts/fail` pair read as 'more failures than puts'), filled from a real run's summary."""
    from rich.console import Console

    from overcommit.cli import summary_table
    from overcommit.cluster.engine import run_scenario
    from overcommit.config import load_scenario_text

    text = """
name: table
duration: 3s
mechanism: frontswap
runtime: {kind: inline}
hosts: {ram: 144MiB, reserve: 8MiB}
guests:
  - {name: g, count: 2, memory: 64MiB, maxmem: 96MiB,
     workload: {kind: zipf, working_set: 96MiB, access_rate: 50k/s, write_fraction: 0.3}}
"""
    summary = run_scenario(load_scenario_text(text, "table.yaml")).summary
    t = summary["totals"]
    assert t["frontswap_puts"] > 0 and t["frontswap_put_failures"] > 0, t
    table = summary_table(summary)
    headers = [str(c.header) for c in table.columns]
    assert headers == [
        "guest",
        "host",
        "progress",
        "stall",
        "p99 fault",
        "disk pages read",
        "disk pages written",
        "puts ok",
        "puts rejected",
        "OOM kills",
    ]
    assert not any("/" in h for h in headers)
    col = {h: list(c.cells) for h, c in zip(headers, table.columns)}
    assert col["guest"] == ["g-1", "g-2", "total"]
    assert col["puts ok"][-1] == str(t["frontswap_puts"])
    assert col["puts rejected"][-1] == str(t["frontswap_put_failures"])
    console = Console(width=200, record=True)
    console.print(table)
    assert "puts rejected" in console.export_text()
