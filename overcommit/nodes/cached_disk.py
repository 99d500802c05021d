"""`cached-disk`: the guest swaps to a virtual disk the host caches write-back in free RAM.

This is the alternative Avi Kivity argued for in the 2010 thread: an ordinary swap device,
batched and asynchronous (one exit per I/O batch, not per page), whose writes land in a host
cache (qemu `cache=writeback`) and reach the disk later; the host can always flush the cache and
take the memory back without asking the guest.

Guest side: the guest kernel does nothing new; it swaps to its disk as under `none`. What
changes is the disk's service (`DiskCache`, the host's per-disk cache state, which travels with
the guest so a window runs on its own): a write batch completes once copied into the cache (one
`io_exit` + the copy); a read cluster whose pages are all cached completes at RAM speed, one
that misses goes to the shared storage device. Discards (a slot freed when a page is rewritten)
drop the cached copy, dirty or not, so freed data is never written back.

Host side: the cache lives in the host's Redis (`stores.diskcache`: a hash of records per disk
and a hash of its dirty pages). Each window the host sets per-disk budgets from free,
unpromised RAM (`CachedDisk.plan_window`), split by the disks' recent I/O; growth only from RAM
that is free now. Within the window the cache writes dirty pages back at the disk's pace (those
dirty longer than `writeback_after`, or beyond `dirty_ratio` of the budget, or whatever the
budget no longer covers) and drops clean pages, least recently used first, to fit its budget:
clean pages at once, dirty pages only after they are written back. A `host_reclaim` event sets
every budget to 0. Counters: `cache_hits` (read pages served from the cache), `cache_writebacks`
(dirty pages written to disk), `cache_dropped` (clean pages dropped), `cache_write_through`
(writes that found no room and went straight to disk).

The 2010 thread: Avi Kivity's alternative to frontswap, a virtual swap disk write-back cached
in host RAM, batched and asynchronous, which the host can flush without guest help. Compare
`cached-disk` with `frontswap` for speed, and in a failover drill for how fast memory returns.

Guest hooks (`CachedDiskGuest`): swap-disk reads and writes go through the cache in phase 1
(`request`), its write-backs reach the disk in phase 2, direct reclaim waits for a copy into
host RAM instead of a disk write (`stall`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import _EI, CacheOps, Reply, Request, SwapOps
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from collections.abc import Generator

    from overcommit.nodes.host import Directives, HostModel
    from overcommit.nodes.kernel.model import GuestModel

C_NONE, C_CLEAN, C_DIRTY = 0, 1, 2
_E = np.empty(0, np.int64)


@dataclass
class CacheStep:
    """One epoch's cache decisions for one disk."""

    hits: np.ndarray  # bool, aligned with the reads
    writeback: np.ndarray  # dirty pages written back this epoch (become clean)
    drops: np.ndarray  # clean pages dropped
    cached: np.ndarray  # bool, aligned with the writes: True = into the cache (dirty)
    frees: np.ndarray  # freed slots that had a cached copy


