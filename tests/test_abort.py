"""Runs that stop early keep what they computed, and no run leaves anything behind.

Every run here is an `overcommit run` subprocess with a temporary directory (TMPDIR) of its
own: a store killed or stopped mid-run, a SIGINT, a normal run on every placement. Afterwards
the run directory is complete (status `aborted` with its reason, series up to `last_epoch`),
no redis-server survives and the temporary directory holds nothing of the run's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "overcommit"]

SCENARIO = """
name: abort
seed: 5
duration: {duration}
epoch: 100ms
sync_window: 500ms
runtime: {{kind: {kind}, guests: {guests}}}
mechanism: frontswap
hosts: {{count: 3, ram: 320MiB, reserve: 32MiB}}
shared_storage: {{device: ssd}}
placement: balanced
guests:
  - name: g
    count: {count}
    memory: 16MiB
    maxmem: 24MiB
    swap: 24MiB
    workload: {{kind: zipf, working_set: 24MiB, access_rate: 20k/s, write_fraction: 0.3,
               skew: 0.5}}
"""


_OWN: list[Path] = []  # the runs' own temporary directories, removed after each test


@pytest.fixture(autouse=True)
def _remove_own_tmp():
    yield
    while _OWN:
        shutil.rmtree(_OWN.pop(), ignore_errors=True)


def _start(
    tmp: Path,
    duration: str,
    kind: str = "inline",
    guests: str = "packed",
    count: int = 6,
    extra: tuple[str, ...] = (),
) -> tuple[subprocess.Popen, Path, Path]:
    cfg = tmp / "abort.yaml"
    cfg.write_text(SCENARIO.format(duration=duration, kind=kind, guests=guests, count=count))
    own = Path(tempfile.mkdtemp(prefix="oc-t-", dir="/tmp"))  # short: unix socket paths
    _OWN.append(own)
    env = {**os.environ, "TMPDIR": str(own)}
    out = tmp / "run"
    cmd = [*CLI, "run", str(cfg), "--out", str(out), "--no-report", "-q", *extra]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, out, own


def _servers(pid: int, host: str | None = None) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for k in kids:
        try:
            if k.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(k.cmdline())
        except psutil.Error:
            continue
        if "redis-server" in cmd and (host is None or f"/{host}" in cmd):
            found.append(k)
    return found


def _client(server: psutil.Process) -> redis.Redis:
    """A client of a run's redis-server: its address from its arguments (`--unixsocket PATH`)
    or, once the server has rewritten it, its process title (`unixsocket:PATH` or
    `HOST:PORT`); its password from the config file in its directory."""
    password = (Path(server.cwd()) / "redis.conf").read_text().split()[1]
    cmd = server.cmdline()
    if "--unixsocket" in cmd:
        return redis.Redis(unix_socket_path=cmd[cmd.index("--unixsocket") + 1], password=password)
    where = cmd[0].split()[-1]
    if where.startswith("unixsocket:"):
        return redis.Redis(unix_socket_path=where.split(":", 1)[1], password=password)
    host, _, port = where.rpartition(":")
    return redis.Redis(host=host if host not in ("*", "") else "127.0.0.1", port=int(port),
                       password=password)  # fmt: skip


def _written(server: psutil.Process) -> bool:
    """Whether the run has written to this server (False while it starts)."""
    try:
        client = _client(server)
    except (psutil.Error, OSError, ValueError, IndexError):  # starting, or gone
        return False
    try:
        return client.dbsize() > 0
    except redis.RedisError:  # not listening yet
        return False
    finally:
        client.close()


def _wait_for_epochs(pid: int, host: str = "host-1", timeout: float = 180) -> psutil.Process:
    """The run's redis-server of `host`, once the run's epochs have written to it and a little
    longer: the first epochs of a fresh checkout also compile the paging kernels, so a fixed
    sleep from the server's start could fall before any epoch completed."""
    end = time.time() + timeout
    while time.time() < end:
        for server in _servers(pid, host):
            if _written(server):
                time.sleep(3.0)
                return server
        time.sleep(0.2)
    raise AssertionError(f"the run wrote nothing to {host}'s store")


def _leftovers(own: Path) -> list[str]:
    """What the run left in its temporary directory (Ray's own session directory aside)."""
    return sorted(p.name for p in own.iterdir() if p.name != "ray")


def _check_aborted(out: Path, reason: str) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "aborted"
    assert reason in summary["reason"]
    last = summary["last_epoch"]
    assert last is not None and last >= 0
    assert summary["emulated_seconds"] == pytest.approx((last + 1) * 0.1)
    for stem in ("guests", "hosts"):
        csv, parquet = pd.read_csv(out / f"{stem}.csv"), pd.read_parquet(out / f"{stem}.parquet")
        assert len(csv) == len(parquet) > 0
        assert csv["epoch"].max() == last
        assert csv["t"].max() == pytest.approx(last * 0.1)
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("boot") == len(summary["guests"])
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial files
    return summary


