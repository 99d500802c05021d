"""The paging core's vocabulary: page locations, counters, stall sources, the latency
histogram, the batched store requests an epoch yields (`Request` and its ops) and the
`Reply` it receives, `EpochStats`, and small numpy helpers the core and the mechanisms share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.stores.codec import RecordBatch

UNTOUCHED, RAM, FRONTSWAP, SWAP, ZPOOL, FILE = 0, 1, 2, 3, 4, 5
NLOC = 6
NO_SLOT = 0
SWAP_CLUSTER = 32  # default pages per write I/O in reclaim (SWAP_CLUSTER_MAX; swap_cluster)
BALLOONING = frozenset({"balloon", "selfballoon"})  # features whose guest sees maxmem
ZERO_PAGE_KEY = np.uint64(0x2E20)  # page-sharing: the key of the zero page in digest mode

# Fault-latency histogram: log-spaced bins from 100 ns to 100 s, 100 per decade (a bin is
# 2.3% wide, so percentiles resolve the queueing differences between mechanisms). The
# latencies are modelled per fault (device service time, queue position, fixed CPU costs),
# not measured on hardware.
HIST_LO, HIST_PER_DECADE, HIST_DECADES = 1e-7, 100, 9
HIST_BINS = HIST_PER_DECADE * HIST_DECADES + 2

#: a guest's per-page table entries that an epoch's page loops read and write together, as
#: one 12-byte record per page: the LRU stamp, the version, the location, the slot, the
#: referenced and read-ahead bits. The guest's `last`, `version`, `loc`, `slot`, `ref` and
#: `ra` arrays are views of its fields, so touching a page costs one cache miss where one
#: table each cost one. `frame` and `dirty` stay arrays of their own: the frame table is
#: what the full audit reads page by page from the frames' side (in records it would read a
#: record a frame), and the same 17 bytes a page as separate tables, with no padding.
PAGE_RECORD = np.dtype(
    {
        "names": ["last", "version", "loc", "slot", "ref", "ra"],
        "formats": ["<i4", "<u4", "i1", "i1", "?", "?"],
        "offsets": [0, 4, 8, 9, 10, 11],
        "itemsize": 12,
    }
)


def page_records(n: int, old: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """`n` page records: nothing touched (all zero), or the values of `old`'s arrays."""
    rec = np.zeros(n, PAGE_RECORD)
    if old is not None:
        for k in PAGE_RECORD.names:
            rec[k] = old[k]
    return rec


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
    # CPU the guest's vCPU spends on background reclaim (kswapd's puts, exits, compression)
    "background_cpu",
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
    "readahead_hits",
    "readahead_misses",
    "evictions",
    "direct_reclaims",
    # CPU events: hypercalls (tmem puts, failed puts, gets, flushes) and I/O exits (one per
    # batch into a host disk cache, one per read cluster found there)
    "hypercalls",
    "io_exits",
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
    "cache_writes",
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