class DiskCache:
    """The host's write-back cache of one guest's virtual swap disk (pages = swap slots)."""

    def __init__(self, n: int, cfg: Any, epoch_seconds: float) -> None:
        self.state = np.zeros(n, np.int8)
        self.stamp = np.zeros(n, np.int64)  # epoch the page was dirtied or last read
        self.count = 0
        self.dirty = 0
        self.budget = 0
        self.expire = max(1, math.ceil(float(cfg.writeback_after) / epoch_seconds - 1e-9))
        self.dirty_ratio = float(cfg.dirty_ratio)
        self.demand = 0  # pages written or read in the current window

    def plan(
        self,
        epoch: int,
        frees: np.ndarray,
        reads: np.ndarray,
        writes: np.ndarray,
        wb_limit: int,
    ) -> CacheStep:
        """Decide hits, write-backs, drops and which writes the cache takes this epoch."""
        st = self.state
        freed = frees[st[frees] != C_NONE] if len(frees) else _E
        self.demand += len(reads) + len(writes)
        hits = st[reads] != C_NONE if len(reads) else np.zeros(0, bool)
        count = self.count - len(freed)
        dirty_mask = st == C_DIRTY
        if len(freed):
            dirty_mask[freed] = False
        ndirty = int(np.count_nonzero(dirty_mask))
        # write back: expired pages, pages beyond the dirty ratio, and what the budget lacks
        room_short = max(0, count + len(writes) - self.budget)
        clean_now = count - ndirty
        urgent = max(0, room_short - clean_now)
        over_ratio = max(0, ndirty - int(self.dirty_ratio * self.budget))
        dirty_pages = np.flatnonzero(dirty_mask)
        expired = int(np.count_nonzero(self.stamp[dirty_pages] <= epoch - self.expire))
        n_wb = min(ndirty, wb_limit, max(expired, over_ratio, urgent))
        if n_wb > 0:
            order = np.argsort(self.stamp[dirty_pages] * len(st) + dirty_pages, kind="stable")
            writeback = np.sort(dirty_pages[order[:n_wb]])
        else:
            writeback = _E
        # drop clean pages (least recently used first) to make the room the budget requires
        n_drop = min(clean_now, room_short)
        if n_drop > 0:
            clean_mask = st == C_CLEAN
            if len(freed):
                clean_mask[freed] = False
            clean = np.flatnonzero(clean_mask)
            order = np.argsort(self.stamp[clean] * len(st) + clean, kind="stable")
            drops = np.sort(clean[order[:n_drop]])
        else:
            drops = _E
        room = max(0, self.budget - (count - len(drops)))
        cached = np.zeros(len(writes), bool)
        cached[: min(room, len(writes))] = True
        return CacheStep(hits, writeback, drops, cached, freed)

    def commit(self, epoch: int, step: CacheStep, reads: np.ndarray, writes: np.ndarray) -> None:
        st = self.state
        if len(step.frees):
            self.dirty -= int(np.count_nonzero(st[step.frees] == C_DIRTY))
            st[step.frees] = C_NONE
            self.count -= len(step.frees)
        if len(reads):
            self.stamp[reads[step.hits]] = epoch
        st[step.writeback] = C_CLEAN
        self.dirty -= len(step.writeback)
        st[step.drops] = C_NONE
        self.count -= len(step.drops)
        ins = writes[step.cached]
        st[ins] = C_DIRTY
        self.stamp[ins] = epoch
        self.count += len(ins)
        self.dirty += len(ins)

    def drop_all(self) -> None:
        """The disk is gone (its guest was killed): the host discards its cache."""
        self.state[:] = C_NONE
        self.count = self.dirty = 0

    def audit(self) -> list[str]:
        c = int(np.count_nonzero(self.state != C_NONE))
        d = int(np.count_nonzero(self.state == C_DIRTY))
        if (c, d) != (self.count, self.dirty):
            return [f"disk cache counted {self.count} pages ({self.dirty} dirty), holds {c} ({d})"]
        return []


