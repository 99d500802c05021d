"""The store side of requests: `StoreOps` turns a guest's or host's store requests (the model's
`Request` of tmem, swap, host-swap, disk-cache, RAM-disk and ephemeral operations, and
post-copy's `RemoteOps`) into store operations on its host's Redis (`HOST`) or shared storage
(`SHARED`), once for every executor (`runtime.SyncExecutor`, `AsyncExecutor`, the `StoreMux`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from overcommit.migration.remote import RemoteOps, RemoteReply
from overcommit.nodes.guest import Reply, Request
from overcommit.stores.diskcache import CacheStoreOps
from overcommit.stores.ephemeral import EphemeralStoreOps
from overcommit.stores.hostswap import HostSwapStoreOps
from overcommit.stores.pipeline import Posted
from overcommit.stores.postcopy import RemoteStoreOps
from overcommit.stores.swap import SwapStoreOps
from overcommit.stores.tmem import TmemStoreOps


# -- requests beyond one guest's batch --------------------------------------------------------
@dataclass
class ReadAll:
    """Read back every record a guest has in its host's stores and on its swap disk."""

    guest: str
    host: str
    disk: str
    tmem: bool
    hswap: bool = False
    cache: bool = False
    files: bool = False
    eph: bool = False
    cache_store: str = "dcache"  # `ramdisk`: the cache is the guest's host RAM disk

    @property
    def files_disk(self) -> str:
        return f"{self.disk}/files"


@dataclass
class StoreReadback:
    """What `ReadAll` found: each store's records (None for stores the guest does not use)."""

    tmem: Any = None
    swap: Any = None
    hswap: Any = None  # (frames, records)
    cache: Any = None  # (records, dirty pages)
    files: Any = None  # records on the guest's file disk
    eph: Any = None  # (records, the pool's count in its meta hash)
    cache_store: str = "dcache"  # where `cache` came from: a host cache, or a RAM disk


@dataclass
class PoolCounts:
    """Read a host pool's counters: host-wide `used` and each guest's count."""

    host: str
    guests: list[str]


@dataclass
class Freeze:
    host: str
    guests: list[str]
    frozen: bool


# -- planning them --------------------------------------------------------------------------
HOST, SHARED = "host", "shared"  # the two servers a request can touch: its host's, shared storage


