"""The `inline` runtime: every host and guest in this process, stores reached with sync clients.

A runtime executes the store requests a guest's epoch generator yields (`execute`), runs a host
with its guests through a window of epochs (`run_host_window`), and reads stores back for the
checkers. The driver (`engine`) owns the timeline and calls only these methods, so another
runtime (Ray actors) can stand in without the models changing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import redis

from overcommit.nodes.guest import EpochStats, GuestModel, Reply, Request
from overcommit.nodes.host import HostModel
from overcommit.profiles import DeviceQueue
from overcommit.stores.codec import RecordBatch
from overcommit.stores.swap import SwapStore
from overcommit.stores.tmem import TmemPool


class InfrastructureError(RuntimeError):
    """A failure of the emulator's own infrastructure (a store it did not expect to lose)."""


def drive(gen: Generator[Request, Reply, Any], execute: Callable[[Request], Reply]) -> Any:
    """Run a model generator to completion, answering each request it yields."""
    try:
        req = next(gen)
        while True:
            req = gen.send(execute(req))
    except StopIteration as stop:
        return stop.value


EpochHook = Callable[[int, HostModel, list[tuple[GuestModel, EpochStats]]], None]


class InlineRuntime:
    """Runs hosts one after another in this process over synchronous Redis clients."""

    kind = "inline"

    def __init__(self, fleet: Any, prefix: str, payload: str, page_size: int) -> None:
        self.payload = payload
        self.page_size = page_size
        self.pools: dict[str, TmemPool] = {}
        self._fleet = fleet
        self._prefix = prefix
        self.swap = SwapStore(fleet.shared.client(), prefix)
        self.calls = 0

    def pool(self, host: str) -> TmemPool:
        if host not in self.pools:
            self.pools[host] = TmemPool(self._fleet.host(host).client(), self._prefix)
        return self.pools[host]

    def execute(self, req: Request) -> Reply:
        """Execute one batched request: at most one round trip per store touched."""
        try:
            return self._execute(req)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise InfrastructureError(
                f"lost contact with a Redis store while serving guest {req.guest} on host "
                f"{req.host}: {exc}"
            ) from exc

    def _execute(self, req: Request) -> Reply:
        rep = Reply()
        ps, mode = self.page_size, self.payload
        if req.tmem is not None:
            t = req.tmem
            pool = self.pool(req.host)
            if t.flush_area:
                rep.area_flushed = pool.flush_area(req.guest)
            if len(t.gets) or len(t.flushes) or t.puts is not None:
                rep.tmem = pool.batch(
                    req.guest,
                    gets=t.gets,
                    flushes=t.flushes,
                    puts=t.puts,
                    quota=t.quota,
                    capacity=t.capacity,
                    exclusive_gets=t.exclusive_gets,
                    mode=mode,
                    page_size=ps,
                )
        if req.swap is not None:
            s = req.swap
            if s.drop:
                rep.dropped = self.swap.drop(req.disk)
            if len(s.reads) or len(s.frees) or s.writes is not None:
                rep.swap = self.swap.batch(
                    req.disk,
                    req.guest,
                    reads=s.reads,
                    frees=s.frees,
                    writes=s.writes,
                    mode=mode,
                    page_size=ps,
                )
        return rep

    def run(self, gen: Generator[Request, Reply, Any]) -> Any:
        return drive(gen, self.execute)

    def run_host_window(
        self,
        host: HostModel,
        e0: int,
        e1: int,
        dt: float,
        device: DeviceQueue,
        on_epoch: EpochHook,
    ) -> tuple[int, int]:
        """Run `host` and its guests through epochs [e0, e1); returns the (ops, bytes) its
        guests put on the shared storage device."""
        ops = nbytes = 0
        self.calls += 1
        for e in range(e0, e1):
            stats = []
            for g in host.guests:
                s = self.run(g.epoch(e, e * dt, dt, device))
                ops += s.dev_ops
                nbytes += s.dev_bytes
                stats.append((g, s))
            host.observe()
            on_epoch(e, host, stats)
        return ops, nbytes

    def clear_namespace(self, hosts: list[str]) -> int:
        """Delete every key of this run's prefix from every store (left by an earlier run on
        external servers); returns how many were deleted."""
        clients = [self._fleet.host(h).client() for h in hosts] + [self._fleet.shared.client()]
        deleted = 0
        for client in clients:
            keys = list(client.scan_iter(match=f"{self._prefix}:*", count=1000))
            for i in range(0, len(keys), 1000):
                deleted += client.delete(*keys[i : i + 1000])
        return deleted

    # -- reads for the checkers -------------------------------------------------------------
    def read_tmem(self, host: str, guest: str) -> RecordBatch:
        return self.pool(host).read_all(guest, self.payload, self.page_size)

    def read_swap(self, disk: str, guest: str) -> RecordBatch:
        return self.swap.read_all(disk, guest, self.payload, self.page_size)

    def tmem_counts(self, host: str, guests: list[str]) -> tuple[int, dict[str, int]]:
        pool = self.pool(host)
        return pool.used(), {g: pool.guest_count(g) for g in guests}

    def set_frozen(self, host: str, guests: list[str], frozen: bool) -> None:
        pool = self.pool(host)
        for g in guests:
            (pool.freeze if frozen else pool.thaw)(g)