class CachedDisk(Mechanism):
    """Host policy: per-disk cache budgets out of free, unpromised RAM."""

    name = "cached-disk"
    guest_features = frozenset({"cached_disk"})
    guest_hooks = ("CachedDiskGuest",)
    plan_order = 50

    def plan_window(self, host: HostModel) -> None:
        guests = host.guests
        if not guests:
            return
        cfg = getattr(host.settings, "cached_disk", None)
        cur = [g.cache_pages for g in guests]
        lend = host.lendable()
        total = sum(cur) + lend
        if cfg is not None and cfg.max is not None:
            total = min(total, int(cfg.max) // host.page_size)
        if host.reclaiming:
            total = 0
        caps = [g.swap_pages if g.alive else 0 for g in guests]
        want = fill_by_demand(total, [g.cache_demand + 1.0 for g in guests], caps)
        grow = [max(0, w - c) for w, c in zip(want, cur)]
        grants = fill_by_demand(lend, [float(x) for x in grow], grow) if sum(grow) else grow
        host.lend(sum(grants))
        for g, w, c, gr in zip(guests, want, cur, grants):
            g.plan.cache_budget = c + gr if w > c else w


_U = np.empty(0, np.uint32)


class CachedDiskGuest(GuestMechanism):
    """Guest side: the swap disk's reads may hit the host's cache, its writes go into the
    cache (dirty) as far as the window's budget lets them, write-backs follow in phase 2."""

    features = frozenset({"cached_disk"})
    order = 20

    def init(self, g: GuestModel) -> None:
        from overcommit.config import CachedDiskSettings

        cfg = getattr(g.settings, "cached_disk", None) or CachedDiskSettings()
        g.cache = DiskCache(g.N, cfg, g.epoch_seconds)

    def boot(self, g: GuestModel) -> None:
        g.cache.drop_all()

    def start_window(self, g: GuestModel, e0: int, d: Directives) -> None:
        g.cache.budget = d.cache_budget
        g.cache.demand = 0

    #: the store operations on the host's cache of the disk (`ops(reads, frees, writeback,
    #: drops, inserts, drop=False)`)
    ops = CacheOps

    def writeback_limit(self, g: GuestModel, ep: EpochContext) -> int:
        """Dirty pages the cache may write back to the disk this epoch (the disk's pace)."""
        cache = g.cache
        return g._async_budget(ep.device, ep.dt, fair=cache.count > cache.budget)

    def reclaim_plan(self, g: GuestModel, ep: EpochContext) -> None:
        if ep.budget >= 0:  # kswapd may also fill the cache's free budget
            ep.budget += max(0, g.cache.budget - g.cache.count)

    def request(self, g: GuestModel, ep: EpochContext, req: Request, phase: int) -> None:
        if phase != 1:
            return
        cache, reads, disk_batch = g.cache, ep.reads, ep.disk_batch
        cwrites = ep.disk_pages if disk_batch is not None else _EI
        wb_limit = self.writeback_limit(g, ep)
        self.step = step = cache.plan(ep.epoch, ep.sw_free, reads, cwrites, wb_limit)
        ins = disk_batch.take(np.flatnonzero(step.cached)) if disk_batch is not None else None
        through = disk_batch.take(np.flatnonzero(~step.cached)) if disk_batch is not None else None
        if through is not None and len(through) == 0:
            through = None
        if ins is not None and len(ins) == 0:
            ins = None
        ep.through_batch = through
        ep.disk_reads_dev = reads[~step.hits]
        req.cache = self.ops(
            reads[step.hits].astype(np.uint32),
            step.frees.astype(np.uint32),
            step.writeback.astype(np.uint32),
            step.drops.astype(np.uint32),
            ins,
        )

    def replied(self, g: GuestModel, ep: EpochContext) -> None:
        c, step, name = g.counters, self.step, g.name
        rc = ep.reply.cache
        hits = ep.reads[step.hits]
        g._check_read(hits, rc.found, rc.got, "the disk cache", ep.violations)
        if rc.refused:
            ep.violations.append(
                ("integrity", f"{name}: the cache refused to drop {rc.refused} dirty page(s)")
            )
        ep.p2_wb = rc.written_back if len(rc.written_back) else None
        if len(rc.written_back) != len(step.writeback):
            ep.violations.append(
                (
                    "conservation",
                    f"{name}: cache wrote back {len(rc.written_back)} pages, "
                    f"{len(step.writeback)} were dirty",
                )
            )
        # apply: the cache's decisions
        writes = ep.disk_pages if ep.disk_batch is not None else _EI
        g.cache.commit(ep.epoch, step, ep.reads, writes)
        c["cache_hits"] += int(np.count_nonzero(step.hits))
        c["cache_writebacks"] += len(step.writeback)
        c["cache_dropped"] += len(step.drops)
        c["cache_write_through"] += int(np.count_nonzero(~step.cached))
        c["cache_writes"] += int(np.count_nonzero(step.cached))

    def stall(self, g: GuestModel, ep: EpochContext, s: dict[str, float]) -> None:
        step, disk_sync = self.step, ep.disk_sync
        ep.sync_disk = int(np.count_nonzero(~step.cached & disk_sync))
        ep.sync_cached = int(np.count_nonzero(step.cached & disk_sync))
        # kswapd's writes into the cache: an I/O exit per batch and the copy, on the vCPU
        n_bg = int(np.count_nonzero(step.cached & ~disk_sync))
        if n_bg:
            ops = -(-n_bg // g.swap_cluster)
            s["background_cpu"] += ops * g.costs.io_exit + g.costs.copy(n_bg * g.page_size)
            g.counters["io_exits"] += ops

    def release(self, g: GuestModel, req: Request, whole: bool) -> None:
        req.cache = self.ops(_U, _U, _U, _U, None, drop=True)

    def released(self, g: GuestModel, reply: Reply, out: list[tuple[str, str]]) -> None:
        g.cache.drop_all()

    def store_lost(self, g: GuestModel) -> None:
        g.cache.drop_all()

    def lost(self, g: GuestModel) -> dict[str, int]:
        return {"cache": g.cache.dirty}

    def leave(
        self, g: GuestModel, src: str, flush: bool, out: dict[str, Any]
    ) -> Generator[Request, Reply, None]:
        """Dirty pages of the source's cache are written back to the swap disk; the cache
        is dropped."""
        if not g.cache.count:
            return
        dirty = np.flatnonzero(g.cache.state == C_DIRTY)
        if len(dirty):
            r = (
                yield Request(
                    g.name, src, g.disk, cache=self.ops(_U, _U, dirty.astype(np.uint32), _U, None)
                )
            ).cache
            if len(r.written_back):
                yield Request(g.name, src, g.disk, swap=SwapOps(_U, _U, r.written_back))
            out["cache_writebacks"] = len(r.written_back)
            g.counters["cache_writebacks"] += len(r.written_back)
        yield Request(g.name, src, g.disk, cache=self.ops(_U, _U, _U, _U, None, True))
        g.cache.drop_all()

    def audit(self, g: GuestModel, full: bool) -> list[str]:
        return [f"{g.name}: {m}" for m in g.cache.audit()] if full else []
