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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel

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