def _finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("kind, guests", [("inline", "packed"), ("ray", "actors")])
def test_store_killed_mid_run_keeps_the_run(tmp_path, kind, guests):
    proc, out, own = _start(tmp_path, "3600s", kind, guests)
    try:
        server = _wait_for_epochs(proc.pid)
        servers = _servers(proc.pid)
        server.kill()
        stdout, stderr = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr
    assert "infrastructure failure, run stopped" in stderr and "Traceback" not in stderr
    assert "run directory (aborted)" in stdout
    summary = _check_aborted(out, "lost contact with")
    assert "host-1" in summary["reason"]
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert alive == []
    assert _leftovers(own) == []


def test_sigint_mid_run_writes_an_aborted_run(tmp_path):
    proc, out, own = _start(tmp_path, "3600s")
    try:
        _wait_for_epochs(proc.pid)
        servers = _servers(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    _check_aborted(out, "interrupted by SIGINT")
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert alive == []
    assert _leftovers(own) == []


def test_stopped_store_fails_within_its_bound(tmp_path):
    bound = 3.0
    proc, out, own = _start(tmp_path, "3600s", extra=("--set", f"redis.timeout={bound:g}s"))
    server = None
    try:
        server = _wait_for_epochs(proc.pid)
        server.suspend()  # SIGSTOP: the server hangs, its socket stays open
        t0 = time.time()
        _, stderr = _finish(proc, timeout=bound + 60)
        took = time.time() - t0
    finally:
        if server is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                server.resume()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr
    assert took < bound + 20
    assert "waiting for the Redis store of host host-1" in stderr
    summary = _check_aborted(out, "no reply within 3 s")
    assert "host-1" in summary["reason"]
    assert _leftovers(own) == []


@pytest.mark.parametrize(
    "kind, guests",
    [
        ("inline", "packed"),
        ("ray", "packed"),
        ("ray", "actors"),
    ],
)
def test_normal_run_is_complete_quiet_and_leaves_nothing(tmp_path, kind, guests):
    proc, out, own = _start(tmp_path, "2s", kind, guests, count=12)
    stdout, stderr = _finish(proc)
    assert proc.returncode == 0, stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    console = stdout + stderr
    for noise in ("raylet", "WARNING", "worker processes", "Token authentication"):
        assert noise not in console, console
    assert _leftovers(own) == []


def _small(tmp: Path, mechanism: str = "frontswap"):
    from overcommit.config import load_scenario_text

    text = SCENARIO.format(duration="4s", kind="inline", guests="packed", count=6)
    return load_scenario_text(text.replace("frontswap", mechanism), str(tmp / "abort.yaml"))


def _kill_host_1_at(epoch: int):
    def hook(e: int, runtime, fleet) -> None:
        if e >= epoch:
            fleet.host("host-1").kill()

    return hook


def test_compare_stopped_by_a_lost_store_keeps_the_finished_runs(tmp_path):
    from overcommit.cluster.engine import run_scenario
    from overcommit.cluster.runtime import InfrastructureError
    from overcommit.compare import run_compare

    runs = [("none", _small(tmp_path, "none")), ("frontswap", _small(tmp_path))]

    def run(sc, out_dir):  # the second run loses host-1's store mid-run
        hook = _kill_host_1_at(10) if sc.mechanism == "frontswap" else None
        return run_scenario(sc, out_dir=out_dir, on_window=hook)

    with pytest.raises(InfrastructureError):
        run_compare(runs, tmp_path / "cmp", run=run)
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["status"] == "aborted" and "host-1" in report["reason"]
    assert list(report["mechanisms"]) == ["none"]  # the finished run only
    assert report["stopped_run"] == str(tmp_path / "cmp" / "frontswap-s5")
    stopped = json.loads((tmp_path / "cmp" / "frontswap-s5" / "summary.json").read_text())
    assert stopped["status"] == "aborted" and stopped["last_epoch"] >= 9
    finished = json.loads((tmp_path / "cmp" / "none-s5" / "summary.json").read_text())
    assert finished["status"] == "complete" and "reason" not in finished


def test_report_marks_an_aborted_run(tmp_path):
    from overcommit.cluster.engine import run_scenario
    from overcommit.cluster.runtime import InfrastructureError
    from overcommit.report import write_report

    out = tmp_path / "run"
    with pytest.raises(InfrastructureError) as stopped:
        run_scenario(_small(tmp_path), out_dir=out, on_window=_kill_host_1_at(10))
    assert stopped.value.partial.out_dir == out
    page = write_report(out).read_text()
    assert "RUN ABORTED" in page and "lost contact with" in page
    complete = tmp_path / "complete"
    run_scenario(_small(tmp_path), out_dir=complete)
    assert "RUN ABORTED" not in write_report(complete).read_text()
