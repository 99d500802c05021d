"""A guest kernel's memory: where each page is, reclaim, swap, faults, OOM — vectorised.

Every page of the workload's footprint is, from the guest's point of view, in exactly one place
(`loc`): untouched, guest RAM, frontswap (host tmem), the swap disk, the compressed pool
(zswap/zram), or, for the workload's file-backed page cache (its `file_cache` share, the last
pages of the footprint), `FILE`: dropped from RAM, its content on the guest's file disk. A file
page is read from that disk on first use and on a miss (or got back from the host's ephemeral
pool under cleancache), is clean until written, and on reclaim is dropped, or written back to
its file first when dirty; it never takes a swap slot. A page may also hold a swap *slot*
(`slot`): pages in frontswap, on disk or in the
pool always do; a resident page keeps the slot it was read from while it stays clean (the swap
cache), so evicting it again costs no I/O. A write frees the slot (frontswap invalidate, a
discard on disk or in zram), as Linux does when it reuses a swap-cache page. Resident pages
occupy guest-physical frames taken from a free stack; frames can also be held by the balloon or
by the compressed pool. The host backs frames with RAM, or has paged them out to its own swap
(`nodes.host.GuestFrames`); that table travels with the guest, and the host steers it only
through each window's `Directives`.

Reclaim picks cold pages by a named LRU approximation (`lru`: exact last-touch epoch; `clock`:
second chance over referenced bits). Below the low watermark kswapd reclaims asynchronously up
to the high watermark (no stall, device bandwidth used); a fault that would take free memory
below the min watermark reclaims synchronously (direct reclaim: the guest stalls). A balloon
that wants frames the guest does not have free presses kswapd the same way. Swap-in reads ahead
an aligned cluster of `readahead` pages from disk. When neither RAM nor swap has room the OOM
killer ends the workload, which restarts after `oom_restart` seconds; when the host cannot
place the guest's frames (host swap full) the host's OOM killer ends the whole guest.

Mechanisms switch behaviours on through `features` (see `nodes.mechanism`); their guest-side
state lives in helper objects from their own modules (`BalloonDriver`, `SelfballoonWorker`,
`DiskCache`, `CompressedPool`).

An epoch runs as a generator (`GuestModel.epoch`) that yields at most two batched store
requests and receives their replies, so the model never touches Redis itself: the runtime that
drives it (inline or Ray) executes the requests with whichever client it has. Phase 1 carries
tmem gets/flushes/puts, swap-disk reads/frees/writes, disk-cache operations, ephemeral-pool
gets/puts and file-disk reads/write-backs; phase 2, after the epoch's changes are applied,
carries what depends on phase 1 (refused puts, cache write-backs, file reads of cleancache
misses) and the host's swap-ins and swap-outs of the guest's frames.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.nodes.host import F_HSWAP, F_RAM, NO_PAGE, Directives, GuestFrames
from overcommit.profiles import Costs, DeviceQueue
from overcommit.rng import stream
from overcommit.stores.codec import RecordBatch, is_common, make_batch, verify
from overcommit.workloads import TouchStreams, make_workload

UNTOUCHED, RAM, FRONTSWAP, SWAP, ZPOOL, FILE = 0, 1, 2, 3, 4, 5
NLOC = 6
NO_SLOT = 0
SWAP_CLUSTER = 32  # pages per write I/O in reclaim (SWAP_CLUSTER_MAX)
BALLOONING = frozenset({"balloon", "selfballoon"})
ZERO_PAGE_KEY = np.uint64(0x2E20)  # page-sharing: the key of the zero page in digest mode

# Fault-latency histogram: log-spaced bins from 100 ns to 100 s, 20 per decade.
HIST_LO, HIST_PER_DECADE, HIST_DECADES = 1e-7, 20, 9
HIST_BINS = HIST_PER_DECADE * HIST_DECADES + 2

STALL_SOURCES = (
    "first_touch",
    "host_alloc",
    "frontswap_get",
    "frontswap_flush",
    "swap_read",
    "reclaim_put",
    "reclaim_write",
    "zpool_load",
    "compress",
    "host_swap_read",
    "cow_break",
    "file_read",
    "cleancache_get",
    "migration",  # live migration: the stop-and-copy pause, auto-converge throttling, remote faults
)

COUNTERS = (
    "touches",
    "faults",
    "major_faults",
    "first_touches",
    "disk_reads",
    "disk_writes",
    "disk_read_ops",
    "disk_write_ops",
    "disk_frees",
    "frontswap_puts",
    "frontswap_put_failures",
    "frontswap_gets",
    "frontswap_flushes",
    "frontswap_invalidated",
    "frontswap_dedup_puts",
    "readahead_pages",
    "evictions",
    "direct_reclaims",
    "lost_pages",
    "stale_reads",
    "guest_oom_kills",
    "host_frames_allocated",
    # balloon / selfballoon
    "balloon_inflated",
    "balloon_deflated",
    "selfshrink_pages",
    # host-swap
    "host_swap_ins",
    "host_swap_outs",
    "double_swaps",
    "host_oom_kills",
    # cached-disk
    "cache_hits",
    "cache_writebacks",
    "cache_dropped",
    "cache_write_through",
    # zswap / zram
    "zpool_stores",
    "zpool_loads",
    "zpool_rejects",
    "zpool_writebacks",
    "zpool_same_filled",
    "zpool_discards",
    # page-sharing
    "pages_merged",
    "cow_breaks",
    # file-backed page cache (workload.file_cache) and cleancache
    "file_reads",
    "file_read_ops",
    "file_writes",
    "file_write_ops",
    "file_drops",
    "cleancache_puts",
    "cleancache_put_failures",
    "cleancache_hits",
    "cleancache_misses",
    "cleancache_evictions",
    # failover: pool pages a cooperative guest moved to its swap disk when the host asked
    "tmem_shrink_pages",
)

#: What a guest carries from one incarnation to the next (its run-long accounting).
CARRY_FLOATS = (
    "alive_seconds",
    "work_seconds",
    "stall_seconds",
    "downtime_seconds",
    "balloon_lag_seconds",
)


def _hist_bins(lat: np.ndarray) -> np.ndarray:
    b = np.floor(np.log10(np.maximum(lat, HIST_LO * 0.5) / HIST_LO) * HIST_PER_DECADE) + 1
    return np.clip(b, 0, HIST_BINS - 1).astype(np.int64)


_HIST_BIN: dict[float, int] = {}  # latency -> its histogram bin (a memo of `_hist_bins`)


def hist_percentile(hist: np.ndarray, q: float) -> float:
    """The q-quantile (0..1) of a fault-latency histogram, as the upper edge of its bin."""
    n = int(hist.sum())
    if n == 0:
        return 0.0
    idx = int(np.searchsorted(np.cumsum(hist), math.ceil(q * n)))
    return HIST_LO * 10 ** (idx / HIST_PER_DECADE)


@dataclass
class TmemOps:
    """One guest's batch against its host's tmem pool (executed atomically, in this order)."""

    gets: np.ndarray
    flushes: np.ndarray
    puts: RecordBatch | None
    quota: int
    capacity: int
    exclusive_gets: bool
    flush_area: bool = False
    costs: np.ndarray | None = None  # bytes billed per put (compressing/deduplicating pool)
    room: int = 0  # bytes the guest may still add, with `costs`


@dataclass
class SwapOps:
    """One guest's batch against its swap disk in shared storage: reads, frees, writes."""

    reads: np.ndarray
    frees: np.ndarray
    writes: RecordBatch | None
    drop: bool = False
    wait: bool = True  # False: writes only (no reads, frees), whose reply the guest never reads


@dataclass
class HostSwapOps:
    """The host's swap-ins, discards and swap-outs of one guest's frames (host's Redis)."""

    reads: np.ndarray
    frees: np.ndarray
    write_frames: np.ndarray
    writes: RecordBatch | None
    quota: int
    capacity: int
    drop: bool = False


@dataclass
class CacheOps:
    """One epoch's operations on the host cache of the guest's virtual disk (host's Redis)."""

    reads: np.ndarray
    frees: np.ndarray
    writeback: np.ndarray
    drops: np.ndarray
    inserts: RecordBatch | None
    drop: bool = False


@dataclass
class EphOps:
    """One guest's batch against its host's ephemeral pool (cleancache): exclusive gets, then
    puts; the pool first drops what lies beyond `quota`."""

    gets: np.ndarray
    puts: RecordBatch | None
    quota: int
    flush_area: bool = False


@dataclass
class Request:
    guest: str
    host: str
    disk: str
    tmem: TmemOps | None = None
    swap: SwapOps | None = None
    hswap: HostSwapOps | None = None
    cache: CacheOps | None = None
    eph: EphOps | None = None
    files: SwapOps | None = None  # the guest's file disk (shared storage), see `files_disk`

    @property
    def files_disk(self) -> str:
        """The disk holding the guest's files (page cache written back), next to its swap."""
        return f"{self.disk}/files"

    def empty(self) -> bool:
        return (
            self.tmem is None
            and self.swap is None
            and self.hswap is None
            and not self.cache
            and self.eph is None
            and self.files is None
        )


@dataclass
class Reply:
    """What the stores answered; fields mirror the store adapters' result objects."""

    tmem: Any = None  # TmemBatchResult
    swap: Any = None  # SwapBatchResult
    hswap: Any = None  # HostSwapResult
    cache: Any = None  # CacheBatchResult
    eph: Any = None  # EphBatchResult
    files: Any = None  # SwapBatchResult of the file disk
    area_flushed: int = 0
    eph_flushed: int = 0
    dropped: int = 0


@dataclass
class EpochStats:
    """One guest-epoch, as recorded in the time series."""

    alive: bool
    work: float = 0.0
    stall: float = 0.0
    touches: int = 0
    faults: int = 0
    disk_reads: int = 0
    disk_writes: int = 0
    puts: int = 0
    put_failures: int = 0
    gets: int = 0
    dev_ops: int = 0  # operations and bytes this guest put on the shared storage device
    dev_bytes: int = 0
    hswap_ops: int = 0  # operations and bytes on the host's swap device
    hswap_bytes: int = 0
    host_swap_ins: int = 0
    double_swaps: int = 0
    file_reads: int = 0  # page-cache pages read from the guest's file disk
    cleancache_hits: int = 0
    violations: list[tuple[str, str]] = field(default_factory=list)  # (checker, message)


_E = np.empty(0, np.uint32)
_EI = np.empty(0, np.int64)


