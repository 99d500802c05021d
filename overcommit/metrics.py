"""Per-epoch time series of guests and hosts, and the figures the summary reports.

`Recorder` fills preallocated numpy columns as epochs complete (one row per guest-epoch and per
host-epoch) and turns them into pandas DataFrames in a fixed order: epoch, then entity in
scenario order. The column lists below are the documented schema (docs/output.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas loads only where frames are built (the driver), not in every actor
    import pandas as pd

GUEST_COLUMNS: dict[str, str] = {
    "alive": "1 if the guest ran this epoch, 0 if it was down (OOM restart)",
    "work_s": "seconds of the epoch the guest spent working",
    "stall_s": "synchronous stall incurred this epoch (may carry into later epochs)",
    "touches": "page touches the workload issued",
    "faults": "faults served: first touches, frontswap gets and disk swap-ins",
    "disk_reads": "pages read from the swap disk (readahead included)",
    "disk_writes": "pages written to the swap disk",
    "tmem_puts": "frontswap puts that succeeded",
    "tmem_put_failures": "frontswap puts the pool refused",
    "tmem_gets": "frontswap gets",
    "untouched_pages": "footprint pages never touched (or reset by an OOM kill)",
    "resident_pages": "footprint pages in guest RAM",
    "frontswap_pages": "footprint pages whose only copy is in host tmem",
    "swap_pages": "footprint pages whose only copy is on the swap disk",
    "tmem_pages": "pages the host pool holds for the guest (clean copies of resident pages too)",
    "free_frames": "guest RAM frames not holding a footprint page",
    "alloc_pages": "the guest's current allocation: its frames not held by the balloon",
    "balloon_pages": "frames the balloon holds (handed back to the host)",
    "balloon_target": "the balloon size the host's target (or the self-balloon worker) asks for",
    "host_frames": "the guest's frames resident in host RAM",
    "hswap_frames": "the guest's frames the host has paged out to its swap",
    "host_swap_ins": "host-swapped frames read back because the guest used them",
    "double_swaps": "pages the guest swapped out whose frame the host first had to read back",
    "cache_pages": "pages of the guest's swap disk in the host's write-back cache (or RAM disk)",
    "cache_dirty": "cached pages not yet written to the disk",
    "zpool_pages": "footprint pages whose only copy is in the compressed pool (zswap/zram)",
    "zpool_held": "pages with data in the compressed pool (clean copies of resident pages too)",
    "zpool_stale": "freed zram slots whose data the pool still holds (periodic discard)",
    "zpool_bytes": "compressed bytes the pool holds (live and stale)",
    "zpool_frames": "guest frames the compressed pool occupies",
    "merged_frames": "the guest's frames merged onto shared host frames (page sharing)",
    "file_pages": "file-backed pages dropped from the page cache (content on the guest's disk)",
    "file_reads": "page-cache pages read from the guest's file disk (first reads and misses)",
    "ephemeral_pages": "the guest's clean page-cache pages in the host's ephemeral pool",
    "cleancache_hits": "page-cache misses served from the host's ephemeral pool",
    "tmem_billed": "host RAM pages its pool pages are billed (compressed, deduplicated)",
}

HOST_COLUMNS: dict[str, str] = {
    "up": "1 while the host runs, 0 while it is down (failed, not yet recovered)",
    "ram_pages": "host physical RAM",
    "reserve_pages": "hypervisor reserve",
    "guest_frames": "guest frames backed by host RAM",
    "tmem_pages": "host RAM the persistent pool takes (its pages, unless compressed/deduplicated)",
    "cache_pages": "disk cache (or RAM disk) pages",
    "free_pages": "free host RAM",
    "tmem_capacity": "the pool's cap for the current sync window",
    "hswap_pages": "guest frames in host swap (not in RAM)",
    "lendable_pages": "free RAM no guest allocation claims, at the window's start",
    "shared_pages": "host frames holding contents several guest frames share (page sharing)",
    "mem_state": "VMware-style free-memory state: 0 high, 1 clear, 2 soft, 3 hard, 4 low",
    "ephemeral_pages": "ephemeral tmem pages stored (cleancache)",
    "ephemeral_capacity": "the sum of the guests' ephemeral quotas for the current sync window",
    "tmem_stored": "persistent tmem pages stored (the guests' pool pages)",
    "tmem_shared_pages": "host RAM the deduplicating pool's shared store takes this window",
}


#: Rows of a time-series chunk written at a time (`Recorder.chunks`).
CHUNK_ROWS = 1 << 18

#: Guest columns kept at 64 bits while the run records them (all others are page or event
#: counts of one guest in one epoch, held as int32: 2^31 pages of 4 KiB is 8 TiB).
WIDE_GUEST_COLUMNS = frozenset({"zpool_bytes"})


_ZPOOL_COLUMNS = frozenset(
    {"zpool_pages", "zpool_held", "zpool_stale", "zpool_bytes", "zpool_frames"}
)
_CACHE_COLUMNS = frozenset({"cache_pages", "cache_dirty"})
_BALLOON_COLUMNS = frozenset({"balloon_pages", "balloon_target"})
#: The guest columns only a guest feature (`Mechanism.guest_features`) makes non-zero.
FEATURE_COLUMNS: dict[str, frozenset[str]] = {
    "tmem": frozenset(
        {
            "tmem_puts",
            "tmem_put_failures",
            "tmem_gets",
            "frontswap_pages",
            "tmem_pages",
            "tmem_billed",
        }
    ),
    "balloon": _BALLOON_COLUMNS,
    "selfballoon": _BALLOON_COLUMNS,
    "host_swap": frozenset({"hswap_frames", "host_swap_ins", "double_swaps"}),
    "cached_disk": _CACHE_COLUMNS,
    "ramdisk": _CACHE_COLUMNS,
    "zswap": _ZPOOL_COLUMNS,
    "zram": _ZPOOL_COLUMNS,
    "cleancache": frozenset({"ephemeral_pages", "cleancache_hits"}),
    "page_sharing": frozenset({"merged_frames"}),
}
#: The guest columns only a workload with a page cache (`file_cache`) makes non-zero.
FILE_COLUMNS = frozenset({"file_pages", "file_reads"})
#: The columns the paging core itself may fill for any guest.
CORE_COLUMNS = frozenset(GUEST_COLUMNS).difference(FILE_COLUMNS, *FEATURE_COLUMNS.values())


def recorded_columns(features: frozenset[str], has_files: bool) -> frozenset[str]:
    """The guest columns a guest with these features (and a page cache or not) may record a
    non-zero value in: the others stay zero all run, and the `Recorder` never touches their
    memory. A feature this table does not know (a registered mechanism's) may fill any."""
    if not features <= FEATURE_COLUMNS.keys():
        return frozenset(GUEST_COLUMNS)
    out = CORE_COLUMNS.union(*(FEATURE_COLUMNS[f] for f in features))
    return out | FILE_COLUMNS if has_files else out


def guest_dtype(column: str) -> type:
    """The dtype a guest column is recorded in during the run."""
    if column.endswith("_s"):
        return np.float64
    return np.int64 if column in WIDE_GUEST_COLUMNS else np.int32


class Recorder:
    """Collects the time series for a run of `epochs` epochs of `dt` seconds.

    Guest counts are held as int32 during the run (half the driver's memory for the series of
    a large cluster) and widened to int64 column by column when the frames are built. A column
    is written only once a non-zero value comes for it: the columns of mechanisms a run does
    not use stay zero and their memory is never touched (`np.zeros` maps it lazily)."""

    def __init__(
        self,
        guest_names: list[str],
        guest_hosts: list[str],
        host_names: list[str],
        epochs: int,
        dt: float,
    ) -> None:
        self.dt = dt
        self.epochs = epochs
        self.guest_names = guest_names
        self.guest_host = guest_hosts
        self.host_names = host_names
        self.gidx = {n: i for i, n in enumerate(guest_names)}
        self.hidx = {n: i for i, n in enumerate(host_names)}
        gshape = (epochs, len(guest_names))
        self.g = {c: np.zeros(gshape, guest_dtype(c)) for c in GUEST_COLUMNS}
        self.h = {c: np.zeros((epochs, len(host_names)), np.int64) for c in HOST_COLUMNS}
        self.ghost = np.full(gshape, -1, np.int32)  # the host each guest ran on, per epoch
        self._written: set[str] = set()  # guest columns a non-zero value was recorded in

    def truncate(self, epochs: int) -> None:
        """Keep the first `epochs` epochs only (a run that stopped early)."""
        self.epochs = epochs
        self.g = {c: arr[:epochs] for c, arr in self.g.items()}
        self.h = {c: arr[:epochs] for c, arr in self.h.items()}
        self.ghost = self.ghost[:epochs]

    def record_guests(
        self, e0: int, e1: int, names: list[str], rows: dict[str, np.ndarray], host: str
    ) -> None:
        """Store the rows of several guests that ran on `host` for epochs [e0, e1) at once:
        `rows[c]` is (guests, epochs), guests in the order of `names`."""
        if not names:
            return
        idx = np.array([self.gidx[n] for n in names], np.int64)
        written = self._written
        for c, arr in self.g.items():
            v = rows[c]
            if c in written:
                arr[e0:e1, idx] = v.T
            elif v.any():  # a column's first non-zero values
                written.add(c)
                arr[e0:e1, idx] = v.T
            # else: the column holds zeros only so far and these are zeros too; its memory is
            # left untouched (a mechanism's columns that stay zero never become resident)
        self.ghost[e0:e1, idx] = self.hidx[host]

    def record_host(self, e0: int, e1: int, window: Any) -> None:
        """Store one host's rows for epochs [e0, e1)."""
        j = self.hidx[window.name]
        for c, arr in self.h.items():
            arr[e0:e1, j] = window.rows[c]

    def _frame(
        self, cols: dict[str, np.ndarray], names: list[str], key: str, lo: int, hi: int
    ) -> pd.DataFrame:
        n = len(names)
        epochs = np.repeat(np.arange(lo, hi), n)
        data: dict[str, object] = {
            "epoch": epochs,
            "t": np.round(epochs * self.dt, 9),
            key: np.tile(np.array(names, dtype=object), hi - lo),
        }
        for c, arr in cols.items():  # the frames' columns are int64 / float64 (docs/output.md)
            flat = arr[lo:hi].reshape(-1)
            data[c] = flat if flat.dtype.itemsize == 8 else flat.astype(np.int64)
        import pandas as pd

        return pd.DataFrame(data, copy=False)  # the columns as built: no consolidating copy

    def guests_frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """The guests' time series (guests.csv's rows) of epochs [lo, hi), all by default."""
        hi = self.epochs if hi is None else hi
        names = np.array([*self.host_names, ""], dtype=object)  # "": no host (down)
        df = self._frame(self.g, self.guest_names, "guest", lo, hi)
        df.insert(3, "host", names[self.ghost[lo:hi].reshape(-1)])
        return df

    def hosts_frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """The hosts' time series (hosts.csv's rows) of epochs [lo, hi), all by default."""
        hi = self.epochs if hi is None else hi
        return self._frame(self.h, self.host_names, "host", lo, hi)

    def chunks(self, table: str, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """`table` ("guests" or "hosts") as frames of whole epochs, about `rows` rows each, in
        order: what the run directory's files are written from, so that the whole frame of a
        large run is never held at once."""
        frame, width = (
            (self.guests_frame, len(self.guest_names))
            if table == "guests"
            else (self.hosts_frame, len(self.host_names))
        )
        step = max(1, rows // max(1, width))
        for lo in range(0, max(self.epochs, 1), step):
            yield frame(lo, min(lo + step, self.epochs))


# -- how the report and the live dashboard draw these series (one palette for both) --------

#: The host memory uses stacked in the timeline, bottom to top (hosts.parquet columns).
HOST_STACK = (
    ("reserve_pages", "reserve", "#c7c7c7"),
    ("guest_frames", "guest frames", "#1f77b4"),
    ("tmem_pages", "tmem", "#ff7f0e"),
    ("ephemeral_pages", "ephemeral (cleancache)", "#bcbd22"),
    ("cache_pages", "disk cache / RAM disk", "#2ca02c"),
    ("free_pages", "free", "#e8f4e8"),
)

#: Event kinds drawn as vertical lines on the progress plot, with their colours. Any kind
#: starting with `migrat` (migration start, end, abort) is drawn too, in blue.
MARKER_KINDS: dict[str, str] = {
    "fail_host": "#d62728",
    "recover_host": "#2ca02c",
    "tmem_backend_failure": "#8c1515",
    "restart": "#ff7f0e",
    "ha_restart": "#ff7f0e",
    "restart_failed": "#000000",
    "oom_kill": "#9467bd",
    "host_oom_kill": "#e377c2",
    "tmem_freeze": "#7f7f7f",
    "tmem_thaw": "#bcbd22",
    "tmem_flush": "#17becf",
    "host_reclaim": "#8c564b",
    "host_release": "#c49c94",
}
MIGRATION_COLOR = "#1f77b4"


def marker_color(kind: str) -> str | None:
    """The colour of an event kind's vertical line, or None when it is not drawn."""
    if kind in MARKER_KINDS:
        return MARKER_KINDS[kind]
    if kind.startswith("migrat"):
        return MIGRATION_COLOR
    return None
