"""Many store operations at once: one connection per Redis server, requests pipelined.

Store operations are generators that yield `Eval` / `Command` requests and receive the replies
(:mod:`overcommit.stores.tmem`); a *plan* tags each request with the server it goes to,
yielding `(target, request)`. Running plans one after another costs a full round trip per
request, and the caller's Python waits while the server works. `StoreMux.run` keeps every plan
in flight at once instead: a plan's next request goes to its server at once if the server is
idle, else it queues and goes with the others queued there in one write as soon as the server
has answered what it was sent (or when the caller has nothing else to do); each reply advances
its plan as soon as it is read, whichever server it comes from. The caller computes the next
request of one plan while the servers work on the others', and several servers work at once.

Every plan sees exactly the replies it would see alone, provided the plans in flight together
touch disjoint keys (one guest each, as in a sync window) or only commute (Lua scripts are
atomic). `targeted` tags a single-server operation's requests with its server.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Generator, Hashable
from typing import Any

import hiredis
import redis

from overcommit.stores.tmem import Command, Eval, Raw, lua_source

Plan = Generator[tuple[Hashable, "Eval | Command"], Any, Any]


class Posted:
    """A request (or a one-request store operation) whose reply its plan does not wait for:
    the plan goes on at once with None, and the reply, read later, is only checked for an
    error. Later requests of the plan to the same server still see its effect (a connection
    answers in order), and `StoreMux.run` returns only when every reply is in."""

    __slots__ = ("what",)

    def __init__(self, what: Any) -> None:
        self.what = what


class ServerLost(redis.ConnectionError):
    """A server of the mux stopped answering; `target` says which."""

    def __init__(self, target: Hashable, exc: BaseException) -> None:
        super().__init__(f"{exc}")
        self.target = target


WaitFn = Callable[[Hashable, float, float], None]


class StoreMux:
    """One dedicated connection per target server; `run` interleaves plans over them.

    With a `timeout`, a server that leaves a request unanswered that long (a hung or stopped
    process) is lost: `run` raises `ServerLost` naming it. Meanwhile `on_wait(target, waited,
    timeout)` is called about every third of the bound (at most every 10 s, at least every
    1 s) so the caller can say what it waits for.
    """

    def __init__(
        self,
        clients: dict[Hashable, redis.Redis],
        timeout: float | None = None,
        on_wait: WaitFn | None = None,
    ) -> None:
        self.timeout = timeout
        self.on_wait = on_wait
        self.clients: dict[Hashable, redis.Redis] = {}
        self.conns: dict[Hashable, Any] = {}
        self.shas: dict[Hashable, dict[str, str]] = {}
        for target, client in clients.items():
            self.bind(target, client)

    @classmethod
    def union(cls, muxes: list[StoreMux], own: list[Hashable]) -> StoreMux:
        """One mux over the servers of `muxes`, through their connections (none new): each
        mux's own target (`own`, in the same order: a host's server) through that mux's
        connection, any other target several reach (shared storage, a peer's server) through
        the first one's."""
        if len(muxes) == 1:
            return muxes[0]
        u = cls({}, muxes[0].timeout, muxes[0].on_wait)
        steps = [*zip(muxes, own), *((mux, t) for mux in muxes for t in mux.conns)]
        for m, target in steps:
            if target not in u.conns:
                u.clients[target], u.conns[target] = m.clients[target], m.conns[target]
                u.shas[target] = m.shas[target]
        return u

    def bind(self, target: Hashable, client: redis.Redis) -> None:
        """(Re)bind `target` to `client` (a restarted server): new connection, scripts reload."""
        self.drop(target)
        pool = client.connection_pool
        self.clients[target] = client
        self.conns[target] = pool.connection_class(**pool.connection_kwargs)
        self.shas[target] = {}

    def drop(self, target: Hashable) -> None:
        """Forget `target` (its server is gone)."""
        conn = self.conns.pop(target, None)
        if conn is not None:
            conn.disconnect()
        self.clients.pop(target, None)
        self.shas.pop(target, None)

    def close(self) -> None:
        for target in list(self.conns):
            self.drop(target)

    def _sha(self, target: Hashable, script: str) -> str:
        shas = self.shas[target]
        if script not in shas:
            shas[script] = self.clients[target].script_load(lua_source(script))
        return shas[script]

    def run(self, plans: list[Plan]) -> list[Any]:
        """Run `plans` to completion, all in flight at once; returns their results in order.

        A connection error raises `ServerLost` naming the server; any other error (a Redis
        error reply, an exception inside a plan) propagates. Either way every connection is
        reset first, so no unread reply is left behind for the next run.
        """
        results: list[Any] = [None] * len(plans)
        links: dict[Hashable, _Link] = {}
        target: Hashable = None

        def link_of(t: Hashable) -> _Link:
            if t not in links:
                conn = self.conns[t]
                if conn._sock is None:
                    _connect(conn)
                links[t] = _Link(t, conn, self.clients[t].response_callbacks)
            return links[t]

        def advance(i: int, reply: Any, first: bool = False) -> None:
            nonlocal target
            while True:
                try:
                    t, req = next(plans[i]) if first else plans[i].send(reply)
                except StopIteration as done:
                    results[i] = done.value
                    return
                first, reply, target = False, None, t
                posted = isinstance(req, Posted)
                if posted:
                    req = req.what
                replies = 1
                if isinstance(req, Eval):
                    sha = self._sha(t, req.script)
                    item: Any = ("EVALSHA", sha, len(req.keys), *req.keys, *req.args)
                    name = "EVALSHA"
                elif isinstance(req, Raw):
                    item, name, replies = req.data, req.name.upper(), req.replies
                else:
                    item, name = req.args, str(req.args[0]).upper()
                link = link_of(t)
                link.out.append(item)
                link.out_replies += replies
                if replies > 1:  # all but the last reply are gathered for it
                    link.pending.extend([(GATHER, name)] * (replies - 1))
                link.pending.append((-1 if posted else i, name))
                if link.sent < LOW_WATER:  # the server is (nearly) idle: send at once
                    link.flush()
                if not posted:
                    return

        try:
            for i in range(len(plans)):
                advance(i, None, first=True)
            while True:
                busy = [link for link in links.values() if link.pending]
                if not busy:
                    break
                delivered = False
                for link in busy:  # every reply already read, in each server's order
                    while link.sent:
                        reply = link.reader.gets()
                        if reply is False:
                            break
                        i, name = link.pending.popleft()
                        link.sent -= 1
                        delivered = True
                        if i == GATHER or link.gathered:  # a reply of a multi-command Raw
                            link.check(reply)  # raises on an error reply
                            link.gathered.append(reply)
                            if i == GATHER:
                                continue
                            reply, link.gathered = link.gathered, []
                        else:
                            reply = link.reply(reply, name)  # raises on an error reply
                        if i >= 0:
                            advance(i, reply)
                    if link.sent < LOW_WATER and link.out:  # the server caught up: send the queue
                        link.flush()
                if delivered:
                    continue
                # nothing to hand on: send everything queued, then wait for any server
                for link in busy:
                    if link.out:
                        link.flush()
                socks = {link.sock: link for link in busy if link.sent}
                ready, _, _ = select.select(list(socks), [], [], self._tick())
                for sock in ready:
                    socks[sock].receive()
                self._waiting(socks.values())
        except ServerLost:
            self._reset()
            raise
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._reset()
            raise ServerLost(target, exc) from exc
        except BaseException:
            self._reset()
            raise
        return results

    def _reset(self) -> None:
        for conn in self.conns.values():
            conn.disconnect()

    def _step(self) -> float:
        assert self.timeout is not None
        return min(10.0, max(1.0, self.timeout / 3))

    def _tick(self) -> float | None:
        """How long one wait for replies may block (None: until one comes)."""
        return None if self.timeout is None else min(self._step(), self.timeout)

    def _waiting(self, links: Any) -> None:
        """Report the longest wait for a server's reply; past the bound, the server is lost."""
        if self.timeout is None or not links:
            return
        now = time.monotonic()
        link = min(links, key=lambda lk: lk.since)
        waited = now - link.since
        if waited >= self.timeout:
            raise ServerLost(
                link.target,
                redis.TimeoutError(f"no reply within {self.timeout:g} s (redis.timeout)"),
            )
        step = self._step()
        if self.on_wait is not None and int(waited / step) > int(link.reported / step):
            self.on_wait(link.target, waited, self.timeout)
        link.reported = waited


_READ_SIZE = 1 << 20
GATHER = -2  # pending mark: a reply gathered for the next one (a multi-command Raw)
# A request goes out at once while its server has fewer than this many in flight; else it
# queues and goes with the others queued there when the server catches up. Each send wakes the
# server and costs the sender a system call, so fewer, larger sends cost less; some in flight
# keep the server busy meanwhile. (On bench-4x8, 1 to 16 were within noise of each other.)
LOW_WATER = 4


def pack_command(args: tuple, conn: Any) -> list[bytes]:
    """One command in the Redis protocol, as `conn.pack_commands([args])` packs it: through
    hiredis's packer directly when every argument is bytes, str or int (redis-py's own path
    converts each argument first and costs several times more per command); otherwise
    (another type, a command name with a space) through redis-py, with its errors."""
    if not isinstance(args[0], str) or " " in args[0]:
        return conn.pack_commands([args])
    for a in args:
        t = type(a)
        if t is not bytes and t is not str and t is not int:
            return conn.pack_commands([args])
    return [hiredis.pack_command(args)]


class _Link:
    """One server's side of a `StoreMux.run`: requests queued, sent and awaited, and a reply
    parser fed from the raw socket (the connection's own parser is not used meanwhile)."""

    __slots__ = (
        "target",
        "conn",
        "sock",
        "reader",
        "callbacks",
        "out",
        "pending",
        "sent",
        "since",
        "reported",
        "out_replies",
        "gathered",
    )

    def __init__(self, target: Hashable, conn: Any, callbacks: dict[str, Any]) -> None:
        self.target = target
        self.conn = conn
        self.sock = conn._sock
        self.reader = hiredis.Reader()
        self.callbacks = callbacks
        self.out: list[Any] = []  # queued, not written yet: argument tuples or packed bytes
        self.pending: deque[tuple[int, str]] = deque()  # (plan, command) sent or queued, in order
        self.sent = 0  # written and not answered yet (the head of `pending`)
        self.since = 0.0  # since when the server has sent nothing while owing a reply
        self.reported = 0.0  # the wait last reported
        self.out_replies = 0  # replies the queued requests will get
        self.gathered: list[Any] = []  # replies of a multi-command Raw read so far

    def flush(self) -> None:
        """Write every queued request in one send (each send wakes the server up)."""
        parts: list[bytes] = []
        for item in self.out:  # a Raw request is already packed
            if isinstance(item, bytes):
                parts.append(item)
            else:
                parts += pack_command(item, self.conn)
        if not self.sent:  # the server owes nothing yet: its wait starts now
            self.since, self.reported = time.monotonic(), 0.0
        try:
            self.sock.sendall(b"".join(parts))
        except OSError as exc:
            raise ServerLost(self.target, exc) from exc
        self.sent += self.out_replies
        self.out = []
        self.out_replies = 0

    def receive(self) -> None:
        """Feed the parser what the socket holds (called when it is readable)."""
        try:
            data = self.sock.recv(_READ_SIZE)
        except OSError as exc:
            raise ServerLost(self.target, exc) from exc
        self.since, self.reported = time.monotonic(), 0.0
        if not data:
            raise ServerLost(self.target, redis.ConnectionError("the server closed the connection"))
        self.reader.feed(data)

    def check(self, raw: Any) -> None:
        """Raise on an error reply."""
        if isinstance(raw, hiredis.ReplyError):
            self.reply(raw, "")

    def reply(self, raw: Any, name: str) -> Any:
        """A parsed reply as redis-py would return it (its response callback applied)."""
        if isinstance(raw, hiredis.ReplyError):
            msg = str(raw)
            raise (
                redis.exceptions.NoScriptError
                if msg.startswith("NOSCRIPT")
                else redis.ResponseError
            )(msg)
        cb = self.callbacks.get(name)
        return cb(raw) if cb is not None else raw


# Bytes a connection may have in flight towards its server. A window's batches can be large
# (a burst of puts is thousands of records); with the default socket buffer (~200 KiB) a send
# could wait for the server to finish earlier scripts, while the model could compute instead.
# The kernel caps it at net.core.wmem_max.
SEND_BUFFER = 4 << 20


def _connect(conn: Any) -> None:
    conn.connect()
    with contextlib.suppress(OSError):  # without the option the default buffer only is slower
        conn._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def targeted(target: Hashable, op: Generator[Any, Any, Any]) -> Plan:
    """Tag every request of a single-server operation with its target."""
    try:
        req = next(op)
        while True:
            req = op.send((yield target, req))
    except StopIteration as done:
        return done.value