class GuestModel:
    """A guest kernel's memory state and its workload. Pure Python + numpy."""

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
        self.uses_tmem = "tmem" in features
        self.exclusive_gets = exclusive_gets
        self.boot = boot
        self.eager = boot == "eager"
        self.workload = make_workload(spec.workload, page_size)
        self.N = self.workload.footprint
        # pages [file_lo, N) are file-backed page cache (the workload's file_cache share)
        self.file_lo = self.N - self.workload.file_pages
        self.has_files = self.workload.file_pages > 0
        self.memory_pages = spec.memory // page_size
        self.maxmem_pages = spec.maxmem // page_size
        # a ballooning or host-swapped guest sees maxmem of guest-physical RAM
        grows = bool(features & (BALLOONING | {"host_swap"}))
        self.nframes = max(self.memory_pages, self.maxmem_pages) if grows else self.memory_pages
        self.swap_slots = spec.swap // page_size
        # pages [0, pinned_n) are mlocked: the guest's `pinned` share, or more while a phase
        # pins more (mlock faults them in; they never leave RAM until unpinned)
        self.base_pinned = min(int(round(spec.pinned * self.N)), self.memory_pages)
        self.pinned_n = self.base_pinned
        self.readahead = int(spec.readahead)
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
        self.migration: Any = None  # MigrationState while a live migration runs (nodes.migration)
        self.down_until = 0.0
        self.directives = Directives()
        self._hs_ceiling = 0
        self.tmem_pages = 0  # the guest's pool size as the host's Redis reported it
        self.window_new_puts = 0
        self.window_start = 0  # first epoch of the current window
        self.next_epoch = 0  # first epoch of the next window
        self.grown = 0  # allocation growth used out of this window's grant
        self.census = np.zeros(NLOC, np.int64)  # pages per location after the last epoch
        self.peak_tmem_pages = 0
        self.peak_billed_pages = 0
        self.unuse_left = 0  # selfshrink: frontswap pages still to bring back
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
        """Pages of host RAM billed to the guest for its pool pages (its pool pages, unless
        the pool compresses or deduplicates)."""
        return self.billing.billed_pages if self.billing is not None else self.tmem_pages

    # -- mechanisms -------------------------------------------------------------------------
    def _init_mechanisms(self) -> None:
        f, sc, ps = self.features, self.settings, self.page_size
        self.balloon = None
        self.selfballoon = None
        # a ballooning guest boots with the balloon holding what lies above its memory
        self.initial_balloon = self.nframes - self.memory_pages if f & BALLOONING else 0
        self.min_alloc = self.nframes
        if f & BALLOONING:
            from overcommit.nodes.balloon import driver_profile, max_share

            # the largest balloon: a share of the frames (vSphere's 65%), or for a self-
            # ballooning guest its own floor
            share = max_share(sc)
            self.min_alloc = min(self.memory_pages, max(1, math.ceil(self.nframes * (1.0 - share))))
            if "selfballoon" in f and self.spec.cooperative:
                from overcommit.config import SelfballoonSettings
                from overcommit.nodes.selfballoon import SelfballoonWorker

                cfg = getattr(sc, "selfballoon", None) or SelfballoonSettings()
                self.selfballoon = SelfballoonWorker(
                    cfg, ps, self.nframes, self.wm_high, shrink=self.uses_tmem
                )
                self.min_alloc = min(self.memory_pages, self.selfballoon.floor)
            self.min_alloc = max(self.min_alloc, self.pinned_n + self.wm_high)
            coop = float(getattr(self.spec, "cooperation", 1.0))
            if not self.spec.cooperative:
                coop = 0.0
            self._balloon_args = (driver_profile(sc), ps, self.nframes - self.min_alloc, coop)
        self.cache = None
        if "cached_disk" in f:
            from overcommit.config import CachedDiskSettings
            from overcommit.nodes.cached_disk import DiskCache

            cfg = getattr(sc, "cached_disk", None) or CachedDiskSettings()
            self.cache = DiskCache(self.N, cfg, self.epoch_seconds)
        self.pool = None
        self.zram_slots = 0
        if f & {"zswap", "zram"}:
            from overcommit.config import ZramSettings, ZswapSettings
            from overcommit.nodes.zswap import CompressedPool

            kind = "zswap" if "zswap" in f else "zram"
            default = ZswapSettings() if kind == "zswap" else ZramSettings()
            cfg = getattr(sc, kind, None) or default
            self.pool = CompressedPool(
                kind,
                self.N,
                ps,
                cfg,
                self.payload,
                self.workload.compressibility,
                self.name,
                self.memory_pages,
            )
            self.zram_slots = self.pool.slots if kind == "zram" else 0
        self.host_swap = "host_swap" in f
        self.sharing = "page_sharing" in f
        self.cleancache = "cleancache" in f
        self.eph_pages = 0  # the guest's ephemeral pool size as the host's Redis reported it
        self.eph_demand = 0  # cleancache puts in the current window
        self.ksm_hand = 0
        self.ksm_candidates: list[np.ndarray] = []
        self.ksm_key = np.zeros(self.nframes, np.uint64)  # key each frame was last reported with
        self.win_version = np.zeros(self.N, np.uint32)
        self.hs_rng = stream(self.seed, f"{self.host}/{self.name}", self.incarnation, "hostswap")
        self.billing = None  # a compressing or deduplicating persistent pool's bill
        tm = getattr(getattr(sc, "hosts", None), "tmem", None)
        if self.uses_tmem and tm is not None and (tm.compress or tm.dedup):
            from overcommit.nodes.frontswap import PoolBilling

            self.billing = PoolBilling(
                self.N,
                ps,
                tm.compress,
                tm.dedup,
                self.payload,
                self.workload.compressibility,
                self.name,
            )
        # a compressing pool's puts and gets cost this many times theirs (Xen: ~10x CPU)
        compressing = self.billing is not None and self.billing.compress
        self.tm_factor = self.costs.tmem_compress_factor if compressing else 1.0

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
        return self.pool.frames if self.pool is not None else 0

    def _boot(self) -> None:
        """The guest (re)boots: frames backed per `boot`, the balloon at its boot size."""
        self.frames = GuestFrames(self.nframes, eager=self.eager)
        self.balloon_stack = np.zeros(self.nframes, np.int32)
        self.balloon_n = 0
        if self.initial_balloon:
            held = np.arange(self.memory_pages, self.nframes, dtype=np.int32)
            self.balloon_stack[: len(held)] = held
            self.balloon_n = len(held)
            self.frames.release(held.astype(np.int64))
        self.balloon = None
        if self.features & BALLOONING:
            from overcommit.nodes.balloon import BalloonDriver

            prof, ps, max_size, coop = self._balloon_args
            self.balloon = BalloonDriver(prof, ps, self.balloon_n, max_size, coop)
        self.zp_stack = np.zeros(self.nframes, np.int32)
        if self.pool is not None:
            self.pool.reset()
        if self.cache is not None:
            self.cache.drop_all()
        self._reset_memory()

    def _reset_memory(self) -> None:
        """Fresh workload state: nothing touched, every unballooned frame free, new streams."""
        n = self.N
        self.loc = np.zeros(n, np.int8)
        self.slot = np.zeros(n, np.int8)
        self.census = np.zeros(NLOC, np.int64)  # ledger: pages per location
        self.census[UNTOUCHED] = n
        self.slot_census = np.zeros(NLOC, np.int64)  # ledger: pages per slot kind
        self.slot_census[NO_SLOT] = n
        self.dirty = np.zeros(n, bool)  # resident and written since it last left RAM
        self.version = np.zeros(n, np.uint32)
        self.frame = np.full(n, -1, np.int32)
        self.fpage = np.full(self.nframes, -1, np.int64)  # frame -> page it holds
        self.last = np.zeros(n, np.int64)  # last touched epoch + 1 (lru)
        self.last_hi = 0  # the largest value in `last`
        self.active_n = 0  # pages with last > window_start (see active_pages)
        self.ref = np.zeros(n, bool)  # referenced bit (clock)
        self.hand = 0
        if self.pool is not None:
            self.pool.reset()
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
        victims are chosen, given the victim furthest along the order.
        """
        if self.spec.lru == "lru":
            mask = self.loc == RAM
            mask[: self.pinned_n] = False
            mask[exclude] = False
            cand = np.flatnonzero(mask)
            if len(cand) == 0:
                return _OrderScan(_EI)
            key = self.last[cand] * self.N + cand  # unique: ties broken by page index
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
            if not scan.complete and free + len(order) < need:
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
            if scan.complete or (len(async_pick) == async_want and len(rest) >= direct_n):
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
        room = self.alloc_pages - self.zpool_frames - self.pinned_n - self.wm_min
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
        per_page = max(1.0 / (SWAP_CLUSTER * prof.iops), self.page_size / prof.bandwidth)
        idle = max(0.0, 1.0 - device.util)
        if fair:
            idle = max(idle, 1.0)
        return int(idle * dt / max(1, device.users) / per_page)

    # -- window boundaries ------------------------------------------------------------------
    def start_window(self, e0: int, directives: Directives) -> None:
        """Take the host's directives for the window starting at epoch `e0`."""
        self.directives = directives
        self.shrink_left = directives.tmem_shrink if self.cooperative and self.uses_tmem else 0
        order = directives.migration
        if order is None:
            self.migration = None  # none, or the driver ended it (done, or abandoned)
        elif self.migration is None or self.migration.order.id != order.id:
            if self.alive:
                from overcommit.migration.transfer import start

                tm = int(np.count_nonzero(self.slot == FRONTSWAP)) if order.send_tmem else 0
                self.migration = start(
                    order, e0 * self.epoch_seconds, self.loc, self.alloc_pages, self.page_size, tm
                )
        else:
            self.migration.order.bandwidth = order.bandwidth
        self._hs_ceiling = max(self.frames.private_count, directives.frame_budget or 0)
        self.window_start = e0
        # no page was touched at or after e0 unless epochs ran ahead of it: recount then
        ahead = self.last_hi > e0
        self.active_n = int(np.count_nonzero(self.last > e0)) if ahead else 0
        self.window_new_puts = 0
        self.eph_demand = 0
        self.grown = 0
        if self.billing is not None:  # what the host's shared store now holds costs nothing
            self.billing.rebase(directives.tmem_shared, np.flatnonzero(self.slot == FRONTSWAP))
        if self.balloon is not None and self.selfballoon is None:
            self.balloon.request(self.nframes, directives.alloc_target)
        if self.cache is not None:
            self.cache.budget = directives.cache_budget
            self.cache.demand = 0
        if self.host_swap and directives.hswap_scan:
            self.frames.scan()
        if self.sharing:
            self._ksm_merge_reported(directives)
            self.ksm_candidates = []
            self.win_version = self.version.copy()

    def active_pages(self) -> int:
        """Distinct pages the workload touched since the current window started (a ledger
        each epoch's touches update: pages whose last touch was before the window)."""
        return self.active_n

    # -- one epoch --------------------------------------------------------------------------
    def epoch(
        self, epoch: int, t: float, dt: float, device: DeviceQueue
    ) -> Generator[Request, Reply, EpochStats]:
        """Run one epoch; yields store requests, receives replies, returns the epoch's stats."""
        if not self.alive:
            self.downtime_seconds += dt
            if t + dt >= self.down_until - 1e-9:
                self.alive = True
            return EpochStats(alive=False)
        c = self.counters
        ps = self.page_size
        costs = self.costs
        d = self.directives
        pool = self.pool
        cache = self.cache
        consumed = min(self.debt, dt)
        self.debt -= consumed
        work = dt - consumed
        mig = self.migration
        if mig is not None and mig.throttle and mig.active:  # auto-converge throttles the CPU
            throttled = work * mig.throttle
            work -= throttled
            self.stall_seconds += throttled
            self.stall_by_source["migration"] += throttled
        wl_t = self.wl_epochs * dt
        pages, writes = self.workload.touches(self.rng, wl_t, work)
        self.wl_epochs += 1
        if self.pending is not None:
            pages = np.concatenate([self.pending[0], pages])
            writes = np.concatenate([self.pending[1], writes])
            self.pending = None
        pin_to = self._pin_target(wl_t)
        if pin_to > self.pinned_n:  # mlock faults the newly pinned pages in
            newpin = np.arange(self.pinned_n, pin_to)
            pages = np.concatenate([newpin, pages])
            writes = np.concatenate([np.zeros(len(newpin), bool), writes])
        elif pin_to < self.pinned_n:  # munlock: the pages become ordinary
            self.pinned_n = pin_to
        pages, writes = self._fit(pages, writes)
        if mig is not None and mig.active:
            from overcommit.migration.transfer import advance

            pause = advance(mig, t, dt, t + consumed, pages, writes, self.loc)
            if pause:  # stop-and-copy or remote faults: the guest owes the time
                self.debt += pause
                self.stall_seconds += pause
                self.stall_by_source["migration"] += pause
        c["touches"] += len(pages)
        uniq = _unique(pages)
        loc_u = self.loc[uniq]
        if self.unuse_left <= 0 and self._plain() and (len(uniq) == 0 or int(loc_u.max()) <= RAM):
            quiet = self._quiet_epoch(epoch, dt, work, pages, writes, uniq, loc_u, pin_to)
            if quiet is not None:
                return quiet
        untouched = loc_u == UNTOUCHED
        f_fnew = f_file = _EI
        if self.has_files:  # page cache: first reads and misses come from the guest's disk
            isf_u = uniq >= self.file_lo
            f_fnew = uniq[untouched & isf_u]
            f_file = uniq[loc_u == FILE]
            untouched &= ~isf_u
        f_zero = uniq[untouched]
        f_fs = uniq[loc_u == FRONTSWAP]
        f_z = uniq[loc_u == ZPOOL]
        f_sw = uniq[loc_u == SWAP]
        # swap-in reads an aligned cluster around each disk fault
        ra = self.readahead
        if len(f_sw):
            clusters = _unique(f_sw // ra)
            reads = (clusters[:, None] * ra + np.arange(ra)).ravel()
            reads = reads[reads < self.N]
            reads = reads[self.loc[reads] == SWAP]
        else:
            clusters = np.empty(0, np.int64)
            reads = f_sw

        # self-ballooning worker (and frontswap self-shrink) at its interval
        if self.selfballoon is not None and self.selfballoon.ticks(t, dt):
            sb = self.selfballoon
            committed = self.N - int(np.count_nonzero(self.loc == UNTOUCHED))
            target = sb.target(self.alloc_pages, committed, self.tmem_pages)
            self.balloon.set_own_goal(self.nframes - target)
            keep = sb.selfshrink(self.tmem_pages)
            if keep is not None:
                self.unuse_left = max(0, self.tmem_pages - keep)
        unuse_in, unuse_fl = _EI, _EI
        need0 = len(f_zero) + len(f_fs) + len(f_z) + len(reads) + len(f_fnew) + len(f_file)
        if self.unuse_left > 0:
            unuse_in, unuse_fl = self._unuse_pick(uniq, need0)
        need = need0 + len(unuse_in)

        # slots freed this epoch: written pages, faulted ones when swap is full, selfshrink
        swap_full = 2 * (self.slots_used + self.zslots_used) > self.swap_slots + self.zram_slots
        wp, wc = _counts(pages[writes])
        wset = wp
        free_slot = wset[self.slot[wset] != NO_SLOT]
        if swap_full:
            free_slot = np.union1d(free_slot, np.union1d(np.union1d(f_fs, f_sw), f_z))
        if pool is not None and pool.kind == "zswap" and len(f_z):  # exclusive loads
            free_slot = np.union1d(free_slot, f_z)
        if len(unuse_in) or len(unuse_fl):
            free_slot = np.union1d(free_slot, np.union1d(unuse_in, unuse_fl))
        excl_got = f_fs
        if self.exclusive_gets and len(unuse_in):
            excl_got = np.union1d(f_fs, unuse_in)
        if self.exclusive_gets and len(excl_got) and len(free_slot):
            # an exclusive get already removed the copy (both sorted and distinct)
            free_slot = free_slot[~_member(free_slot, excl_got)]
        slot_f = self.slot[free_slot]
        fs_flush = free_slot[slot_f == FRONTSWAP]
        sw_free = free_slot[slot_f == SWAP]
        z_free = free_slot[slot_f == ZPOOL]

        # the balloon's wish for frames this epoch presses kswapd when free frames run short
        free = self.free_top
        pressure = free < self.wm_high
        bal_want = 0
        if self.balloon is not None and self.balloon.goal > self.balloon.size:
            bal_want = min(
                self.balloon.goal - self.balloon.size, self.balloon.allowance(t, dt, pressure)
            )

        # reclaim: kswapd (async) toward the high watermark, as far as the disk lets it write;
        # then direct reclaim (sync) for whatever the faults still need above the min watermark
        async_want = self.wm_high - free if free < self.wm_low else 0
        if bal_want:
            async_want = max(async_want, self.wm_high + bal_want - free)
        want = async_want + max(0, self.wm_min + need - free)
        if pool is not None and d.compress:
            ratio = pool.frames_per_page()
            want = int(math.ceil(want / max(0.05, 1.0 - ratio)))
        freed_disk = int(np.count_nonzero(self.slot[free_slot] != ZPOOL)) if self.zram_slots else 0
        if not self.zram_slots:
            room = self.swap_slots - self.slots_used + len(free_slot)
        else:
            freed_z = len(free_slot) - freed_disk
            room = (self.swap_slots - self.slots_used + freed_disk) + (
                self.zram_slots - self.zslots_used + freed_z
            )
        budget = -1  # kswapd's write budget: -1 when it may put (tmem) or compress anything
        if not (self.uses_tmem or (pool is not None and d.compress)):
            budget = self._async_budget(device, dt)
            if cache is not None:
                budget += max(0, cache.budget - cache.count)
        if want <= 0:  # nothing to reclaim: no scan (and no exclusion set to build)
            victims, is_async, clean = _EI, np.zeros(0, bool), np.zeros(0, bool)
        else:
            exclude = np.union1d(uniq, unuse_in) if len(unuse_in) else uniq
            scan = self._reclaim_order(want, exclude)
            victims, is_async, clean = self._pick_victims(
                scan, want, uniq, loc_u, pin_to, wset, free, need, async_want, room, budget
            )
        fvict = f_wb = _EI
        f_wb_async = np.zeros(0, bool)
        if self.has_files:  # page-cache victims: dropped if clean, else written to their file
            isf_v = victims >= self.file_lo
            fvict = victims[isf_v]
            f_wb = victims[isf_v & ~clean]
            f_wb_async = is_async[isf_v & ~clean]
            anon = ~clean & ~isf_v
            dirty = victims[anon]
            dirty_async = is_async[anon]
        else:
            dirty = victims[~clean]
            dirty_async = is_async[~clean]

        # versions the dirty victims leave with (a thrash victim was written this epoch)
        batch = None
        vers = self.version[dirty].copy()
        if len(dirty):
            if len(wp):
                hit = wp.searchsorted(dirty)
                was_written = (hit < len(wp)) & (wp[np.minimum(hit, len(wp) - 1)] == dirty)
                vers[was_written] += wc[hit[was_written]].astype(np.uint32)
            batch = self._batch(dirty, vers)

        # the compressed pool takes what it can; zram keeps what it cannot take resident
        to_pool = np.zeros(len(dirty), bool)
        pool_sizes = _EI
        pool_growth = 0
        zswap_wb = _EI
        if pool is not None and d.compress and len(dirty):
            disk_room = self.swap_slots - self.slots_used
            disk_room += freed_disk if self.zram_slots else len(free_slot)
            to_pool, pool_sizes, kept, pool_growth = self._pool_decide(
                dirty, vers, batch, free + len(victims) - need, disk_room, z_free
            )
            if kept.any():  # zram could not take them: the writes failed, pages stay
                keep_pages = dirty[kept]
                mask = ~np.isin(victims, keep_pages)
                victims, is_async, clean = victims[mask], is_async[mask], clean[mask]
                sel = ~kept
                dirty, dirty_async, vers = dirty[sel], dirty_async[sel], vers[sel]
                to_pool, pool_sizes = to_pool[sel], pool_sizes[sel]
                batch = batch.take(np.flatnonzero(sel)) if batch is not None else None
        if pool is not None and pool.kind == "zswap" and pool.limit_hit:
            zswap_wb = self._zswap_writeback_pick(device, dt, np.union1d(uniq, z_free))
        if free + len(victims) - pool_growth < need:
            extra = np.setdiff1d(reads, f_sw, assume_unique=True)
            short = need - free - len(victims) + pool_growth
            if len(extra) < short:  # neither RAM nor swap has room
                return (yield from self._oom_kill(t, dt, work, len(pages)))
            reads = np.setdiff1d(reads, extra[len(extra) - short :], assume_unique=True)
            need = len(f_zero) + len(f_fs) + len(f_z) + len(reads) + len(unuse_in)
            need += len(f_fnew) + len(f_file)
        n_direct = int(np.count_nonzero(~is_async))
        if n_direct:
            c["direct_reclaims"] += 1

        # page-cache victims: dirty ones are written back to their file; with cleancache every
        # one (clean by then) is put into the host's ephemeral pool
        fwb_batch = cc_puts = None
        if len(fvict):
            f_vers = self._leave_versions(fvict, wp, wc)
            if self.cleancache:
                cc_puts = self._batch(fvict, f_vers)
                if len(f_wb):
                    fwb_batch = cc_puts.take(np.flatnonzero(np.isin(fvict, f_wb)))
            elif len(f_wb):
                wbm = np.isin(fvict, f_wb)
                fwb_batch = self._batch(fvict[wbm], f_vers[wbm])

        # where the dirty victims go: tmem puts, the pool, or the disk (maybe host-cached)
        disk_mask = ~to_pool
        disk_batch = None
        wb_batch = None
        if len(zswap_wb):
            wb_batch = self._batch(zswap_wb, self.version[zswap_wb])
        if not self.uses_tmem and batch is not None and disk_mask.any():
            disk_batch = batch if disk_mask.all() else batch.take(np.flatnonzero(disk_mask))
        disk_pages = dirty[disk_mask] if not self.uses_tmem else _EI
        disk_sync = ~dirty_async[disk_mask] if not self.uses_tmem else np.zeros(0, bool)

        # phase 1: tmem gets/flushes/puts, disk reads/frees/writes, disk-cache operations
        req = Request(self.name, self.host, self.disk)
        gets = np.union1d(f_fs, unuse_in) if len(unuse_in) else f_fs
        if self.uses_tmem and (len(gets) or len(fs_flush) or batch is not None):
            req.tmem = TmemOps(
                gets=gets.astype(np.uint32),
                flushes=fs_flush.astype(np.uint32),
                puts=batch,
                quota=d.tmem_quota,
                capacity=d.tmem_capacity,
                exclusive_gets=self.exclusive_gets,
            )
        bl = self.billing
        if bl is not None and req.tmem is not None:  # the pool bills what pages take
            leaving = np.union1d(fs_flush, excl_got) if self.exclusive_gets else fs_flush
            if batch is not None:
                put_sizes = bl.stored_sizes(batch.payload, len(batch))
                put_keys = self._put_keys(dirty, vers, batch)
                req.tmem.costs = bl.costs(put_sizes, put_keys)
                req.tmem.room = d.tmem_quota * ps - (bl.bill - bl.removal(leaving))
        step = None
        through_batch = disk_batch
        disk_reads_dev = reads
        if cache is not None:
            cwrites = disk_pages if disk_batch is not None else _EI
            wb_limit = self._async_budget(device, dt, fair=cache.count > cache.budget)
            step = cache.plan(epoch, sw_free, reads, cwrites, wb_limit)
            ins = disk_batch.take(np.flatnonzero(step.cached)) if disk_batch is not None else None
            through_batch = (
                disk_batch.take(np.flatnonzero(~step.cached)) if disk_batch is not None else None
            )
            if through_batch is not None and len(through_batch) == 0:
                through_batch = None
            if ins is not None and len(ins) == 0:
                ins = None
            disk_reads_dev = reads[~step.hits]
            req.cache = CacheOps(
                reads[step.hits].astype(np.uint32),
                step.frees.astype(np.uint32),
                step.writeback.astype(np.uint32),
                step.drops.astype(np.uint32),
                ins,
            )
        phase1_writes = _concat_batches(through_batch, wb_batch)
        if len(disk_reads_dev) or len(sw_free) or phase1_writes is not None:
            req.swap = SwapOps(
                disk_reads_dev.astype(np.uint32), sw_free.astype(np.uint32), phase1_writes
            )
        # the page cache: gets from the ephemeral pool (cleancache), else reads from the file
        # disk; write-backs to the file disk. A page never written since the workload began
        # holds its file's original content (version 0): nothing is stored for it to read.
        cc_gets = f_file if self.cleancache else _EI
        if self.cleancache and (
            len(cc_gets) or cc_puts is not None or self.eph_pages > d.ephemeral_quota
        ):
            req.eph = EphOps(cc_gets.astype(np.uint32), cc_puts, d.ephemeral_quota)
        f_rd1 = _EI if self.cleancache else f_file[self.version[f_file] > 0]
        if len(f_rd1) or fwb_batch is not None:
            req.files = SwapOps(f_rd1.astype(np.uint32), _E, fwb_batch)
        reply = (yield req) if not req.empty() else Reply()
        violations: list[tuple[str, str]] = []
        f_miss = f_file  # page-cache misses the guest's disk serves
        cc_ok = np.zeros(len(fvict) if cc_puts is not None else 0, bool)
        if req.eph is not None:
            r = reply.eph
            hit = np.asarray(r.found, bool)
            got = r.got
            found = np.ones(len(got), bool)
            where = "the ephemeral pool"
            self._check_read(got.pages.astype(np.int64), found, got, where, violations)
            f_miss = cc_gets[~hit]
            if cc_puts is not None:
                cc_ok = np.asarray(r.put_ok, bool)
                self.eph_demand += len(cc_puts)
            c["cleancache_hits"] += len(cc_gets) - len(f_miss)
            c["cleancache_misses"] += len(f_miss)
            c["cleancache_puts"] += int(np.count_nonzero(cc_ok))
            c["cleancache_put_failures"] += len(cc_ok) - int(np.count_nonzero(cc_ok))
            c["cleancache_evictions"] += int(r.dropped)
            self.eph_pages = int(r.guest_pages)
        if req.files is not None and len(f_rd1):
            rf = reply.files
            self._check_read(f_rd1, rf.found, rf.got, "the file disk", violations)
        # misses are read in phase 2, after this epoch's writes: keep the versions they expect
        f_rd2, f_rd2_ver = _EI, None
        if self.cleancache and len(f_miss):
            v = self.version[f_miss]
            f_rd2, f_rd2_ver = f_miss[v > 0], v[v > 0]

        put_ok = np.zeros(len(dirty), bool)
        if req.tmem is not None:
            r = reply.tmem
            self._check_read(gets, r.found, r.got, "frontswap", violations)
            if batch is not None:
                put_ok = np.asarray(r.put_ok, bool)
            got_fs = r.found if gets is f_fs else r.found[_member(gets, f_fs)]
            c["frontswap_gets"] += int(np.count_nonzero(got_fs))
            c["frontswap_flushes"] += int(r.flushed)
            c["frontswap_invalidated"] += int(r.invalidated)
            self.tmem_pages = int(r.guest_pages)
            if bl is not None:
                bl.remove(leaving)
                if batch is not None:
                    ok = put_ok
                    bl.add(dirty[ok], put_sizes[ok], put_keys[ok])
                    deduped = ok & bl.shared_hits(put_keys)
                    c["frontswap_dedup_puts"] += int(np.count_nonzero(deduped))
        if req.swap is not None:
            self._check_read(disk_reads_dev, reply.swap.found, reply.swap.got, "swap", violations)
            c["disk_frees"] += int(reply.swap.freed)
        cache_wb = None
        if req.cache is not None:
            rc = reply.cache
            hits = reads[step.hits]
            self._check_read(hits, rc.found, rc.got, "the disk cache", violations)
            if rc.refused:
                violations.append(
                    (
                        "integrity",
                        f"{self.name}: the cache refused to drop {rc.refused} dirty page(s)",
                    )
                )
            cache_wb = rc.written_back if len(rc.written_back) else None
            if len(rc.written_back) != len(step.writeback):
                violations.append(
                    (
                        "conservation",
                        f"{self.name}: cache wrote back {len(rc.written_back)} pages, "
                        f"{len(step.writeback)} were dirty",
                    )
                )

        # apply: the cache's decisions
        if step is not None:
            cache.commit(epoch, step, reads, disk_pages if disk_batch is not None else _EI)
            c["cache_hits"] += int(np.count_nonzero(step.hits))
            c["cache_writebacks"] += len(step.writeback)
            c["cache_dropped"] += len(step.drops)
            c["cache_write_through"] += int(np.count_nonzero(~step.cached))

        # the frames the host must have resident for this epoch, before anything moves: the
        # frames of touched pages and of pages the guest writes out (double swapping)
        hs_need = _EI
        hs_dirty = _EI
        backed0 = self.frames.private_count
        if self.host_swap:
            hs_touch = self.frame[uniq[loc_u == RAM]].astype(np.int64)
            out = dirty
            if len(fvict):  # the guest reads these out too: write-backs and cleancache puts
                out = np.concatenate([dirty, fvict if self.cleancache else f_wb])
            hs_dirty = self.frame[out].astype(np.int64)
            hs_need = np.concatenate([hs_touch, hs_dirty])
            violations += self._check_hswap_map(self.frames.hswapped(np.unique(hs_need)))

        # apply: slots freed by writes, a full swap, loads and selfshrink; exclusive gets
        to_disk = dirty[~put_ok] if self.uses_tmem else dirty[disk_mask]
        to_fs = dirty[put_ok] if self.uses_tmem else _EI
        nz = int(np.count_nonzero(self.slot[free_slot] == ZPOOL))
        if self.zram_slots:
            self.zslots_used -= nz
            self.slots_used -= len(free_slot) - nz
        else:
            self.slots_used -= len(free_slot)
        self._set_slot(free_slot, NO_SLOT)
        if self.exclusive_gets:
            got_ex = excl_got
            self._set_slot(got_ex, NO_SLOT)
            self.dirty[got_ex] = True
            self.slots_used -= len(got_ex)
        if pool is not None:
            if pool.kind == "zswap":
                pool.drop(z_free)
            else:
                c["zpool_discards"] += pool.free_slots(z_free)
            if pool.discard_due(t, dt):
                c["zpool_discards"] += pool.discard_scan()
        # apply: evictions
        self._map_out(victims)
        if self.has_files:  # page-cache pages leave for their file on the guest's disk
            isf_v = victims >= self.file_lo
            cl = victims[clean & ~isf_v]
            self._set_loc(victims[isf_v], FILE)
        else:
            cl = victims[clean]
        self._set_loc(cl, self.slot[cl])
        self._set_loc(to_fs, FRONTSWAP)
        self._set_slot(to_fs, FRONTSWAP)
        stored = dirty[to_pool]
        if len(stored):
            pool.store(stored, pool_sizes[to_pool], epoch)
            self._set_loc(stored, ZPOOL)
            self._set_slot(stored, ZPOOL)
        self._set_loc(to_disk, SWAP)
        self._set_slot(to_disk, SWAP)
        if len(zswap_wb):
            pool.drop(zswap_wb)
            self._set_loc(zswap_wb, SWAP)
            self._set_slot(zswap_wb, SWAP)
            if pool.frames_needed() <= pool.accept * pool.limit_frames(self.alloc_pages):
                pool.limit_hit = False
        self.dirty[victims] = False
        if self.zram_slots:
            self.zslots_used += len(stored)
            self.slots_used += len(dirty) - len(stored)
        else:
            self.slots_used += len(dirty)
        # apply: swap-ins and first touches
        incoming = np.concatenate([f_zero, f_fs, f_z, reads, unuse_in, f_fnew, f_file])
        in_frames = _EI  # the frames they get (for the host's view of them)
        if self.host_swap or self.sharing:
            in_frames = self._incoming_frames(_EI, len(incoming))
        newly_backed = self._map_in(incoming)
        self._set_loc(incoming, RAM)
        self.dirty[f_zero] = True
        self.dirty[unuse_in] = True
        self._set_slot(unuse_in, NO_SLOT)
        # apply: the touches themselves (a thrash victim was touched before it left)
        self.version[wp] += wc.astype(np.uint32)
        self.dirty[wp] = True
        self.dirty[victims] = False
        self._touched(uniq, epoch)
        self.ref[victims] = False

        self.pinned_n = max(self.pinned_n, pin_to)

        # the pool's frames follow its contents; the balloon moves
        pool_new = _EI
        if pool is not None:
            pool_new = self._pool_frames()
        discard = _EI
        if self.balloon is not None:
            discard = self._balloon_step(t, dt, pressure)

        # page sharing: copy-on-write breaks, then the host's scanner merges what it can
        n_cow = 0
        if self.sharing:
            n_cow = self._ksm_step(epoch, d, wp, in_frames)

        # the host: frames used this epoch come back into RAM (swap-ins); frames above the
        # budget are paged out, chosen as the host can
        swap_in = _EI
        exp_page = exp_ver = _EI
        hs_out = _EI
        hs_recs = None
        if self.host_swap:
            hs_need = np.unique(np.concatenate([hs_need, in_frames, pool_new]))
            swap_in = self.frames.hswapped(hs_need)
            exp_page = self.frames.rec_page[swap_in].copy()
            exp_ver = self.frames.rec_ver[swap_in].copy()
            self.frames.swap_in(swap_in)
            self.frames.touch(hs_need, epoch)
            budget = d.frame_budget
            over = 0 if budget is None else self.frames.private_count - budget
            if over > 0:  # at the device's pace, but never letting an over-budget guest grow
                grew = max(0, self.frames.private_count - backed0)
                over = min(over, max(d.hswap_step, grew)) if d.hswap_step else over
                pool_frames = self.zp_stack[: self.zpool_frames].astype(np.int64)
                hs_out = self.frames.pick_victims(
                    over, epoch, d.hswap_policy, self.hs_rng, pool_frames
                )
                room = d.hswap_quota - self.frames.hswapped_count
                if len(hs_out) > room:  # the host's swap cannot take them: host OOM
                    return (yield from self._oom_kill(t, dt, work, len(pages), host=True))
                pg = self.fpage[hs_out]
                rp = np.where(pg >= 0, pg, NO_PAGE).astype(np.int64)
                rv = np.where(pg >= 0, self.version[np.maximum(pg, 0)], 0).astype(np.uint32)
                self.frames.swap_out(hs_out, rp, rv)
                hs_recs = self._batch(rp, rv)

        # phase 2: refused puts and cache write-backs to the disk; the host's frame I/O
        req2 = Request(self.name, self.host, self.disk)
        refused = None
        if self.uses_tmem and len(to_disk):
            refused = batch.take(np.flatnonzero(~put_ok))
        p2_writes = _concat_batches(refused, cache_wb)
        if p2_writes is not None:
            req2.swap = SwapOps(_E, _E, p2_writes, wait=False)  # its reply is not read
        if len(f_rd2):  # cleancache misses: what the ephemeral pool no longer held
            req2.files = SwapOps(f_rd2.astype(np.uint32), _E, None)
        if len(swap_in) or len(discard) or len(hs_out):
            req2.hswap = HostSwapOps(
                swap_in.astype(np.uint32),
                discard.astype(np.uint32),
                hs_out.astype(np.uint32),
                hs_recs,
                d.hswap_quota,
                d.hswap_capacity,
            )
        if not req2.empty():
            reply2 = yield req2
            if req2.hswap is not None:
                violations += self._check_hswap_reply(
                    swap_in, exp_page, exp_ver, reply2.hswap, len(hs_out)
                )
            if req2.files is not None:
                rf = reply2.files
                where = "the file disk"
                self._check_read(f_rd2, rf.found, rf.got, where, violations, f_rd2_ver)

        # counters
        n_put = len(dirty) if self.uses_tmem else 0
        n_fail = len(to_disk) if self.uses_tmem else 0
        self.window_new_puts += n_put
        c["frontswap_puts"] += n_put - n_fail
        c["frontswap_put_failures"] += n_fail
        c["evictions"] += len(victims)
        c["first_touches"] += len(f_zero)
        c["faults"] += len(f_zero) + len(f_fs) + len(f_z) + len(f_sw)
        c["major_faults"] += len(clusters)
        c["readahead_pages"] += len(reads) - len(f_sw)
        c["zpool_loads"] += len(f_z)
        c["selfshrink_pages"] += len(unuse_in) + len(unuse_fl)
        n_dev_reads = len(disk_reads_dev)
        dev_clusters = len(clusters)
        if step is not None:  # a cluster all of whose pages were cached never reached the disk
            missed = np.unique(disk_reads_dev // ra) if len(disk_reads_dev) else _EI
            dev_clusters = len(missed)
        c["disk_reads"] += n_dev_reads
        c["disk_read_ops"] += dev_clusters
        n_through = len(through_batch) if through_batch is not None else 0
        if self.uses_tmem:
            n_through = len(to_disk)
        n_wb = (len(cache_wb) if cache_wb is not None else 0) + len(zswap_wb)
        disk_pages_written = n_through + n_wb
        write_ops = -(-n_through // SWAP_CLUSTER) + -(-n_wb // SWAP_CLUSTER)
        c["disk_writes"] += disk_pages_written
        c["disk_write_ops"] += write_ops
        c["zpool_writebacks"] += len(zswap_wb)
        n_hs_in, n_double = len(swap_in), 0
        if self.host_swap:
            n_double = int(np.count_nonzero(np.isin(hs_dirty, swap_in)))
            c["host_swap_ins"] += n_hs_in
            c["host_swap_outs"] += len(hs_out)
            c["double_swaps"] += n_double
        # the page cache's disk I/O: first reads and misses (pages of one readahead cluster
        # read in one epoch share an operation), write-backs in batches
        f_rd = np.concatenate([f_fnew, f_miss]) if len(f_fnew) else f_miss
        n_fread = len(f_rd)
        n_fops = len(_unique(f_rd // ra)) if n_fread else 0
        n_fwb = len(f_wb)
        fw_ops = -(-n_fwb // SWAP_CLUSTER)
        if self.has_files:
            c["file_reads"] += n_fread
            c["file_read_ops"] += n_fops
            c["file_writes"] += n_fwb
            c["file_write_ops"] += fw_ops
            c["file_drops"] += len(fvict) - n_fwb
            c["faults"] += len(f_fnew) + len(f_file)
            c["major_faults"] += n_fops

        # time: synchronous costs on the critical path
        dev = device.profile
        s_zero = len(f_zero) * costs.minor_fault
        s_alloc = newly_backed * costs.host_page_alloc
        lat_fs = costs.minor_fault + costs.get(ps)
        if bl is not None:  # decompressing gets
            lat_fs = costs.minor_fault + costs.get(ps) * self.tm_factor
        s_fs = len(f_fs) * lat_fs
        s_flush = len(fs_flush) * costs.flush()
        lat_sw = 0.0
        lat_hit = 0.0
        s_sw = 0.0
        if len(clusters):
            read_bytes = len(reads) * ps / len(clusters)  # the average cluster actually read
            lat_sw = costs.major_fault + dev.op_time(False, read_bytes) + device.wait(read_bytes)
            lat_hit = costs.major_fault + costs.io_exit + costs.copy(read_bytes)
            s_sw = dev_clusters * lat_sw + (len(clusters) - dev_clusters) * lat_hit
            s_sw += (len(f_sw) - len(clusters)) * costs.minor_fault
        # zswap/zram loads: decompression (same-filled pages are a memset)
        s_z = 0.0
        if len(f_z):
            s_z = len(f_z) * (costs.minor_fault + costs.decompress(ps))
        # direct reclaim: the synchronous share of puts, compression and disk writes
        sync_dirty = ~dirty_async
        s_put = 0.0
        s_comp = 0.0
        if pool is not None and len(stored):
            s_comp = int(np.count_nonzero(to_pool & sync_dirty)) * costs.compress(ps)
        if self.uses_tmem:
            ok_sync = int(np.count_nonzero(put_ok & sync_dirty))
            fail_sync = int(np.count_nonzero(~put_ok & sync_dirty))
            s_put = ok_sync * costs.put(ps) + fail_sync * costs.failed_put()
            if bl is not None:  # compression before the pool decides; dedup hashes the page
                f = self.tm_factor
                s_put = ok_sync * costs.put(ps) * f + fail_sync * costs.failed_put() * f
                if bl.dedup:
                    s_put += (ok_sync + fail_sync) * costs.copy(ps)
            # refused async puts beyond what the disk absorbs in the background are waited for
            fail_async = int(np.count_nonzero(~put_ok & dirty_async))
            sync_disk = fail_sync + max(0, fail_async - self._async_budget(device, dt))
            sync_cached = 0
        elif step is not None:
            through = ~step.cached
            sync_disk = int(np.count_nonzero(through & disk_sync))
            sync_cached = int(np.count_nonzero(step.cached & disk_sync))
        else:
            sync_disk = int(np.count_nonzero(disk_sync))
            if pool is not None:  # kswapd's refused stores beyond the disk budget are waited for
                async_disk = len(disk_sync) - sync_disk
                sync_disk += max(0, async_disk - self._async_budget(device, dt))
            sync_cached = 0
        s_write = 0.0
        if sync_disk:
            ops = -(-sync_disk // SWAP_CLUSTER)
            wbytes = sync_disk * ps / ops
            s_write = ops * (dev.op_time(True, wbytes) + device.wait(wbytes))
        if sync_cached:
            ops = -(-sync_cached // SWAP_CLUSTER)
            s_write += ops * costs.io_exit + costs.copy(sync_cached * ps)
        # host swap reads: the vCPU waits while the host faults the frame back in
        s_hs = 0.0
        lat_hs = 0.0
        hs_dev = d.hswap_device
        if n_hs_in and hs_dev is not None:
            lat_hs = hs_dev.profile.op_time(False, ps) + hs_dev.wait(ps)
            s_hs = n_hs_in * lat_hs
        s_cow = n_cow * (costs.minor_fault + costs.copy(ps) + costs.host_page_alloc)
        # the page cache: reads from the guest's disk, cleancache gets (a miss spends the
        # hypercall), puts and write-backs in direct reclaim
        s_file = s_cc = lat_f = 0.0
        lat_cc = costs.minor_fault + costs.get(ps)
        if n_fread:
            fbytes = n_fread * ps / n_fops
            lat_f = costs.major_fault + dev.op_time(False, fbytes) + device.wait(fbytes)
            s_file = n_fops * lat_f + (n_fread - n_fops) * costs.minor_fault
        if self.has_files:
            n_hit = len(f_file) - len(f_miss) if self.cleancache else 0
            n_missed = len(f_miss) if self.cleancache else 0
            s_cc = n_hit * lat_cc + n_missed * (costs.hypercall + costs.tmem_get)
            if len(cc_ok):
                sync_v = ~is_async[victims >= self.file_lo]  # aligned with fvict
                s_put += int(np.count_nonzero(cc_ok & sync_v)) * costs.put(ps)
                s_put += int(np.count_nonzero(~cc_ok & sync_v)) * costs.failed_put()
            sync_fw = int(np.count_nonzero(~f_wb_async))
            sync_fw += max(0, n_fwb - sync_fw - self._async_budget(device, dt))
            if sync_fw:
                ops = -(-sync_fw // SWAP_CLUSTER)
                wbytes = sync_fw * ps / ops
                s_write += ops * (dev.op_time(True, wbytes) + device.wait(wbytes))
        sources = (
            s_zero,
            s_alloc,
            s_fs,
            s_flush,
            s_sw,
            s_put,
            s_write,
            s_z,
            s_comp,
            s_hs,
            s_cow,
            s_file,
            s_cc,
        )
        stall = sum(sources)
        for src, v in zip(STALL_SOURCES, sources):
            self.stall_by_source[src] += v
        # fault latency histogram (one value per kind of fault this epoch)
        self._hist_add(costs.minor_fault, len(f_zero))
        self._hist_add(lat_fs, len(f_fs))
        self._hist_add(lat_sw, dev_clusters)
        self._hist_add(lat_hit, len(clusters) - dev_clusters)
        self._hist_add(costs.minor_fault, len(f_sw) - len(clusters))
        self._hist_add(costs.minor_fault + costs.decompress(ps), len(f_z))
        if n_hs_in:
            self._hist_add(lat_hs, n_hs_in)
        if self.has_files:
            self._hist_add(lat_f, n_fops)
            self._hist_add(costs.minor_fault, n_fread - n_fops)
            self._hist_add(lat_cc, len(f_file) - len(f_miss) if self.cleancache else 0)
        self._account(dt, work, stall)
        violations += [("conservation", m) for m in self.conservation()]
        n_hs_ops = n_hs_in + -(-len(hs_out) // SWAP_CLUSTER)
        n_hs_pages = n_hs_in + len(hs_out)
        return EpochStats(
            alive=True,
            work=work,
            stall=stall,
            touches=len(pages),
            faults=len(f_zero) + len(f_fs) + len(f_z) + len(f_sw) + len(f_fnew) + len(f_file),
            disk_reads=n_dev_reads,
            disk_writes=disk_pages_written,
            puts=n_put - n_fail,
            put_failures=n_fail,
            gets=len(f_fs),
            dev_ops=dev_clusters + write_ops + n_fops + fw_ops,
            dev_bytes=(n_dev_reads + disk_pages_written + n_fread + n_fwb) * ps,
            hswap_ops=n_hs_ops,
            hswap_bytes=n_hs_pages * ps,
            host_swap_ins=n_hs_in,
            double_swaps=n_double,
            file_reads=n_fread,
            cleancache_hits=len(f_file) - len(f_miss),
            violations=violations,
        )

    def _account(self, dt: float, work: float, stall: float) -> None:
        """An epoch the guest was up for: its stall owed, time, and the pool's peaks."""
        self.debt += stall
        self.stall_seconds += stall
        self.alive_seconds += dt
        self.work_seconds += work
        self.peak_tmem_pages = max(self.peak_tmem_pages, self.tmem_pages)
        self.peak_billed_pages = max(self.peak_billed_pages, self.alloc_pages + self.tmem_billed)

    def _touched(self, uniq: np.ndarray, epoch: int) -> None:
        """Record this epoch's touches of `uniq` (sorted, distinct): last-touch epoch (and the
        count of pages touched in the window), referenced bits."""
        if epoch + 1 > self.window_start:
            self.active_n += int(np.count_nonzero(self.last[uniq] <= self.window_start))
            self.last[uniq] = epoch + 1
        else:  # (an epoch before the window: never in a run, kept exact anyway)
            self.last[uniq] = epoch + 1
            self.active_n = int(np.count_nonzero(self.last > self.window_start))
        self.last_hi = max(self.last_hi, epoch + 1)
        self.ref[uniq] = True

    def _plain(self) -> bool:
        """No page cache, compressed pool, disk cache, balloon, host swap, page sharing or
        pool billing: the guest has none of the mechanisms with per-epoch work of their own."""
        return (
            not self.has_files
            and self.pool is None
            and self.cache is None
            and self.balloon is None
            and self.selfballoon is None
            and not self.host_swap
            and not self.sharing
            and not self.cleancache
            and self.billing is None
        )

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
        costs = self.costs
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
        self.pinned_n = max(self.pinned_n, pin_to)
        c = self.counters
        c["first_touches"] += need
        c["faults"] += need
        # time: first-touch faults and the host's allocations (every other source is 0.0)
        s_zero = need * costs.minor_fault
        s_alloc = newly_backed * costs.host_page_alloc
        stall = sum((s_zero, s_alloc))  # as the general path sums its sources
        self.stall_by_source["first_touch"] += s_zero
        self.stall_by_source["host_alloc"] += s_alloc
        self._hist_add(costs.minor_fault, need)
        self._account(dt, work, stall)
        return EpochStats(
            alive=True,
            work=work,
            stall=stall,
            touches=len(pages),
            faults=need,
            violations=[("conservation", m) for m in self.conservation()],
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

    def _unuse_pick(self, uniq: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
        """Selfshrink: the next frontswap slots to release, in slot order. Returns (pages to
        bring back into RAM, resident pages whose clean tmem copy is just flushed)."""
        cand = np.flatnonzero(self.slot == FRONTSWAP)
        cand = cand[~np.isin(cand, uniq)][: self.unuse_left]
        resident = cand[self.loc[cand] == RAM]
        away = cand[self.loc[cand] == FRONTSWAP]
        room = max(0, self.free_top - self.wm_high - need)
        away = away[:room]
        # pages that found no free frame stay in frontswap; the next epochs try again
        self.unuse_left -= len(resident) + len(away)
        return away, resident

    def _pool_decide(
        self,
        dirty: np.ndarray,
        vers: np.ndarray,
        batch: RecordBatch | None,
        after_free: int,
        disk_room: int,
        z_free: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Which dirty victims the compressed pool takes, given `after_free` frames free once
        this epoch's pages are in. Returns (stored mask, sizes, kept-resident mask, growth of
        the pool in frames). zswap sends what it refuses to the disk (the page holds a disk
        slot); a zram write that finds no memory fails and the page stays in RAM, unless the
        disk swap behind zram has a slot for it."""
        pool = self.pool
        c = self.counters
        k = len(dirty)
        sizes, same = pool.sizes(dirty, vers, batch.payload if batch is not None else None)
        cand = pool.fits(sizes)  # zbud cannot hold a page that does not compress enough
        beyond = np.zeros(k, bool)
        if pool.kind == "zram":  # dirty victims hold no slot: zram's free slots first
            zroom = self.zram_slots - self.zslots_used + len(z_free)
            beyond = np.arange(k) >= zroom
            cand &= ~beyond
        ss = np.where(cand, pool.stored_size(sizes), 0)
        drop = z_free if (pool.kind == "zswap" or pool.discard == "immediate") else _EI
        _, cum = pool.frames_after(drop, ss)
        limit = pool.limit_frames(self.alloc_pages) if pool.kind == "zswap" else None
        under = np.ones(k, bool) if limit is None else cum <= limit
        if limit is not None and (cand & ~under).any():
            pool.limit_hit = True
        avail = after_free
        kept = np.zeros(k, bool)
        for _ in range(4):
            ok = cand & under & (cum - pool.frames <= avail)
            if pool.kind == "zram":
                failed = cand & ~ok
                left = max(0, disk_room - int(np.count_nonzero(beyond)))
                kept = failed & (np.cumsum(failed) > left)
            if after_free - int(np.count_nonzero(kept)) == avail:
                break
            avail = after_free - int(np.count_nonzero(kept))
        c["zpool_rejects"] += int(np.count_nonzero(~ok & ~beyond))
        c["zpool_stores"] += int(np.count_nonzero(ok))
        c["zpool_same_filled"] += int(np.count_nonzero(ok & same))
        base, cum_ok = pool.frames_after(drop, np.where(ok, ss, 0))
        growth = (int(cum_ok[-1]) if k else base) - pool.frames
        return ok, sizes, kept, max(0, growth)

    def _zswap_writeback_pick(self, device: DeviceQueue, dt: float, busy: np.ndarray) -> np.ndarray:
        """zswap at its limit writes its oldest entries back to disk until it is under the
        acceptance threshold, at the disk's background pace."""
        pool = self.pool
        limit = pool.limit_frames(self.alloc_pages)
        excess = pool.frames - int(pool.accept * limit)
        if excess <= 0:
            pool.limit_hit = False
            return _EI
        per_frame = max(1.0, pool.live_pages / max(1, pool.frames))
        k = min(int(math.ceil(excess * per_frame)), self._async_budget(device, dt))
        pages = pool.oldest(k + len(busy))
        pages = pages[(self.loc[pages] == ZPOOL) & ~np.isin(pages, busy)]
        return pages[:k]

    def _pool_frames(self) -> np.ndarray:
        """Give the pool the frames its contents need (or take back those it no longer
        does); returns the frames newly taken (the host backs them)."""
        pool = self.pool
        delta = pool.frames_needed() - pool.frames
        if delta > 0:
            fr = self._take_free(min(delta, self.free_top))
            self.zp_stack[pool.frames : pool.frames + len(fr)] = fr
            pool.frames += len(fr)
            self.counters["host_frames_allocated"] += self.frames.back(fr)
            return fr
        if delta < 0:
            k = -delta
            fr = self.zp_stack[pool.frames - k : pool.frames].astype(np.int64)
            pool.frames -= k
            self._give_free(fr)
        return _EI

    def _put_keys(self, pages: np.ndarray, versions: np.ndarray, batch: RecordBatch) -> np.ndarray:
        """Content keys of pages put to a deduplicating pool at these versions (0: content no
        other page can have): a hash of the bytes in `full` mode, the content rule in
        `digest` mode (the zero page; a never-written page of the shared image)."""
        keys = np.zeros(len(pages), np.uint64)
        if self.billing is None or not self.billing.dedup:
            return keys
        if self.payload == "full":
            return batch.checksums.astype(np.uint64)
        if self.workload.compressibility >= 1.0:
            keys[:] = ZERO_PAGE_KEY
            return keys
        common = (versions == 0) & is_common(pages, self.workload.duplicates)
        keys[common] = (pages[common].astype(np.uint64) << np.uint64(1)) | np.uint64(1)
        return keys

    def _content_keys(self, pages: np.ndarray) -> np.ndarray:
        """Content keys of these pages (0: content no other page can have). `full` payload:
        a hash of the generated bytes; `digest`: the same rule without the bytes."""
        v = self.version[pages]
        if self.payload == "full":
            return self._batch(pages, v).checksums.astype(np.uint64)
        keys = np.zeros(len(pages), np.uint64)
        if self.workload.compressibility >= 1.0:  # every page is the zero page
            keys[:] = ZERO_PAGE_KEY
            return keys
        common = (v == 0) & is_common(pages, self.workload.duplicates)
        keys[common] = (pages[common].astype(np.uint64) << np.uint64(1)) | np.uint64(1)
        return keys

    def _ksm_step(
        self, epoch: int, d: Directives, written: np.ndarray, in_frames: np.ndarray
    ) -> int:
        """Copy-on-write breaks and this epoch's scan; returns the breaks the guest waited for."""
        fs = self.frames
        wf = self.frame[written]
        wf = wf[wf >= 0].astype(np.int64)
        breaks = np.union1d(wf[fs.mkey[wf] != 0], in_frames[fs.mkey[in_frames] != 0])
        n = fs.unmerge(breaks)
        self.counters["cow_breaks"] += n
        k = min(d.scan_pages, self.nframes)
        if k and d.stable is not None:
            idx = (self.ksm_hand + np.arange(k)) % self.nframes
            self.ksm_hand = int((self.ksm_hand + k) % self.nframes)
            pg = self.fpage[idx]
            ok = (pg >= 0) & (fs.mkey[idx] == 0) & (fs.state[idx] == F_RAM)
            pgs = pg[ok]
            ok_p = self.version[pgs] == self.win_version[pgs]  # not written this window
            frames, pgs = idx[ok][ok_p], pgs[ok_p]
            keys = self._content_keys(pgs)
            nz = keys != 0
            frames, keys = frames[nz], keys[nz]
            hit = np.isin(keys, d.stable)
            fs.merge(frames[hit], keys[hit])
            self.counters["pages_merged"] += int(np.count_nonzero(hit))
            if (~hit).any():
                self.ksm_candidates.append(keys[~hit])
                self.ksm_key[frames[~hit]] = keys[~hit]
        return n

    def _ksm_merge_reported(self, d: Directives) -> None:
        """The pages the scanner reported whose content has just become shared merge now
        (KSM merges the pair it finds), if they still hold that content."""
        if d.stable is None:
            return
        fs = self.frames
        frames = np.flatnonzero(self.ksm_key)
        if len(frames) == 0:
            return
        keys = self.ksm_key[frames]
        promoted = np.isin(keys, d.stable)
        frames, keys = frames[promoted], keys[promoted]
        self.ksm_key[frames] = 0
        pg = self.fpage[frames]
        ok = (pg >= 0) & (fs.mkey[frames] == 0) & (fs.state[frames] == F_RAM)
        frames, keys, pg = frames[ok], keys[ok], pg[ok]
        if len(frames):
            same = self._content_keys(pg) == keys  # unchanged since it was scanned
            fs.merge(frames[same], keys[same])
            self.counters["pages_merged"] += int(np.count_nonzero(same))

    def _balloon_step(self, t: float, dt: float, pressure: bool) -> np.ndarray:
        """Move the balloon for this epoch; returns host-swapped frames it gave back (their
        host swap copies are discarded unread)."""
        b = self.balloon
        goal = b.goal
        allow = b.allowance(t, dt, pressure)
        discard = _EI
        moved = 0
        limited = False
        if goal > b.size:
            want = min(goal - b.size, allow)
            avail = max(0, self.free_top - self.wm_high)
            k = min(want, avail)
            limited = k < want
            if k:
                fr = self._take_free(k)
                self.balloon_stack[self.balloon_n : self.balloon_n + k] = fr
                self.balloon_n += k
                discard = self.frames.release(fr)
                moved = k
        elif goal < b.size:
            want = min(b.size - goal, allow)
            grow_room = max(0, self.directives.grow_limit - self.grown)
            bill_room = max(0, self.maxmem_pages - self.tmem_pages - self.alloc_pages)
            if not self.uses_tmem:
                bill_room = want
            k = min(want, grow_room, bill_room)
            limited = k < want
            if k:
                fr = self.balloon_stack[self.balloon_n - k : self.balloon_n].astype(np.int64)
                self.balloon_n -= k
                self._give_free(fr)
                if self.eager:
                    self.counters["host_frames_allocated"] += self.frames.back(fr)
                self.grown += k
                moved = -k
        lag0 = b.lag
        inflated, deflated = b.commit(moved, limited, t, dt, pressure)
        self.balloon_lag_seconds += b.lag - lag0
        self.counters["balloon_inflated"] += inflated
        self.counters["balloon_deflated"] += deflated
        return discard

    # -- checks ------------------------------------------------------------------------------
    def _check_hswap_map(self, swap_in: np.ndarray) -> list[tuple[str, str]]:
        """A host-swapped frame still holding a guest page must hold the version the host
        wrote: the guest never changes a frame the host has taken away."""
        if len(swap_in) == 0:
            return []
        pg = self.fpage[swap_in]
        m = pg >= 0
        bad = m & (
            (self.frames.rec_page[swap_in] != pg)
            | (self.frames.rec_ver[swap_in] != self.version[np.maximum(pg, 0)])
        )
        if bad.any():
            f = int(swap_in[np.flatnonzero(bad)[0]])
            return [("integrity", f"{self.name}: host-swapped frame {f} changed while paged out")]
        return []

    def _check_hswap_reply(
        self,
        swap_in: np.ndarray,
        exp_page: np.ndarray,
        exp_ver: np.ndarray,
        r: Any,
        n_out: int,
    ) -> list[tuple[str, str]]:
        out = []
        found = np.asarray(r.found, bool)
        if len(swap_in) and not found.all():
            n = int(np.count_nonzero(~found))
            self.counters["lost_pages"] += n
            out.append(
                (
                    "lost_pages_explained",
                    f"{self.name}: {n} frame(s) missing from host swap, e.g. frame "
                    f"{int(swap_in[~found][0])}",
                )
            )
        got = r.got
        if len(got):
            ep, ev = exp_page[found], exp_ver[found]
            bad = (got.pages.astype(np.int64) != ep) | (got.versions != ev)
            bad |= self.verify(got)
            if bad.any():
                n = int(np.count_nonzero(bad))
                self.counters["stale_reads"] += n
                out.append(
                    (
                        "integrity",
                        f"{self.name}: {n} stale or corrupt record(s) read from host swap",
                    )
                )
        ok = np.asarray(r.write_ok, bool)
        if n_out and not ok.all():
            out.append(
                (
                    "conservation",
                    f"{self.name}: host swap refused {int(np.count_nonzero(~ok))} swap-out(s) "
                    "its quota allowed",
                )
            )
        if r.guest_frames != self.frames.hswapped_count:
            out.append(
                (
                    "conservation",
                    f"{self.name}: host swap holds {r.guest_frames} frames, "
                    f"the host counts {self.frames.hswapped_count}",
                )
            )
        return out

    def _batch(self, pages: np.ndarray, versions: np.ndarray) -> RecordBatch:
        """Records of these pages at these versions, with the content they imply."""
        return make_batch(
            self.name,
            np.asarray(pages).astype(np.uint32),
            np.asarray(versions).astype(np.uint32),
            self.payload,
            self.page_size,
            self.workload.compressibility,
            self.workload.duplicates,
        )

    def verify(self, batch: RecordBatch) -> np.ndarray:
        """Mask of records whose checksum or content is not what their version implies."""
        return verify(
            self.name,
            batch,
            self.payload,
            self.page_size,
            self.workload.compressibility,
            self.workload.duplicates,
        )

    def _hist_add(self, latency: float, n: int) -> None:
        if n > 0:
            b = _HIST_BIN.get(latency)
            if b is None:  # the same few latencies recur: look each one's bin up once
                b = _HIST_BIN[latency] = int(_hist_bins(np.array([latency]))[0])
                if len(_HIST_BIN) > 4096:
                    _HIST_BIN.clear()
            self.hist[b] += n

    def _check_read(
        self,
        pages: np.ndarray,
        found: np.ndarray,
        got: RecordBatch,
        where: str,
        out: list[tuple[str, str]],
        expect_versions: np.ndarray | None = None,
    ) -> None:
        """Compare records read back from a store with the versions the guest last wrote (or
        with `expect_versions`, aligned with `pages`, for a read after this epoch's writes)."""
        found = np.asarray(found, bool)
        missing = pages[~found]
        if len(missing):
            self.counters["lost_pages"] += len(missing)
            out.append(
                (
                    "lost_pages_explained",
                    f"{self.name}: {len(missing)} page(s) missing from {where}, e.g. page "
                    f"{int(missing[0])} version {int(self.version[missing[0]])}",
                )
            )
        if len(got):
            if expect_versions is None:
                expect = self.version[got.pages.astype(np.int64)]
            else:
                expect = np.asarray(expect_versions)[found]
            bad = (got.versions != expect) | self.verify(got)
            nbad = int(np.count_nonzero(bad))
            if nbad:
                i = int(np.flatnonzero(bad)[0])
                self.counters["stale_reads"] += nbad
                out.append(
                    (
                        "integrity",
                        f"{self.name}: {nbad} stale record(s) read from {where}, e.g. page "
                        f"{int(got.pages[i])} has version {int(got.versions[i])}, "
                        f"last written {int(expect[i])}",
                    )
                )

    def _oom_kill(
        self, t: float, dt: float, work: float, touches: int, host: bool = False
    ) -> Generator[Request, Reply, EpochStats]:
        """Neither RAM nor swap has room: the OOM killer ends the workload; it restarts later.

        With `host`, the host's OOM killer ends the whole guest (its frames could not be
        placed): the guest reboots, its frames and host swap released."""
        self.counters["host_oom_kills" if host else "guest_oom_kills"] += 1
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, None, drop=True))
        if self.uses_tmem:
            req.tmem = TmemOps(_E, _E, None, 0, 0, self.exclusive_gets, flush_area=True)
        if self.cache is not None:
            req.cache = CacheOps(_E, _E, _E, _E, None, drop=True)
        if host and self.host_swap:
            req.hswap = HostSwapOps(_E, _E, _E, None, 0, 0, drop=True)
        if self.has_files:  # the restarted workload starts from its files' original content
            req.files = SwapOps(_E, _E, None, drop=True)
        if self.cleancache:
            req.eph = EphOps(_E, None, 0, flush_area=True)
        reply = yield req
        out = []
        if self.uses_tmem and reply.area_flushed != self.tmem_pages:
            out.append(
                (
                    "frontswap",
                    f"{self.name}: flush area removed {reply.area_flushed} pages, "
                    f"the pool held {self.tmem_pages}",
                )
            )
        if self.cleancache and reply.eph_flushed != self.eph_pages:
            out.append(
                (
                    "conservation",
                    f"{self.name}: flushing the ephemeral pool removed {reply.eph_flushed} "
                    f"pages, the pool held {self.eph_pages}",
                )
            )
        self.tmem_pages = 0
        self.eph_pages = 0
        if self.billing is not None:
            self.billing.reset()
        self.unuse_left = 0
        self.alive_seconds += dt
        self.work_seconds += work
        self.alive = False
        self.down_until = t + dt + self.spec.oom_restart
        self.debt = 0.0  # the killed workload's stall dies with it
        if self.cache is not None:
            self.cache.drop_all()
        if host:
            self._boot()
        else:
            self._reset_memory()
        out += [("conservation", m) for m in self.conservation()]
        return EpochStats(alive=True, work=work, touches=touches, violations=out)

    # -- host-requested operations ----------------------------------------------------------
    def drain_tmem(self) -> Generator[Request, Reply, tuple[int, EpochStats]]:
        """Move every page this guest holds in tmem to its swap disk, then flush the pool.

        A cooperative guest does this when asked (a partial swapoff to disk); an uncooperative
        one ignores the request. The records written are the ones read back from tmem, so a
        corrupt copy stays visible to the checkers. The writes are background I/O: they load
        the shared device but stall no one.
        """
        stats = EpochStats(alive=self.alive)
        if not self.cooperative or not self.uses_tmem:
            return 0, stats
        held = np.flatnonzero(self.slot == FRONTSWAP)
        if len(held) == 0:
            return 0, stats
        reply = yield Request(
            self.name,
            self.host,
            self.disk,
            tmem=TmemOps(held.astype(np.uint32), _E, None, 0, 0, False),
        )
        self._check_read(held, reply.tmem.found, reply.tmem.got, "frontswap", stats.violations)
        got = reply.tmem.got
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, got))
        req.tmem = TmemOps(_E, _E, None, 0, 0, False, flush_area=True)
        yield req
        moved = got.pages.astype(np.int64)
        lost = np.setdiff1d(held, moved)  # missing from tmem: counted lost above
        for pages in (moved, lost):
            self._set_loc(pages[self.loc[pages] == FRONTSWAP], SWAP)
        self._set_slot(moved, SWAP)
        self._set_slot(lost, NO_SLOT)
        self._set_loc(lost[self.loc[lost] == SWAP], UNTOUCHED)
        self.slots_used -= len(lost)
        self.tmem_pages = 0
        if self.billing is not None:
            self.billing.reset()
        ops = -(-len(moved) // SWAP_CLUSTER)
        self.counters["disk_writes"] += len(moved)
        self.counters["disk_write_ops"] += ops
        self.counters["frontswap_flushes"] += len(held)
        stats.disk_writes = len(moved)
        stats.dev_ops = ops
        stats.dev_bytes = len(moved) * self.page_size
        return len(moved), stats

    def shrink_tmem(
        self, device: DeviceQueue, dt: float
    ) -> Generator[Request, Reply, EpochStats | None]:
        """Cooperative reclaim, one epoch of it: move pool pages to the swap disk at the pace
        the disk writes (the guest's share of the shared device), as a guest does when its
        host asks it to shrink its tmem. Exclusive gets, then swap writes of the records read
        back, so a corrupt copy stays visible to the checkers. None when there is nothing to do.
        """
        if not self.alive or self.shrink_left <= 0:
            return None
        held = np.flatnonzero(self.slot == FRONTSWAP)
        k = min(self.shrink_left, len(held), self._async_budget(device, dt, fair=True))
        if k <= 0:
            return None
        pick = held[:k]
        stats = EpochStats(alive=True)
        reply = yield Request(
            self.name,
            self.host,
            self.disk,
            tmem=TmemOps(pick.astype(np.uint32), _E, None, 0, 0, True),
        )
        r = reply.tmem
        self._check_read(pick, r.found, r.got, "frontswap", stats.violations)
        got = r.got
        if len(got):
            yield Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, got))
        moved = got.pages.astype(np.int64)
        lost = np.setdiff1d(pick, moved)
        for pages in (moved, lost):
            self._set_loc(pages[self.loc[pages] == FRONTSWAP], SWAP)
        self._set_slot(moved, SWAP)
        self._set_slot(lost, NO_SLOT)
        self._set_loc(lost[self.loc[lost] == SWAP], UNTOUCHED)
        self.slots_used -= len(lost)
        self.tmem_pages = int(r.guest_pages)
        if self.billing is not None:
            self.billing.remove(pick)
        self.shrink_left -= len(pick)
        ops = -(-len(moved) // SWAP_CLUSTER)
        c = self.counters
        c["disk_writes"] += len(moved)
        c["disk_write_ops"] += ops
        c["tmem_shrink_pages"] += len(moved)
        stats.disk_writes = len(moved)
        stats.dev_ops = ops
        stats.dev_bytes = len(moved) * self.page_size
        return stats

    def stop_cooperating(self) -> None:
        """From now on the guest ignores balloon and tmem-shrink requests."""
        self.cooperative = False
        self.shrink_left = 0
        if self.balloon is not None:
            self.balloon.inflates = False

    # -- live migration --------------------------------------------------------------------
    def leave_source(self, flush_tmem: bool) -> Generator[Request, Reply, dict[str, Any]]:
        """A migrating guest's memory leaves its source host's stores (its migration is
        complete or has switched to post-copy): host-swapped frames are read back (records
        checked) and freed; dirty pages of the host's disk cache are written back to the swap
        disk and the cache dropped; ephemeral pages are dropped; persistent pool pages are read
        out (exclusive gets, checked), or with `flush_tmem` written to the swap disk. Returns
        what moved, with the pool records (`records`) for `arrive`."""
        src = self.host
        out: dict[str, Any] = {"violations": [], "records": None}
        viol = out["violations"]
        hs = np.flatnonzero(self.frames.state == F_HSWAP)
        out["host_swap_reads"] = len(hs)
        if len(hs):
            exp_page, exp_ver = self.frames.rec_page[hs].copy(), self.frames.rec_ver[hs].copy()
            reply = yield Request(
                self.name,
                src,
                self.disk,
                hswap=HostSwapOps(hs.astype(np.uint32), _E, _E, None, 0, 0),
            )
            viol += self._check_hswap_reply(hs, exp_page, exp_ver, reply.hswap, 0)
            self.frames.swap_in(hs)
            self.counters["host_swap_ins"] += len(hs)
        out["cache_writebacks"] = 0
        if self.cache is not None and self.cache.count:
            from overcommit.nodes.cached_disk import C_DIRTY

            dirty = np.flatnonzero(self.cache.state == C_DIRTY)
            if len(dirty):
                r = (
                    yield Request(
                        self.name,
                        src,
                        self.disk,
                        cache=CacheOps(_E, _E, dirty.astype(np.uint32), _E, None),
                    )
                ).cache
                if len(r.written_back):
                    yield Request(self.name, src, self.disk, swap=SwapOps(_E, _E, r.written_back))
                out["cache_writebacks"] = len(r.written_back)
                self.counters["cache_writebacks"] += len(r.written_back)
            yield Request(self.name, src, self.disk, cache=CacheOps(_E, _E, _E, _E, None, True))
            self.cache.drop_all()
        out["ephemeral_dropped"] = self.eph_pages
        if self.cleancache and self.eph_pages:
            yield Request(self.name, src, self.disk, eph=EphOps(_E, None, 0, flush_area=True))
            self.eph_pages = 0
        held = np.flatnonzero(self.slot == FRONTSWAP)
        out["tmem_pages_flushed"] = 0
        if len(held):
            reply = yield Request(
                self.name,
                src,
                self.disk,
                tmem=TmemOps(held.astype(np.uint32), _E, None, 0, 0, True),
            )
            r = reply.tmem
            self._check_read(held, r.found, r.got, "frontswap", viol)
            got = r.got
            if flush_tmem:  # flush-to-swap: the pool's pages go to the guest's swap disk
                if len(got):
                    yield Request(self.name, src, self.disk, swap=SwapOps(_E, _E, got))
                moved = got.pages.astype(np.int64)
                self._set_loc(moved[self.loc[moved] == FRONTSWAP], SWAP)
                self._set_slot(moved, SWAP)
                self.counters["disk_writes"] += len(moved)
                self.counters["disk_write_ops"] += -(-len(moved) // SWAP_CLUSTER)
                out["tmem_pages_flushed"] = len(moved)
                self.tmem_pages = 0
                if self.billing is not None:
                    self.billing.reset()
            else:
                out["records"] = got
        return out

    def arrive(self, dest: str, records: Any) -> Generator[Request, Reply, dict[str, Any]]:
        """The guest now runs on `dest`: its pool pages are put into `dest`'s pool (those the
        pool refuses go to the swap disk)."""
        self.host = dest
        out: dict[str, Any] = {"tmem_pages_moved": 0}
        if records is None or len(records) == 0:
            if records is not None:
                self.tmem_pages = 0
            return out
        n = len(records)
        reply = yield Request(
            self.name, dest, self.disk, tmem=TmemOps(_E, _E, records, n, 1 << 62, False)
        )
        ok = np.asarray(reply.tmem.put_ok, bool)
        if not ok.all():  # the destination refused some: they go to the swap disk
            refused = records.take(np.flatnonzero(~ok))
            yield Request(self.name, dest, self.disk, swap=SwapOps(_E, _E, refused))
            rp = refused.pages.astype(np.int64)
            self._set_loc(rp[self.loc[rp] == FRONTSWAP], SWAP)
            self._set_slot(rp, SWAP)
            if self.billing is not None:
                self.billing.remove(rp)
        out["tmem_pages_moved"] = int(np.count_nonzero(ok))
        self.tmem_pages = int(reply.tmem.guest_pages)
        return out

    def release_host_stores(self) -> Generator[Request, Reply, None]:
        """The guest dies on a host that lives on: drop everything it had in the host's
        stores (pool area, host swap, disk cache, ephemeral pages)."""
        req = Request(self.name, self.host, self.disk)
        if self.uses_tmem:
            req.tmem = TmemOps(_E, _E, None, 0, 0, False, flush_area=True)
        if self.cache is not None:
            req.cache = CacheOps(_E, _E, _E, _E, None, drop=True)
        if self.host_swap:
            req.hswap = HostSwapOps(_E, _E, _E, None, 0, 0, drop=True)
        if self.cleancache:
            req.eph = EphOps(_E, None, 0, flush_area=True)
        if not req.empty():
            yield req

    # -- faults ----------------------------------------------------------------------------
    def carry(self) -> dict[str, Any]:
        """The run-long accounting a later incarnation of this guest continues from."""
        out: dict[str, Any] = {k: getattr(self, k) for k in CARRY_FLOATS}
        out.update(
            incarnation=self.incarnation,
            disk=self.disk,
            files=self.has_files,
            counters=dict(self.counters),
            stall_by_source=dict(self.stall_by_source),
            hist=self.hist.copy(),
            peak_tmem_pages=self.peak_tmem_pages,
            peak_billed_pages=self.peak_billed_pages,
            lost_tmem=int(self.census[FRONTSWAP]),
            lost_hswap=self.frames.hswapped_count,
            lost_cache=self.cache.dirty if self.cache is not None else 0,
        )
        return out

    def adopt(self, carry: dict[str, Any], downtime: float) -> None:
        """Continue the accounting of an earlier incarnation, down for `downtime` seconds."""
        for k in CARRY_FLOATS:
            setattr(self, k, carry[k])
        self.downtime_seconds += downtime
        self.counters = dict(carry["counters"])
        self.stall_by_source = dict(carry["stall_by_source"])
        self.hist = np.array(carry["hist"], np.int64)
        self.peak_tmem_pages = carry["peak_tmem_pages"]
        self.peak_billed_pages = carry["peak_billed_pages"]

    def backend_lost(self, t: float, reboot: float) -> Generator[Request, Reply, dict[str, int]]:
        """The host's Redis died (the host lives): what only it held is gone.

        A page whose only copy was in tmem or host swap (or a dirty page of the host's disk
        cache) cannot be read back: the guest crashes, as a kernel must on an unrecoverable
        swap-in, and reboots after `reboot` seconds as a new incarnation. Otherwise it loses
        only copies: clean pool copies of resident pages (their slots are gone, the pages are
        dirty again), the ephemeral pool and the clean disk cache."""
        lost = {
            "tmem": int(self.census[FRONTSWAP]) if self.uses_tmem else 0,
            "hswap": int(
                np.count_nonzero(self.frames.rec_page[self.frames.state == F_HSWAP] != NO_PAGE)
            )
            if self.frames.hswapped_count
            else 0,
            "cache": self.cache.dirty if self.cache is not None else 0,
        }
        if any(lost.values()):
            yield from self.crash(t, reboot)
            return {**lost, "crashed": 1}
        copies = np.flatnonzero(self.slot == FRONTSWAP)
        if len(copies):
            self._set_slot(copies, NO_SLOT)
            self.dirty[copies] = True
            self.slots_used -= len(copies)
        if self.frames.hswapped_count:
            self.frames.release(np.flatnonzero(self.frames.state == F_HSWAP))
        self.tmem_pages = 0
        if self.billing is not None:
            self.billing.reset()
        self.eph_pages = 0
        self.unuse_left = 0
        self.shrink_left = 0
        if self.cache is not None:
            self.cache.drop_all()
        return {**lost, "crashed": 0}

    def crash(self, t: float, reboot: float) -> Generator[Request, Reply, None]:
        """The guest dies and reboots in place after `reboot` seconds, a new incarnation: its
        disks are dropped, its memory is fresh, its accounting continues."""
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, None, drop=True))
        if self.has_files:
            req.files = SwapOps(_E, _E, None, drop=True)
        yield req
        self.incarnation += 1
        self.migration = None  # a crashed guest is not migrating any more
        self.tmem_pages = 0
        self.eph_pages = 0
        self.unuse_left = 0
        self.shrink_left = 0
        self.debt = 0.0
        self._init_mechanisms()
        self._boot()
        self.alive = reboot <= 0
        self.down_until = t + reboot

    # -- invariants ------------------------------------------------------------------------
    def location_counts(self) -> dict[str, int]:
        bc = np.bincount(self.loc, minlength=NLOC)
        return {
            "untouched": int(bc[UNTOUCHED]),
            "ram": int(bc[RAM]),
            "frontswap": int(bc[FRONTSWAP]),
            "swap": int(bc[SWAP]),
            "zpool": int(bc[ZPOOL]),
            "file": int(bc[FILE]),
        }

    def conservation(self, full: bool = False) -> list[str]:
        """Violations of the guest's page, frame and slot conservation (empty when it holds).

        Every epoch the check runs on the ledgers (`census`, `slot_census`, frame and slot
        counters), which every move of a page updates; `full` also recounts everything from
        the page and frame tables and compares the ledgers with them (each audit interval).
        """
        out = []
        bc = self.census
        counts = bc.tolist()  # six numbers: plain Python is cheaper than numpy calls
        if sum(counts) != self.N or min(counts) < 0:
            out.append(f"{self.name}: the page ledger does not partition the footprint: {bc}")
        resident = counts[RAM]
        held = self.free_top + self.balloon_n + self.zpool_frames
        if resident + held != self.nframes:
            out.append(
                f"{self.name}: resident {resident}, free frames {self.free_top}, balloon "
                f"{self.balloon_n}, pool {self.zpool_frames}, frames {self.nframes}"
            )
        fs = self.frames
        budget = self.directives.frame_budget
        over_budget = budget is not None and fs.private_count > budget
        if self.host_swap and over_budget and fs.private_count > self._hs_ceiling:
            out.append(
                f"{self.name}: {fs.private_count} frames resident, above both the host's "
                f"budget {budget} and what it held when the window began"
            )
        sc = self.slot_census.tolist()
        zslots = sc[ZPOOL] if self.zram_slots else 0
        dslots = sc[FRONTSWAP] + sc[SWAP] + (0 if self.zram_slots else sc[ZPOOL])
        if (
            dslots != self.slots_used
            or dslots > self.swap_slots
            or zslots != self.zslots_used
            or zslots > max(self.zram_slots, 0)
        ):
            out.append(
                f"{self.name}: swap slots counted {self.slots_used}+{self.zslots_used}, held "
                f"{dslots}+{zslots}, devices have {self.swap_slots}+{self.zram_slots}"
            )
        fs_view = sc[FRONTSWAP]
        if self.uses_tmem and fs_view != self.tmem_pages:
            out.append(
                f"{self.name}: guest holds {fs_view} frontswap pages, host pool reports "
                f"{self.tmem_pages}"
            )
        if self.alloc_pages + self.tmem_billed > self.maxmem_pages and self.tmem_pages:
            out.append(
                f"{self.name}: RAM {self.alloc_pages} + tmem {self.tmem_billed} pages above "
                f"maxmem {self.maxmem_pages}"
            )
        if full:
            out += self._recount()
        return out

    def _recount(self) -> list[str]:
        """The O(footprint) part of the conservation check: ledgers against the tables."""
        out = []
        loc, slot = self.loc, self.slot
        real = np.array([np.count_nonzero(loc == k) for k in range(NLOC)], np.int64)
        if np.any(real != self.census):
            out.append(f"{self.name}: page ledger {self.census} != page table {real}")
        real_slots = np.array([np.count_nonzero(slot == k) for k in range(NLOC)], np.int64)
        if np.any(real_slots != self.slot_census):
            out.append(f"{self.name}: slot ledger {self.slot_census} != slot table {real_slots}")
        mapped = int(np.count_nonzero(self.frame >= 0))
        if mapped != int(real[RAM]):
            out.append(f"{self.name}: {mapped} pages have a frame, {int(real[RAM])} are resident")
        fs = self.frames
        if fs.merged_count != int(np.count_nonzero(fs.mkey)):
            out.append(f"{self.name}: merged frame counter disagrees with the frames")
        elif fs.merged_count and np.any(fs.state[fs.mkey != 0] != F_RAM):
            out.append(f"{self.name}: a merged frame is not resident")
        backed = int(np.count_nonzero(fs.state == 1))
        hswapped = int(np.count_nonzero(fs.state == 2))
        if fs.backed_count != backed or fs.hswapped_count != hswapped:
            out.append(f"{self.name}: host frame counters disagree with the frames' states")
        if np.count_nonzero((loc >= FRONTSWAP) & (loc <= ZPOOL) & (slot != loc)):
            out.append(f"{self.name}: a swapped page holds no slot of its kind")
        if np.count_nonzero(loc[: self.file_lo] == FILE) or np.count_nonzero(
            slot[self.file_lo :] != NO_SLOT
        ):
            out.append(f"{self.name}: an anonymous page was dropped, or a file page swapped")
        if self.pinned_n and np.count_nonzero(loc[: self.pinned_n] != RAM):
            out.append(f"{self.name}: a pinned page left RAM")
        if self.pool is not None:
            p = self.pool
            if int(np.count_nonzero(p.held)) != int(real_slots[ZPOOL]):
                out.append(
                    f"{self.name}: the compressed pool holds {int(np.count_nonzero(p.held))} "
                    f"pages, {int(real_slots[ZPOOL])} slots point at it"
                )
            if p.frames != p.frames_needed():
                out.append(
                    f"{self.name}: the pool has {p.frames} frames, its contents need "
                    f"{p.frames_needed()}"
                )
        if self.cache is not None:
            out += [f"{self.name}: {m}" for m in self.cache.audit()]
        if self.billing is not None:
            held = np.flatnonzero(slot == FRONTSWAP)
            again = self.billing.recount(held)
            if again != self.billing.bill or np.count_nonzero(self.billing.cost) > len(held):
                out.append(
                    f"{self.name}: the pool bills {self.billing.bill} bytes, its pages cost {again}"
                )
        return out + self.frame_audit()

    def frame_audit(self) -> list[str]:
        """Frames: every resident page has one, no frame is used twice or also free."""
        if self._frames_consistent():
            return []
        mapped = self.frame >= 0
        used = self.frame[mapped]
        free = self.free_stack[: self.free_top]
        parts = [
            used,
            free,
            self.balloon_stack[: self.balloon_n],
            self.zp_stack[: self.zpool_frames],
        ]
        both = np.concatenate(parts)
        seen = np.zeros(self.nframes, bool)
        seen[both] = True
        if len(both) != self.nframes or not seen.all():  # n frames, all seen: no repeats
            return [f"{self.name}: a frame is used twice, or both used and free"]
        if np.any(self.fpage[used] != np.flatnonzero(mapped)):
            return [f"{self.name}: the frame-to-page map disagrees with the page table"]
        return []

    def _frames_consistent(self) -> bool:
        """`frame_audit`'s verdict when it finds nothing, proven more cheaply (False: maybe not).

        If every frame that maps a page is that page's frame (so those pages hold distinct
        frames), as many frames map a page as pages have a frame (so those frames are exactly
        the used ones, and each used frame maps its page back), and the free, balloon and pool
        stacks hold distinct frames mapping no page, as many as the used ones leave, then
        every frame is used or held exactly once. Dense passes over the frame table, no
        index lists: cheaper than `frame_audit`'s own.
        """
        fp, fr = self.fpage, self.frame
        valid = fp >= 0
        n_used = int(np.count_nonzero(valid))
        if n_used != int(np.count_nonzero(fr >= 0)):
            return False
        if n_used:
            if int(fp.max()) >= len(fr):
                return False
            invalid = ~valid
            idx = fp.astype(np.int32)
            idx[invalid] = 0
            ok = fr[idx] == np.arange(len(fp), dtype=np.int32)  # maps back to this frame
            ok |= invalid
            if not ok.all():
                return False
        others = np.concatenate(
            [
                self.free_stack[: self.free_top],
                self.balloon_stack[: self.balloon_n],
                self.zp_stack[: self.zpool_frames],
            ]
        )
        if n_used + len(others) != self.nframes or (fp[others] >= 0).any():
            return False
        seen = np.zeros(self.nframes, bool)
        seen[others] = True
        return int(np.count_nonzero(seen)) == len(others)

    def progress(self) -> float:
        return self.work_seconds / self.alive_seconds if self.alive_seconds else 0.0


def _concat_batches(a: RecordBatch | None, b: RecordBatch | None) -> RecordBatch | None:
    if a is None or len(a) == 0:
        return b if b is not None and len(b) else None
    if b is None or len(b) == 0:
        return a
    payload = None
    if a.payload is not None and b.payload is not None:
        payload = np.concatenate([a.payload, b.payload])
    return RecordBatch(
        np.concatenate([a.pages, b.pages]),
        np.concatenate([a.versions, b.versions]),
        np.concatenate([a.checksums, b.checksums]),
        payload,
    )


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values: np.unique, by sorting (several times faster on small arrays)."""
    s = a.copy()
    s.sort()
    if len(s) < 2:
        return s
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of `a` (a fresh array: it is sorted in place) and how often
    each occurs."""
    if len(a) == 0:
        return a, np.zeros(0, np.int64)
    a.sort()
    keep = np.empty(len(a), bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    starts = np.flatnonzero(keep)
    n = np.empty(len(starts), np.int64)
    np.subtract(starts[1:], starts[:-1], out=n[:-1])
    n[-1] = len(a) - starts[-1]
    return a[starts], n


def _member(a: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """`np.isin(a, sorted_set)` for a sorted, distinct `sorted_set`: a binary search each."""
    if len(a) == 0 or len(sorted_set) == 0:
        return np.zeros(len(a), bool)
    at = sorted_set.searchsorted(a)
    np.minimum(at, len(sorted_set) - 1, out=at)
    return sorted_set[at] == a


class _OrderScan:
    """A reclaim order computed whole (exact LRU: it keeps no scan state)."""

    complete = True

    def __init__(self, order: np.ndarray) -> None:
        self.order = order
        self.total = len(order)

    def prefix(self, m: int) -> np.ndarray:
        """The order (a prefix of it at least `m` long, or all of it)."""
        return self.order

    def commit(self, page: int) -> None:
        """Nothing to record."""


class _ClockScan(_OrderScan):
    """The clock's reclaim order, computed lazily from the hand on.

    The order is every candidate whose referenced bit is clear, in sweep order (page indices
    from the hand up, wrapping at the footprint), then every referenced candidate in sweep
    order. `prefix(m)` scans the page table from the hand in chunks until it has `m`
    unreferenced candidates or has gone all the way round (then the order is `complete`,
    referenced pages included). A candidate is a resident page at or above `pinned_n` and not
    in `exclude` (sorted, distinct).
    """

    def __init__(self, g: GuestModel, exclude: np.ndarray) -> None:
        self.g = g
        self.exclude = exclude
        self.n = g.N
        self.h = g.hand % g.N  # the hand (at N: sweeping starts again at page 0)
        self.pos = 0  # pages scanned, counted along the sweep from the hand
        self.chunks: list[tuple[int, int, np.ndarray]] = []  # (lo, hi, candidate mask)
        self.found: list[np.ndarray] = []  # unreferenced candidates of each chunk
        self.nfound = 0
        self.order = _EI
        self.complete = False
        self._stale = False
        self.total = g.N + 1  # beyond any prefix: asking for this much completes the scan

    def _scan_to(self, upto: int) -> None:
        """Scan the sweep positions [pos, upto), one page-index range at a time."""
        g, n, h = self.g, self.n, self.h
        ex = self.exclude
        while self.pos < upto:
            s0 = self.pos
            if s0 < n - h:  # from the hand up to the end of the footprint
                lo, hi = h + s0, h + min(upto, n - h)
            else:  # then from page 0 up to the hand
                lo, hi = s0 - (n - h), upto - (n - h)
            cm = g.loc[lo:hi] == RAM
            if lo < g.pinned_n:
                cm[: min(g.pinned_n, hi) - lo] = False
            a, b = ex.searchsorted(lo), ex.searchsorted(hi)
            if b > a:
                cm[ex[a:b] - lo] = False
            f = np.flatnonzero(cm & ~g.ref[lo:hi])
            if len(f):
                f += lo
                self.found.append(f)
                self.nfound += len(f)
            self.chunks.append((lo, hi, cm))
            self.pos += hi - lo
            self._stale = True

    def prefix(self, m: int) -> np.ndarray:
        """A prefix of the order at least `m` long (or the whole order)."""
        if self.complete:
            return self.order
        while self.nfound < m and self.pos < self.n:
            density = self.nfound / self.pos if self.pos else 0.5
            step = int((m - self.nfound) / max(density, 0.02) * 1.25) + 4096
            self._scan_to(min(self.n, self.pos + step))
        parts = self.found
        if self.pos >= self.n:  # all the way round: the referenced candidates follow
            self.complete = True
            ref = self.g.ref
            parts = parts + [np.flatnonzero(cm & ref[lo:hi]) + lo for lo, hi, cm in self.chunks]
        elif not self._stale:
            return self.order
        self._stale = False
        parts = [p for p in parts if len(p)]
        self.order = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else _EI)
        return self.order

    def commit(self, page: int) -> None:
        """Record the sweep up to `page`, the victim furthest along the order: the candidates
        swept past lose their referenced bit (all of them when `page` was itself referenced:
        the sweep went all the way round) and the hand moves past `page`."""
        g, n, h = self.g, self.n, self.h
        ref = g.ref
        if ref[page]:  # in the referenced part: a full turn cleared every bit
            for lo, hi, cm in self.chunks:
                r = ref[lo:hi]
                r &= ~cm
        else:
            s_page = (page - h) % n
            for lo, hi, cm in self.chunks:
                s_lo = (lo - h) % n
                if s_lo > s_page:
                    break
                e = min(hi, lo + (s_page - s_lo) + 1)
                r = ref[lo:e]
                r &= ~cm[: e - lo]
        g.hand = page + 1
