"""A guest kernel's memory: where each page is, reclaim, swap, faults, OOM — vectorised.

Every page of the workload's footprint is, from the guest's point of view, in exactly one place
(`loc`): untouched, guest RAM, frontswap (host tmem), the swap disk, the compressed pool
(zswap/zram), or, for the workload's file-backed page cache (its `file_cache` share, the last
pages of the footprint), `FILE`: dropped from RAM, its content on the guest's file disk. A file
page is read from that disk on first use and on a miss, is clean until written, and on reclaim
is dropped, or written back to its file first when dirty; it never takes a swap slot. A page
may also hold a swap *slot* (`slot`): pages in frontswap, on disk or in the pool always do; a
resident page keeps the slot it was read from while it stays clean (the swap cache), so
evicting it again costs no I/O. A write frees the slot (a discard), as Linux does when it
reuses a swap-cache page. Resident pages occupy guest-physical frames taken from a free stack;
frames can also be held by the balloon or by a mechanism (`frames_held`, e.g. a compressed
pool). The host backs frames with RAM, or has paged them out to its own swap
(`nodes.host.GuestFrames`); that table travels with the guest, and the host steers it only
through each window's `Directives`.

Reclaim picks cold pages by a named LRU approximation (`lru`: exact last-touch epoch; `clock`:
second chance over referenced bits). Below the low watermark kswapd reclaims asynchronously up
to the high watermark (no stall, device bandwidth used); a fault that would take free memory
below the min watermark reclaims synchronously (direct reclaim: the guest stalls). Swap-in
reads ahead an aligned cluster of up to `readahead` pages from disk (the window adapts to its
hits, and pages read ahead are reclaimed first until touched: `kernel.readahead`). When
neither RAM nor swap has room the OOM killer ends the workload, which restarts after
`oom_restart` seconds; when the host cannot place the guest's frames the host's OOM killer
ends the whole guest.

This is the paging core: it names no mechanism. Mechanisms act through the hooks of
`kernel.hooks.GuestMechanism` (one object per mechanism in `self.mechs`, in a fixed order),
chosen from `features` by the registry (`nodes.mechanism.guest_hooks`). An epoch
(`kernel.epoch.run`) is a generator that yields at most two batched store requests and
receives their replies, so the model never touches Redis itself.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np

from overcommit.nodes.host import Directives, GuestFrames
from overcommit.nodes.kernel import epoch as _epoch
from overcommit.nodes.kernel import jit
from overcommit.nodes.kernel import readahead as _ra
from overcommit.nodes.kernel.checks import GuestChecks
from overcommit.nodes.kernel.hooks import GUEST_ATTRS, GuestMechanism
from overcommit.nodes.kernel.lifecycle import GuestLifecycle
from overcommit.nodes.kernel.scan import _ClockScan, _FirstScan, _OrderScan
from overcommit.nodes.kernel.types import (
    _EI,
    COUNTERS,
    FRONTSWAP,
    HIST_BINS,
    NLOC,
    NO_SLOT,
    PAGE_RECORD,
    RAM,
    STALL_SOURCES,
    SWAP_CLUSTER,
    UNTOUCHED,
    EpochStats,
    Reply,
    Request,
    _counts,
    _member,
    page_records,
)
from overcommit.profiles import Costs, DeviceQueue
from overcommit.workloads import TouchStreams, make_workload


def _overrides(h: GuestMechanism, hook: str) -> bool:
    """Whether mechanism `h` has its own `hook` (not `GuestMechanism`'s default)."""
    return getattr(type(h), hook) is not getattr(GuestMechanism, hook)


def _page_records(g: GuestModel, n: int, old: dict | None = None) -> None:
    """Give `g` its per-page record array (`PAGE_RECORD`) and its tables as views of it."""
    rec = page_records(n, old)
    for k in PAGE_RECORD.names:
        setattr(g, k, rec[k])
    g.pages_rec = rec


class GuestModel(GuestLifecycle, GuestChecks):
    """A guest kernel's memory state and its workload. Pure Python + numpy."""

    def __getstate__(self) -> dict:
        """Pickled (to an actor, or copied) with its tables as arrays of their own; the
        other side lays them out in records again (`__setstate__`)."""
        state = self.__dict__.copy()
        state.pop("pages_rec", None)
        state.pop("touch_out", None)  # scratch: made again on the other side
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.touch_out = jit.touch_buffers(0)
        if "loc" in state:
            _page_records(self, len(state["loc"]), state)

    def __init__(
        self,
        spec: Any,
        *,
        host: str,
        seed: int,
        page_size: int,
        payload: str,
        boot: str,
        costs: Costs,
        uses_tmem: bool,
        exclusive_gets: bool,
        incarnation: int = 0,
        features: frozenset[str] | None = None,
        settings: Any = None,
        epoch_seconds: float = 0.1,
    ) -> None:
        if features is None:
            features = frozenset({"tmem"}) if uses_tmem else frozenset()
        self.features = features
        self.settings = settings
        self.spec = spec
        self.name: str = spec.name
        self.host = host
        self.seed = seed
        self.page_size = page_size
        self.payload = payload
        self.costs = costs
        self.exclusive_gets = exclusive_gets
        self.boot = boot
        self.eager = boot == "eager"
        self.workload = make_workload(spec.workload, page_size)
        self.N = self.workload.footprint
        self.nbits = max(1, (self.N - 1).bit_length())  # bits of the largest page index
        # pages [file_lo, N) are file-backed page cache (the workload's file_cache share)
        self.file_lo = self.N - self.workload.file_pages
        self.has_files = self.workload.file_pages > 0
        self.memory_pages = spec.memory // page_size
        self.maxmem_pages = spec.maxmem // page_size
        from overcommit.nodes.mechanism import guest_hooks

        self.mechs: list[GuestMechanism] = guest_hooks(features)  # in their fixed order
        # the mechanisms that bill host pages or hold frames (the others' hooks return 0)
        self._billers = [h for h in self.mechs if _overrides(h, "billed")]
        self._holders = [h for h in self.mechs if _overrides(h, "frames_held")]
        # a mechanism needs the frames each epoch's faults map (`EpochContext.in_frames`)
        self.tracks_frames = any(h.tracks_frames for h in self.mechs)
        self.touch_out = jit.touch_buffers(0)  # `jit.touch_pass`'s output buffers
        # a guest whose mechanism says so (ballooning, host-swapped) sees maxmem of frames
        grows = any(h.sees_maxmem for h in self.mechs)
        self.nframes = max(self.memory_pages, self.maxmem_pages) if grows else self.memory_pages
        self.swap_slots = spec.swap // page_size
        # pages [0, pinned_n) are mlocked: the guest's `pinned` share, or more while a phase
        # pins more (mlock faults them in; they never leave RAM until unpinned)
        self.base_pinned = min(int(round(spec.pinned * self.N)), self.memory_pages)
        self.pinned_n = self.base_pinned
        self.readahead = int(spec.readahead)
        self.swap_cluster = int(getattr(spec, "swap_cluster", SWAP_CLUSTER))  # pages per write
        wm = spec.watermarks
        self.wm_min = max(1, math.ceil(wm.min * self.memory_pages))
        self.wm_low = max(self.wm_min + 1, math.ceil(wm.low * self.memory_pages))
        self.wm_high = max(self.wm_low + 1, math.ceil(wm.high * self.memory_pages))
        self.incarnation = incarnation
        self.epoch_seconds = epoch_seconds
        self.counters: dict[str, int] = {k: 0 for k in COUNTERS}
        self.stall_by_source: dict[str, float] = {k: 0.0 for k in STALL_SOURCES}
        self.hist = np.zeros(HIST_BINS, np.int64)
        self.alive_seconds = 0.0
        self.work_seconds = 0.0
        self.stall_seconds = 0.0
        self.downtime_seconds = 0.0
        self.debt = 0.0
        self.alive = True
        self.cooperative = bool(spec.cooperative)
        self.shrink_left = 0  # pool pages the host asked this window to move to the swap disk
        self.migration: Any = None  # a live migration's MigrationState (migration.transfer)
        self.down_until = 0.0
        self.directives = Directives()
        self._hs_ceiling = 0
        self.window_new_puts = 0
        self.window_start = 0  # first epoch of the current window
        self.next_epoch = 0  # first epoch of the next window
        self.grown = 0  # allocation growth used out of this window's grant
        self.census = np.zeros(NLOC, np.int64)  # pages per location after the last epoch
        self.peak_tmem_pages = 0
        self.peak_billed_pages = 0
        self.unuse_left = 0  # pages a mechanism asked to bring back into RAM (selfshrink)
        self.balloon_lag_seconds = 0.0  # time the balloon spent away from the host's target
        self._init_mechanisms()
        self._boot()

    @property
    def tmem_quota(self) -> int:
        return self.directives.tmem_quota

    @property
    def tmem_capacity(self) -> int:
        return self.directives.tmem_capacity

    @property
    def tmem_billed(self) -> int:
        """Pages of host RAM billed to the guest outside its RAM (its pool pages, or what a
        compressing or deduplicating pool says they take)."""
        b = self._billers
        return b[0].billed(self) if len(b) == 1 else sum(h.billed(self) for h in b)

    # -- mechanisms -------------------------------------------------------------------------
    def _init_mechanisms(self) -> None:
        """Every mechanism's guest state, fresh (at construction, and for a new incarnation)."""
        for k, v in GUEST_ATTRS.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)
        self.min_alloc = self.nframes
        for h in self.mechs:
            h.init(self)

    # -- identity ---------------------------------------------------------------------------
    @property
    def disk(self) -> str:
        """The name of this incarnation's swap disk in shared storage."""
        return f"{self.name}#{self.incarnation}"

    @property
    def alloc_pages(self) -> int:
        """The guest's current allocation: its frames not held by the balloon."""
        return self.nframes - self.balloon_n

    @property
    def zpool_frames(self) -> int:
        """Frames mechanisms hold inside the guest (a compressed pool's)."""
        h = self._holders
        return h[0].frames_held(self) if len(h) == 1 else sum(m.frames_held(self) for m in h)

    def _boot(self) -> None:
        """The guest (re)boots: frames backed per `boot`, the balloon at its boot size."""
        self.frames = GuestFrames(
            self.nframes, eager=self.eager, host_swap=self.host_swap, sharing=self.sharing
        )
        stacks = {s for h in self.mechs for s in h.frame_stacks}
        self.balloon_stack = np.zeros(self.nframes if "balloon_stack" in stacks else 0, np.int32)
        self.balloon_n = 0
        if self.initial_balloon:
            held = np.arange(self.memory_pages, self.nframes, dtype=np.int32)
            self.balloon_stack[: len(held)] = held
            self.balloon_n = len(held)
            self.frames.release(held.astype(np.int64))
        self.zp_stack = np.zeros(self.nframes if "zp_stack" in stacks else 0, np.int32)
        for h in self.mechs:
            h.boot(self)
        self._reset_memory()

    def _reset_memory(self) -> None:
        """Fresh workload state: nothing touched, every unballooned frame free, new streams."""
        n = self.N
        # per page: `last` (last touched epoch + 1, for lru; 6.8 years of epochs), `version`,
        # `loc`, `slot`, `ref` (referenced bit, for the clock), `ra` (read ahead, not touched
        # since: kernel.readahead), as fields of one record (PAGE_RECORD)
        _page_records(self, n)
        self.dirty = np.zeros(n, bool)  # resident and written since it last left RAM
        self.frame = np.full(n, -1, np.int32)  # page -> frame holding it (-1: none)
        self.census = np.zeros(NLOC, np.int64)  # ledger: pages per location
        self.census[UNTOUCHED] = n
        self.slot_census = np.zeros(NLOC, np.int64)  # ledger: pages per slot kind
        self.slot_census[NO_SLOT] = n
        self.fpage = np.full(self.nframes, -1, np.int32)  # frame -> page it holds
        self.last_hi = 0  # the largest value in `last`
        self.active_n = 0  # pages with last > window_start (see active_pages)
        self.hand = 0
        self.ra_n = 0  # pages flagged in `ra`
        self.ra_hits_since = 0  # readahead hits since the window was last set
        self.ra_window = self.readahead  # the swap readahead window, in pages
        for h in self.mechs:
            h.reset(self)
        inb = np.zeros(self.nframes, bool)
        inb[self.balloon_stack[: self.balloon_n]] = True
        free = np.flatnonzero(~inb)[::-1].astype(np.int32)
        self.free_stack = np.zeros(self.nframes, np.int32)
        self.free_stack[: len(free)] = free
        self.free_top = len(free)
        self.slots_used = 0  # slots on the swap disk (frontswap and zswap pages hold them too)
        self.zslots_used = 0  # slots on the zram device
        self.wl_epochs = 0
        self.pending: tuple[np.ndarray, np.ndarray] | None = None
        self.restarts = getattr(self, "restarts", -1) + 1
        self.rng = TouchStreams(self.seed, self.name, self.incarnation, f"workload/{self.restarts}")
        self.pinned_n = self.base_pinned
        if self.pinned_n:
            pinned = np.arange(self.pinned_n)
            self._map_in(pinned)
            self._set_loc(pinned, RAM)
            self.dirty[pinned] = True
            self.ref[pinned] = True

    # -- frames -----------------------------------------------------------------------------
    def _map_in(self, pages: np.ndarray) -> int:
        """Give resident frames to pages; returns how many the host newly backed."""
        k = len(pages)
        if k == 0:
            return 0
        if jit.ENABLED and pages.dtype == np.int64:
            fs = self.frames
            full = fs.backed_count + fs.hswapped_count == len(fs.state)
            new = jit.map_in(
                pages, self.free_stack, self.free_top, self.frame, self.fpage, fs.state, full
            )
            self.free_top -= k
            fs.backed_count += new
            self.counters["host_frames_allocated"] += new
            return new
        frames = self.free_stack[self.free_top - k : self.free_top][::-1].copy()
        self.free_top -= k
        self.frame[pages] = frames
        self.fpage[frames] = pages
        new = self.frames.back(frames.astype(np.int64))
        self.counters["host_frames_allocated"] += new
        return new

    def _set_loc(self, pages: np.ndarray, value: Any) -> None:
        """Move pages (distinct indices) to `value` (one location or one per page), keeping
        the per-location ledger (`census`) that the per-epoch checks use."""
        if len(pages) == 0:
            return
        self.census -= np.bincount(self.loc[pages], minlength=NLOC)
        if np.ndim(value) == 0:
            self.census[int(value)] += len(pages)
        else:
            self.census += np.bincount(value, minlength=NLOC)
        self.loc[pages] = value

    def _set_slot(self, pages: np.ndarray, value: Any) -> None:
        """Give pages (distinct indices) the slot kind `value`, keeping `slot_census`."""
        if len(pages) == 0:
            return
        self.slot_census -= np.bincount(self.slot[pages], minlength=NLOC)
        if np.ndim(value) == 0:
            self.slot_census[int(value)] += len(pages)
        else:
            self.slot_census += np.bincount(value, minlength=NLOC)
        self.slot[pages] = value

    def _map_out(self, pages: np.ndarray) -> None:
        k = len(pages)
        if k == 0:
            return
        fr = self.frame[pages]
        self.free_stack[self.free_top : self.free_top + k] = fr
        self.free_top += k
        self.fpage[fr] = -1
        self.frame[pages] = -1

    def _incoming_frames(self, extra_free: np.ndarray, k: int) -> np.ndarray:
        """The frames `_map_in` will hand out after `extra_free` frames are pushed."""
        if k == 0:
            return _EI
        extra = extra_free.astype(np.int32)
        if k <= len(extra):  # only the top of the stack is handed out
            return extra[len(extra) - k :][::-1].astype(np.int64)
        rest = k - len(extra)
        top = self.free_stack[self.free_top - rest : self.free_top]
        return np.concatenate([top, extra])[::-1].astype(np.int64)

    def _take_free(self, k: int) -> np.ndarray:
        """Pop k free frames (for the balloon or the compressed pool)."""
        fr = self.free_stack[self.free_top - k : self.free_top][::-1].copy()
        self.free_top -= k
        return fr.astype(np.int64)

    def _give_free(self, frames: np.ndarray) -> None:
        k = len(frames)
        self.free_stack[self.free_top : self.free_top + k] = frames
        self.free_top += k

    # -- reclaim ----------------------------------------------------------------------------
    def _reclaim_order(self, k: int, exclude: np.ndarray) -> _OrderScan:
        """The reclaim candidates, coldest first, as a scan that yields them as far as needed.

        Candidates are resident, unpinned pages not in `exclude` (sorted, distinct). `lru`
        orders them by last-touch epoch (ties by page index) and keeps the 2k coldest, so the
        whole (short) order is computed at once. `clock` sweeps from the hand: first the pages
        whose referenced bit is clear, in sweep order, then (a full turn) the referenced ones,
        in sweep order; it computes only as long a prefix of that order as the caller asks
        for. `commit(page)` records the scan (clock hand and cleared referenced bits) once the
        victims are chosen, given the victim furthest along the order. Under either, pages
        read ahead and not touched since come first (`kernel.readahead`).
        """
        first = _ra.first(self, exclude)
        if len(first):  # pages read ahead and not touched since come first (either policy)
            inner = self._policy_order(k, np.union1d(exclude, first))
            return _FirstScan(first, inner, self.ra)
        return self._policy_order(k, exclude)

    def _policy_order(self, k: int, exclude: np.ndarray) -> _OrderScan:
        """`lru`'s or `clock`'s order of the candidates (see `_reclaim_order`)."""
        if self.spec.lru == "lru":
            mask = self.loc == RAM
            mask[: self.pinned_n] = False
            mask[exclude] = False
            cand = np.flatnonzero(mask)
            if len(cand) == 0:
                return _OrderScan(_EI)
            key = self.last[cand].astype(np.int64) * self.N + cand  # unique: ties by page index
            if len(cand) > 2 * k:
                part = np.argpartition(key, 2 * k - 1)[: 2 * k]
                cand, key = cand[part], key[part]
            return _OrderScan(cand[key.argsort()])
        return _ClockScan(self, exclude)

    def _pick_victims(
        self,
        scan: _OrderScan,
        want: int,
        uniq: np.ndarray,
        loc_u: np.ndarray,
        pin_to: int,
        wset: np.ndarray,
        free: int,
        need: int,
        async_want: int,
        room: int,
        budget: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This epoch's reclaim victims from `scan`'s order, with their async and clean flags.

        The order is cut by the swap slots left (`room`: a page that needs a new slot cannot
        leave once none is left); kswapd takes the first `async_want` pages it may write in the
        background (any, or within `budget` dirty pages when `budget` >= 0) and direct reclaim
        the first `wm_min + need - free` of the rest. A thrashing guest (fewer candidates than
        its faults need) appends this epoch's resident pages as the last choice. The choice is
        made on a prefix of the order, taken longer until it decides the same victims the
        whole order would (every step is a running count along the order); then the scan is
        committed.
        """
        m = want + want // 4 + 64
        while True:
            order = scan.prefix(m)
            if not scan.whole and free + len(order) < need:
                order = scan.prefix(scan.total)  # possibly thrashing: decide on the whole order
            n_scan = len(order)  # pages of the scanned order (the rest: this epoch's own)
            thrash = free + n_scan < need
            if thrash:  # this epoch's own pages are the last choice
                resident_touched = uniq[(loc_u == RAM) & (uniq >= max(self.pinned_n, pin_to))]
                order = np.concatenate([order, resident_touched])
            # a page written this epoch (possible only when thrashing) is dirty whatever its slot
            written = _member(order, wset)
            slotless = self.slot[order] == NO_SLOT
            if self.has_files:  # a file page leaves clean (dropped) or written back: no slot
                isf_o = order >= self.file_lo
                clean = (~slotless | isf_o) & ~self.dirty[order] & ~written
                new_slot = (slotless | written) & ~isf_o
            else:
                clean = ~slotless & ~self.dirty[order] & ~written
                new_slot = slotless | written
            ok = ~new_slot | (new_slot.cumsum() <= room)  # no slot left: the page cannot leave
            if not ok.all():
                n_scan = int(np.count_nonzero(ok[:n_scan]))
                order, clean = order[ok], clean[ok]
            if budget < 0:
                async_pick = np.arange(min(async_want, len(order)))
            else:
                fits = clean | ((~clean).cumsum() <= budget)
                async_pick = np.flatnonzero(fits)[:async_want]
            is_async = np.zeros(len(order), bool)
            is_async[async_pick] = True
            rest = np.flatnonzero(~is_async)
            direct_n = max(0, self.wm_min + need - free - len(async_pick))
            if scan.whole or (len(async_pick) == async_want and len(rest) >= direct_n):
                break
            m = 2 * m  # the prefix did not decide: a longer one
        take = rest[:direct_n]
        if len(async_pick):
            take = np.concatenate([async_pick, take])
            take.sort()
        last = int(take.searchsorted(n_scan)) - 1  # the victim furthest along the scan
        if last >= 0:
            scan.commit(int(order[take[last]]))
        return order[take], is_async[take], clean[take]

    def _pin_target(self, t: float) -> int:
        """Pages the workload keeps mlocked at workload time `t` (as many as RAM allows)."""
        share = self.workload.pinned_at(t)
        if share <= 0:
            return self.base_pinned
        want = min(int(round(share * self.N)), self.memory_pages)
        cap = self.alloc_pages - self.zpool_frames - self.wm_high
        return max(self.base_pinned, min(want, max(cap, self.pinned_n)))

    def _fit(self, pages: np.ndarray, writes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the prefix of this epoch's touches whose new pages RAM can hold at once.

        A workload touching more distinct non-resident pages in one epoch than its RAM has
        frames thrashes: the rest of its touches wait for the next epoch (`pending`).
        """
        room = self.nframes - self.balloon_n
        if self._holders:
            room -= self.zpool_frames
        room -= self.pinned_n + self.wm_min
        if len(pages) <= room:
            return pages, writes
        uniq, first = np.unique(pages, return_index=True)
        new_first = np.sort(first[self.loc[uniq] != RAM])
        if len(new_first) <= room:
            return pages, writes
        cut = int(new_first[max(room, 1)])
        self.pending = (pages[cut:], writes[cut:])
        return pages[:cut], writes[:cut]

    def _async_budget(self, device: DeviceQueue, dt: float, fair: bool = False) -> int:
        """Pages the guest's background writes may put on the swap disk this epoch: its
        share of the device time the previous window left idle (with `fair`, at least its
        equal share of the device)."""
        prof = device.profile
        per_page = max(1.0 / (self.swap_cluster * prof.iops), self.page_size / prof.bandwidth)
        idle = max(0.0, 1.0 - device.util)
        if fair:
            idle = max(idle, 1.0)
        return int(idle * dt / max(1, device.users) / per_page)

    # -- window boundaries ------------------------------------------------------------------
    def start_window(self, e0: int, directives: Directives) -> None:
        """Take the host's directives for the window starting at epoch `e0`."""
        self.directives = directives
        self.shrink_left = 0
        order = directives.migration
        if order is None:
            self.migration = None  # none, or the driver ended it (done, or abandoned)
        elif self.migration is None or self.migration.order.id != order.id:
            if self.alive:
                from overcommit.migration.transfer import start, zsizes
                from overcommit.stores.codec import record_len

                tm = int(np.count_nonzero(self.slot == FRONTSWAP)) if order.send_tmem else 0
                ps = self.page_size
                zs = zsizes(self)
                self.migration = start(
                    order,
                    e0 * self.epoch_seconds,
                    self.loc,
                    self.alloc_pages,
                    ps,
                    tm,
                    record_len(self.name, "full", ps) if self.payload == "full" else ps,
                    zs,
                    self.pool.frames if zs is not None else 0,
                )
        else:
            self.migration.order.bandwidth = order.bandwidth
        self._hs_ceiling = max(self.frames.private_count, directives.frame_budget or 0)
        self.window_start = e0
        # no page was touched at or after e0 unless epochs ran ahead of it: recount then
        ahead = self.last_hi > e0
        self.active_n = int(np.count_nonzero(self.last > e0)) if ahead else 0
        self.window_new_puts = 0
        self.grown = 0
        for h in self.mechs:
            h.start_window(self, e0, directives)

    def active_pages(self) -> int:
        """Distinct pages the workload touched since the current window started (a ledger
        each epoch's touches update: pages whose last touch was before the window)."""
        return self.active_n

    # -- one epoch --------------------------------------------------------------------------
    def epoch(
        self, epoch: int, t: float, dt: float, device: DeviceQueue
    ) -> Generator[Request, Reply, EpochStats]:
        """Run one epoch; yields store requests, receives replies, returns the epoch's stats
        (the stages are in `kernel.epoch`)."""
        return _epoch.run(self, epoch, t, dt, device)

    def _account(self, dt: float, work: float, stall: float) -> None:
        """An epoch the guest was up for: its stall owed, time, and the pool's peaks."""
        self.debt += stall
        self.stall_seconds += stall
        self.alive_seconds += dt
        self.work_seconds += work
        if self.tmem_pages > self.peak_tmem_pages:
            self.peak_tmem_pages = self.tmem_pages
        billed = self.nframes - self.balloon_n + self.tmem_billed
        if billed > self.peak_billed_pages:
            self.peak_billed_pages = billed

    def _touched(self, uniq: np.ndarray, epoch: int) -> None:
        """Record this epoch's touches of `uniq` (sorted, distinct): last-touch epoch (and the
        count of pages touched in the window), referenced bits."""
        if epoch + 1 > self.window_start and jit.ENABLED:
            fresh, hits = jit.touched(
                uniq, self.last, self.ref, self.ra, epoch + 1, self.window_start, self.ra_n != 0
            )
            self.active_n += fresh
            self.last_hi = max(self.last_hi, epoch + 1)
            if hits:
                self.ra_n -= hits
                self.ra_hits_since += hits
                self.counters["readahead_hits"] += hits
            return
        if epoch + 1 > self.window_start:
            self.active_n += int(np.count_nonzero(self.last[uniq] <= self.window_start))
            self.last[uniq] = epoch + 1
        else:  # (an epoch before the window: never in a run, kept exact anyway)
            self.last[uniq] = epoch + 1
            self.active_n = int(np.count_nonzero(self.last > self.window_start))
        self.last_hi = max(self.last_hi, epoch + 1)
        self.ref[uniq] = True
        _ra.touched(self, uniq)

    def _plain(self) -> bool:
        """No page cache and no mechanism with per-epoch work of its own (`quiet_ok`)."""
        if self.has_files:
            return False
        for h in self.mechs:  # noqa: SIM110 - a loop: cheaper than all() over a generator
            if not h.quiet_ok(self):
                return False
        return True

    def _quiet_epoch(
        self,
        epoch: int,
        dt: float,
        work: float,
        pages: np.ndarray,
        writes: np.ndarray,
        uniq: np.ndarray,
        loc_u: np.ndarray,
        pin_to: int,
    ) -> EpochStats | None:
        """The rest of `epoch` when it is quiet, else None (and nothing changed).

        Quiet: a `_plain` guest, no selfshrink pending, every touched page resident or
        untouched (`loc_u`), no written page holding a swap slot, and free frames enough for
        the first touches without reclaim. Then no page leaves RAM, no store is asked anything
        and the only costs are first touches: the general path would do exactly this, with
        empty arrays everywhere else (the common case of a guest whose RAM is not full).
        """
        f_zero = uniq[loc_u == UNTOUCHED]
        need = len(f_zero)
        free = self.free_top
        async_want = self.wm_high - free if free < self.wm_low else 0
        if async_want + max(0, self.wm_min + need - free) > 0:
            return None  # reclaim wanted
        wp, wc = _counts(pages[writes])
        if len(wp) and self.slot[wp].any():
            return None  # a write frees a slot
        # apply: first touches (each untouched: the ledger moves them without a recount)
        newly_backed = self._map_in(f_zero)
        if need:
            self.census[UNTOUCHED] -= need
            self.census[RAM] += need
            self.loc[f_zero] = RAM
            self.dirty[f_zero] = True
        # apply: the touches themselves
        self.version[wp] += wc.astype(np.uint32)
        self.dirty[wp] = True
        self._touched(uniq, epoch)
        return self._quiet_stats(dt, work, len(pages), need, newly_backed, pin_to)

    def _quiet_applied(
        self,
        epoch: int,
        dt: float,
        work: float,
        n_touches: int,
        need: int,
        newly_backed: int,
        fresh: int,
        hits: int,
        pin_to: int,
    ) -> EpochStats:
        """`_quiet_epoch` after `jit.touch_pass` applied its page changes: the ledgers."""
        if need:
            self.free_top -= need
            census = self.census
            census[UNTOUCHED] -= need
            census[RAM] += need
        if newly_backed:
            self.frames.backed_count += newly_backed
            self.counters["host_frames_allocated"] += newly_backed
        if fresh:
            self.active_n += fresh
        if epoch >= self.last_hi:
            self.last_hi = epoch + 1
        if hits:
            self.ra_n -= hits
            self.ra_hits_since += hits
            self.counters["readahead_hits"] += hits
        return self._quiet_stats(dt, work, n_touches, need, newly_backed, pin_to)

    def _quiet_stats(
        self, dt: float, work: float, n_touches: int, need: int, newly_backed: int, pin_to: int
    ) -> EpochStats:
        """A quiet epoch's counters, time and stats, its page changes applied.

        Only first touches cost time (their faults and the host's allocations: every other
        stall source is 0.0, and adding 0.0 changes no sum), so an epoch without them skips
        the stall bookkeeping.
        """
        if pin_to > self.pinned_n:
            self.pinned_n = pin_to
        stall = 0.0
        if need or newly_backed:
            costs = self.costs
            sbs = self.stall_by_source
            s_zero = need * costs.minor_fault
            s_alloc = newly_backed * costs.host_page_alloc
            stall = s_zero + s_alloc  # as the general path sums its sources
            sbs["first_touch"] += s_zero
            sbs["host_alloc"] += s_alloc
            if need:
                c = self.counters
                c["first_touches"] += need
                c["faults"] += need
                self._hist_add(costs.minor_fault, need)
        self._account(dt, work, stall)
        bad = self.conservation()
        return EpochStats(
            True,
            work,
            stall,
            n_touches,
            need,
            violations=[("conservation", m) for m in bad] if bad else [],
        )

    # -- mechanism steps inside an epoch ----------------------------------------------------
    def _leave_versions(self, pages: np.ndarray, wp: np.ndarray, wc: np.ndarray) -> np.ndarray:
        """Versions pages leave RAM with: their own, plus this epoch's writes to them (a
        thrashing guest reclaims pages it has just written); `wp` sorted, `wc` its counts."""
        vers = self.version[pages].copy()
        if len(pages) and len(wp):
            hit = wp.searchsorted(pages)
            was_written = (hit < len(wp)) & (wp[np.minimum(hit, len(wp) - 1)] == pages)
            vers[was_written] += wc[hit[was_written]].astype(np.uint32)
        return vers

    def progress(self) -> float:
        return self.work_seconds / self.alive_seconds if self.alive_seconds else 0.0
