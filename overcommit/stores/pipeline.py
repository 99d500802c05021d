"""Many store operations at once: one connection per Redis server, requests pipelined.

Store operations are generators that yield `Eval` / `Command` requests and receive the replies
(:mod:`overcommit.stores.tmem`); a *plan* tags each request with the server it goes to,
yielding `(target, request)`. Running plans one after another costs a full round trip per
request, and the caller's Python waits while the server works. `StoreMux.run` keeps every plan
in flight at once instead: each plan's next request is written to its server's connection as
soon as the plan yields it, replies are read back in the order they were sent, and each reply
advances its plan at once, so the caller computes the next request of one plan while the
servers work on the others', and several servers work at the same time.

Every plan sees exactly the replies it would see alone, provided the plans in flight together
touch disjoint keys (one guest each, as in a sync window) or only commute (Lua scripts are
atomic). `targeted` tags a single-server operation's requests with its server.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from collections.abc import Generator, Hashable
from typing import Any

import redis

from overcommit.stores.tmem import Command, Eval, lua_source

Plan = Generator[tuple[Hashable, "Eval | Command"], Any, Any]


class ServerLost(redis.ConnectionError):
    """A server of the mux stopped answering; `target` says which."""

    def __init__(self, target: Hashable, exc: BaseException) -> None:
        super().__init__(f"{exc}")
        self.target = target


class StoreMux:
    """One dedicated connection per target server; `run` interleaves plans over them."""

    def __init__(self, clients: dict[Hashable, redis.Redis]) -> None:
        self.clients: dict[Hashable, redis.Redis] = {}
        self.conns: dict[Hashable, Any] = {}
        self.shas: dict[Hashable, dict[str, str]] = {}
        for target, client in clients.items():
            self.bind(target, client)

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
        outbox: dict[Hashable, list[tuple[Any, ...]]] = {t: [] for t in self.conns}
        waiting: dict[Hashable, deque[tuple[int, str]]] = {t: deque() for t in self.conns}
        sent: deque[Hashable] = deque()  # the target of every request in flight, oldest first
        unsent = 0  # requests queued in `outbox`, not written yet

        def submit(i: int, step: tuple[Hashable, Eval | Command]) -> None:
            target, req = step
            if isinstance(req, Eval):
                sha = self._sha(target, req.script)
                args: tuple[Any, ...] = ("EVALSHA", sha, len(req.keys), *req.keys, *req.args)
            else:
                args = req.args
            nonlocal unsent
            outbox[target].append(args)
            waiting[target].append((i, str(args[0]).upper()))
            sent.append(target)
            unsent += 1

        def advance(i: int, plan: Plan, reply: Any, first: bool = False) -> None:
            try:
                step = next(plan) if first else plan.send(reply)
            except StopIteration as done:
                results[i] = done.value
                return
            submit(i, step)

        target: Hashable = None
        try:
            for i, plan in enumerate(plans):
                advance(i, plan, None, first=True)
            while sent:
                target = sent[0]
                conn = self.conns[target]
                # send what is queued only when the next reply is not there yet: each send
                # wakes a server up, so fewer, larger sends cost less
                if unsent and (conn._sock is None or not conn.can_read(timeout=0)):
                    for target, cmds in outbox.items():
                        if cmds:
                            conn = self.conns[target]
                            if conn._sock is None:
                                _connect(conn)
                            conn._sock.sendall(b"".join(conn.pack_commands(cmds)))
                            outbox[target] = []
                    unsent = 0
                target = sent.popleft()
                i, name = waiting[target].popleft()
                reply = self.clients[target].parse_response(self.conns[target], name)
                advance(i, plans[i], reply)
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


# Bytes a connection may have in flight towards its server. A window's batches can be large
# (a burst of puts is thousands of records); with the default socket buffer (~200 KiB) a send
# would wait for the server to finish earlier scripts, while the model could compute instead.
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