class StoreOps:
    """Turns model requests into store operations; written once for every executor.

    `plan(req)` is a generator of `(role, op)` steps: `role` is `HOST` (the request's host's
    Redis) or `SHARED` (shared storage), `op` a store operation (a generator of `Eval` /
    `Command` / `Raw` requests, :mod:`overcommit.stores.tmem`) or a `Posted` one, whose result
    the plan does not read; the step's value is the operation's result. `SyncExecutor`,
    `AsyncExecutor` and the interleaving `StoreMux` all drive the same plan, so the stores see
    the same commands whichever runs it.
    """

    def __init__(self, prefix: str, payload: str, page_size: int) -> None:
        self.payload = payload
        self.page_size = page_size
        self.tmem = TmemStoreOps(prefix)
        self.swap = SwapStoreOps(prefix)
        self.hswap = HostSwapStoreOps(prefix)
        self.cache = CacheStoreOps(prefix)
        self.ramdisk = CacheStoreOps(prefix, "ramdisk")
        self.eph = EphemeralStoreOps(prefix)
        self.remote = RemoteStoreOps(prefix)

    def plan(self, req: Any) -> Generator[tuple[str, Any], Any, Any]:
        """Yields (role, store operation) steps; returns the reply."""
        mode, ps = self.payload, self.page_size
        if isinstance(req, Request):
            rep = Reply()
            if req.tmem is not None:
                t = req.tmem
                if t.flush_area:
                    rep.area_flushed = yield HOST, self.tmem.flush_area(req.guest)
                if len(t.gets) or len(t.flushes) or t.puts is not None:
                    rep.tmem = yield (
                        HOST,
                        self.tmem.batch(
                            req.guest,
                            t.gets,
                            t.flushes,
                            t.puts,
                            t.quota,
                            t.capacity,
                            t.exclusive_gets,
                            mode,
                            ps,
                            t.costs,
                            t.room,
                        ),
                    )
            if req.cache is not None:
                k = req.cache
                store = self.ramdisk if getattr(k, "store", "") == "ramdisk" else self.cache
                if k.drop:
                    yield HOST, store.drop(req.disk)
                else:
                    rep.cache = yield (
                        HOST,
                        store.batch(
                            req.disk,
                            req.guest,
                            k.reads,
                            k.frees,
                            k.writeback,
                            k.drops,
                            k.inserts,
                            mode,
                            ps,
                        ),
                    )
            if req.swap is not None:
                s = req.swap
                if s.drop:
                    rep.dropped = yield SHARED, self.swap.drop(req.disk)
                if not s.wait:  # writes only, whose reply nothing reads: one HSET, posted
                    yield SHARED, Posted(self.swap.write(req.disk, req.guest, s.writes, mode, ps))
                elif len(s.reads) or len(s.frees) or s.writes is not None:
                    rep.swap = yield (
                        SHARED,
                        self.swap.batch(req.disk, req.guest, s.reads, s.frees, s.writes, mode, ps),
                    )
            if req.eph is not None:
                k = req.eph
                if k.flush_area:
                    rep.eph_flushed = yield HOST, self.eph.flush_area(req.guest)
                else:
                    rep.eph = yield (
                        HOST,
                        self.eph.batch(req.guest, k.gets, k.puts, k.quota, mode, ps),
                    )
            if req.files is not None:
                f = req.files
                if f.drop:
                    yield SHARED, self.swap.drop(req.files_disk)
                elif len(f.reads) or len(f.frees) or f.writes is not None:
                    rep.files = yield (
                        SHARED,
                        self.swap.batch(
                            req.files_disk, req.guest, f.reads, f.frees, f.writes, mode, ps
                        ),
                    )
            if req.hswap is not None:
                h = req.hswap
                if h.drop:
                    yield HOST, self.hswap.drop(req.guest)
                else:
                    rep.hswap = yield (
                        HOST,
                        self.hswap.batch(
                            req.guest,
                            h.reads,
                            h.frees,
                            h.write_frames,
                            h.writes,
                            h.quota,
                            h.capacity,
                            mode,
                            ps,
                        ),
                    )
            return rep
        if isinstance(req, ReadAll):
            back = StoreReadback()
            if req.tmem:
                back.tmem = yield HOST, self.tmem.read_all(req.guest, mode, ps)
            back.swap = yield SHARED, self.swap.read_all(req.disk, req.guest, mode, ps)
            if req.hswap:
                back.hswap = yield HOST, self.hswap.read_all(req.guest, mode, ps)
            if req.cache:
                store = self.ramdisk if req.cache_store == "ramdisk" else self.cache
                back.cache = yield HOST, store.read_all(req.disk, req.guest, mode, ps)
                back.cache_store = req.cache_store
            if req.files:
                back.files = yield SHARED, self.swap.read_all(req.files_disk, req.guest, mode, ps)
            if req.eph:
                recs = yield HOST, self.eph.read_all(req.guest, mode, ps)
                back.eph = (recs, (yield HOST, self.eph.guest_count(req.guest)))
            return back
        if isinstance(req, RemoteOps):  # `req.host` is the post-copy source, whose store
            return (yield from self._remote(req))
        if isinstance(req, PoolCounts):
            return (yield HOST, self.tmem.counts(req.guests))
        if isinstance(req, Freeze):
            for g in req.guests:
                yield HOST, (self.tmem.freeze(g) if req.frozen else self.tmem.thaw(g))
            return None
        raise TypeError(f"unknown store request {type(req).__name__}")

    def _remote(self, req: RemoteOps) -> Generator[tuple[str, Any], Any, RemoteReply]:
        """Post-copy's pages at the source (`overcommit.migration.remote`): stash, fetch, then
        read everything or count."""
        mode, ps, ops = self.payload, self.page_size, self.remote
        rep = RemoteReply()
        if req.drop:
            rep.dropped = yield HOST, ops.drop(req.guest, req.migration)
            return rep
        if req.stash is not None:
            rep.stashed = yield HOST, ops.stash(req.guest, req.migration, req.stash, mode, ps)
        if len(req.fetch):
            rep.fetched = yield HOST, ops.fetch(req.guest, req.migration, req.fetch, mode, ps)
            rep.left = rep.fetched.pages_after
        if req.read_all:
            rep.held = yield HOST, ops.read_all(req.guest, req.migration, mode, ps)
            rep.left = len(rep.held)
        elif not len(req.fetch):
            rep.left = yield HOST, ops.count(req.guest, req.migration)
        return rep
