"""A guest kernel's memory: where each page is, reclaim, swap, faults, OOM — vectorised.

Every page of the workload's footprint is, from the guest's point of view, in exactly one place
(`loc`): untouched, guest RAM, frontswap (host tmem) or the swap disk. A page may also hold a
swap *slot* (`slot`): pages in frontswap or on disk always do; a resident page keeps the slot
it was read from while it stays clean (the swap cache), so evicting it again costs no I/O. A
write frees the slot (frontswap invalidate or a discard on disk), as Linux does when it reuses
a swap-cache page. Resident pages occupy guest-physical frames taken from a free stack; the host
backs frames with RAM (`nodes.host.GuestFrames`).

Reclaim picks cold pages by a named LRU approximation (`lru`: exact last-touch epoch; `clock`:
second chance over referenced bits). Below the low watermark kswapd reclaims asynchronously up
to the high watermark (no stall, device bandwidth used); a fault that would take free memory
below the min watermark reclaims synchronously (direct reclaim: the guest stalls). Swap-in
reads ahead an aligned cluster of `readahead` pages from disk. When neither RAM nor swap has
room the OOM killer ends the workload, which restarts after `oom_restart` seconds.

An epoch runs as a generator (`GuestModel.epoch`) that yields at most two batched store
requests and receives their replies, so the model never touches Redis itself: the runtime that
drives it (inline or Ray) executes the requests with whichever client it has.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.nodes.host import GuestFrames
from overcommit.profiles import Costs, DeviceQueue
from overcommit.rng import stream
from overcommit.stores.codec import RecordBatch, make_batch, verify
from overcommit.workloads import TouchStreams, make_workload

UNTOUCHED, RAM, FRONTSWAP, SWAP = 0, 1, 2, 3
NO_SLOT = 0
SWAP_CLUSTER = 32  # pages per write I/O in reclaim (SWAP_CLUSTER_MAX)

# Fault-latency histogram: log-spaced bins from 100 ns to 100 s, 20 per decade.
HIST_LO, HIST_PER_DECADE, HIST_DECADES = 1e-7, 20, 9
HIST_BINS = HIST_PER_DECADE * HIST_DECADES + 2

STALL_SOURCES = ("first_touch", "frontswap_get", "swap_read", "reclaim_put", "reclaim_write")

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
    "readahead_pages",
    "evictions",
    "direct_reclaims",
    "lost_pages",
    "stale_reads",
    "guest_oom_kills",
    "host_frames_allocated",
)


def _hist_bins(lat: np.ndarray) -> np.ndarray:
    b = np.floor(np.log10(np.maximum(lat, HIST_LO * 0.5) / HIST_LO) * HIST_PER_DECADE) + 1
    return np.clip(b, 0, HIST_BINS - 1).astype(np.int64)


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


@dataclass
class SwapOps:
    """One guest's batch against its swap disk in shared storage: reads, frees, writes."""

    reads: np.ndarray
    frees: np.ndarray
    writes: RecordBatch | None
    drop: bool = False


@dataclass
class Request:
    guest: str
    host: str
    disk: str
    tmem: TmemOps | None = None
    swap: SwapOps | None = None


@dataclass
class Reply:
    """What the stores answered; fields mirror the store adapters' result objects."""

    tmem: Any = None  # TmemBatchResult
    swap: Any = None  # SwapBatchResult
    area_flushed: int = 0
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
    device_busy: float = 0.0
    violations: list[str] = field(default_factory=list)


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
    ) -> None:
        self.spec = spec
        self.name: str = spec.name
        self.host = host
        self.seed = seed
        self.page_size = page_size
        self.payload = payload
        self.costs = costs
        self.uses_tmem = uses_tmem
        self.exclusive_gets = exclusive_gets
        self.workload = make_workload(spec.workload, page_size)
        self.N = self.workload.footprint
        self.alloc_pages = spec.memory // page_size
        self.maxmem_pages = spec.maxmem // page_size
        self.swap_slots = spec.swap // page_size
        self.pinned_n = min(int(round(spec.pinned * self.N)), self.alloc_pages)
        self.readahead = int(spec.readahead)
        wm = spec.watermarks
        self.wm_min = max(1, math.ceil(wm.min * self.alloc_pages))
        self.wm_low = max(self.wm_min + 1, math.ceil(wm.low * self.alloc_pages))
        self.wm_high = max(self.wm_low + 1, math.ceil(wm.high * self.alloc_pages))
        self.frames = GuestFrames(self.alloc_pages, eager=(boot == "eager"))
        self.incarnation = incarnation
        self.counters: dict[str, int] = {k: 0 for k in COUNTERS}
        self.stall_by_source: dict[str, float] = {k: 0.0 for k in STALL_SOURCES}
        self.hist = np.zeros(HIST_BINS, np.int64)
        self.alive_seconds = 0.0
        self.work_seconds = 0.0
        self.stall_seconds = 0.0
        self.downtime_seconds = 0.0
        self.debt = 0.0
        self.alive = True
        self.down_until = 0.0
        self.tmem_quota = 0  # set by the host each sync window
        self.tmem_capacity = 0
        self.tmem_pages = 0  # the guest's pool size as the host's Redis reported it
        self.window_new_puts = 0
        self.census = np.zeros(4, np.int64)  # pages per location after the last epoch
        self.peak_tmem_pages = 0
        self.peak_billed_pages = 0
        self._reset_memory()

    # -- identity ---------------------------------------------------------------------------
    @property
    def disk(self) -> str:
        """The name of this incarnation's swap disk in shared storage."""
        return f"{self.name}#{self.incarnation}"

    def _reset_memory(self) -> None:
        """Fresh workload state: nothing touched, every frame free, a new random stream."""
        n = self.N
        self.loc = np.zeros(n, np.int8)
        self.slot = np.zeros(n, np.int8)
        self.version = np.zeros(n, np.uint32)
        self.frame = np.full(n, -1, np.int32)
        self.last = np.zeros(n, np.int64)  # last touched epoch + 1 (lru)
        self.ref = np.zeros(n, bool)  # referenced bit (clock)
        self.hand = 0
        self.free_stack = np.arange(self.alloc_pages - 1, -1, -1, dtype=np.int32)
        self.free_top = self.alloc_pages
        self.slots_used = 0
        self.wl_time = 0.0
        self.restarts = getattr(self, "restarts", -1) + 1
        purpose = f"workload/{self.restarts}"
        self.rng = TouchStreams(
            *(stream(self.seed, self.name, self.incarnation, f"{purpose}/{k}") for k in "crw")
        )
        if self.pinned_n:
            pinned = np.arange(self.pinned_n)
            self._map_in(pinned)
            self.loc[pinned] = RAM
            self.ref[pinned] = True

    # -- frames -----------------------------------------------------------------------------
    def _map_in(self, pages: np.ndarray) -> int:
        """Give resident frames to pages; returns how many frames the host newly backed."""
        k = len(pages)
        if k == 0:
            return 0
        frames = self.free_stack[self.free_top - k : self.free_top][::-1].copy()
        self.free_top -= k
        self.frame[pages] = frames
        new = self.frames.back(frames)
        self.counters["host_frames_allocated"] += new
        return new

    def _map_out(self, pages: np.ndarray) -> None:
        k = len(pages)
        if k == 0:
            return
        self.free_stack[self.free_top : self.free_top + k] = self.frame[pages]
        self.free_top += k
        self.frame[pages] = -1

    # -- reclaim ----------------------------------------------------------------------------
    def _select_victims(self, k: int, touched: np.ndarray, epoch: int) -> np.ndarray:
        """Up to k resident, unpinned, untouched pages, coldest first."""
        if k <= 0:
            return np.empty(0, np.int64)
        mask = self.loc == RAM
        mask[: self.pinned_n] = False
        mask[touched] = False
        cand = np.flatnonzero(mask)
        if len(cand) == 0:
            return np.empty(0, np.int64)
        if self.spec.lru == "lru":
            key = self.last[cand] * self.N + cand  # unique: ties broken by page index
            if len(cand) > k:
                part = np.argpartition(key, k - 1)[:k]
                cand, key = cand[part], key[part]
            return cand[np.argsort(key)]
        # clock: sweep from the hand; referenced pages get a second chance (bit cleared)
        start = int(np.searchsorted(cand, self.hand))
        order = np.concatenate([cand[start:], cand[:start]])
        refd = self.ref[order]
        unref_pos = np.flatnonzero(~refd)
        if len(unref_pos) >= k:
            stop = unref_pos[k - 1]
            self.ref[order[: stop + 1]] = False
            victims = order[unref_pos[:k]]
            self.hand = int(order[stop]) + 1
            return victims
        # a full sweep clears every bit; the second pass takes pages in hand order
        self.ref[order] = False
        rest = order[refd][: k - len(unref_pos)]
        victims = np.concatenate([order[unref_pos], rest])
        self.hand = int(victims[-1]) + 1 if len(victims) else self.hand
        return victims

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
        consumed = min(self.debt, dt)
        self.debt -= consumed
        work = dt - consumed
        pages, writes = self.workload.touches(self.rng, self.wl_time, work)
        self.wl_time += dt
        c["touches"] += len(pages)
        uniq = np.unique(pages)
        loc_u = self.loc[uniq]
        f_zero = uniq[loc_u == UNTOUCHED]
        f_fs = uniq[loc_u == FRONTSWAP]
        f_sw = uniq[loc_u == SWAP]
        # swap-in reads an aligned cluster around each disk fault
        ra = self.readahead
        if len(f_sw):
            clusters = np.unique(f_sw // ra)
            reads = (clusters[:, None] * ra + np.arange(ra)).ravel()
            reads = reads[reads < self.N]
            reads = reads[self.loc[reads] == SWAP]
        else:
            clusters = np.empty(0, np.int64)
            reads = f_sw
        need = len(f_zero) + len(f_fs) + len(reads)

        # reclaim: kswapd (async) to the high watermark, then direct reclaim (sync) if needed
        free = self.free_top
        async_n = self.wm_high - free if free < self.wm_low else 0
        direct_n = max(0, self.wm_min + need - free - async_n)
        victims = self._select_victims(async_n + direct_n, uniq, epoch)
        has_slot = self.slot[victims] != NO_SLOT
        dirty_idx = np.flatnonzero(~has_slot)
        room = self.swap_slots - self.slots_used
        if len(dirty_idx) > room:  # no swap slot for the rest: they cannot leave RAM
            keep = np.ones(len(victims), bool)
            keep[dirty_idx[room:]] = False
            victims, has_slot = victims[keep], has_slot[keep]
        if free + len(victims) < need:
            extra = np.setdiff1d(reads, f_sw, assume_unique=True)
            short = need - free - len(victims)
            if len(extra) >= short:  # drop readahead pages before giving up
                reads = np.setdiff1d(reads, extra[len(extra) - short :], assume_unique=True)
                need = len(f_zero) + len(f_fs) + len(reads)
            else:
                return (yield from self._oom_kill(t, dt, work))
        n_async = min(async_n, len(victims))
        is_async = np.zeros(len(victims), bool)
        is_async[:n_async] = True
        clean = victims[has_slot]
        dirty = victims[~has_slot]
        dirty_async = is_async[~has_slot]
        direct = len(victims) > n_async
        if direct:
            c["direct_reclaims"] += 1

        # slots freed by this epoch's swap-ins: written pages, or all faults when swap is full
        swap_full = 2 * self.slots_used > self.swap_slots
        wset = np.unique(pages[writes])
        free_slot = wset[self.slot[wset] != NO_SLOT]
        if swap_full:
            free_slot = np.union1d(free_slot, np.union1d(f_fs, f_sw))
        if self.exclusive_gets:  # an exclusive get already removed the copy
            free_slot = np.setdiff1d(free_slot, f_fs, assume_unique=True)
        fs_flush = free_slot[self.slot[free_slot] == FRONTSWAP]
        sw_free = free_slot[self.slot[free_slot] == SWAP]

        # phase 1: tmem gets/flushes/puts and disk reads/frees (and writes without tmem)
        put_batch = None
        disk_batch = None
        if len(dirty):
            batch = make_batch(
                self.name,
                dirty.astype(np.uint32),
                self.version[dirty],
                self.payload,
                ps,
                self.workload.compressibility,
            )
            if self.uses_tmem:
                put_batch = batch
            else:
                disk_batch = batch
        req = Request(self.name, self.host, self.disk)
        if self.uses_tmem and (len(f_fs) or len(fs_flush) or put_batch is not None):
            req.tmem = TmemOps(
                gets=f_fs.astype(np.uint32),
                flushes=fs_flush.astype(np.uint32),
                puts=put_batch,
                quota=self.tmem_quota,
                capacity=self.tmem_capacity,
                exclusive_gets=self.exclusive_gets,
            )
        if len(reads) or len(sw_free) or disk_batch is not None:
            req.swap = SwapOps(reads.astype(np.uint32), sw_free.astype(np.uint32), disk_batch)
        reply = (yield req) if (req.tmem or req.swap) else Reply()
        violations: list[str] = []

        put_ok = np.zeros(len(dirty), bool)
        if req.tmem is not None:
            r = reply.tmem
            self._check_read(f_fs, r.found, r.got, "frontswap", violations)
            put_ok = np.asarray(r.put_ok, bool) if put_batch is not None else put_ok
            c["frontswap_gets"] += int(np.count_nonzero(r.found))
            c["frontswap_flushes"] += int(r.flushed)
            c["frontswap_invalidated"] += int(r.invalidated)
            self.tmem_pages = int(r.guest_pages)
        if req.swap is not None:
            self._check_read(reads, reply.swap.found, reply.swap.got, "swap", violations)
            c["disk_frees"] += int(reply.swap.freed)

        # phase 2: pages the pool refused go to the swap disk
        failed = dirty[~put_ok] if self.uses_tmem else np.empty(0, np.int64)
        if len(failed):
            fb = make_batch(
                self.name,
                failed.astype(np.uint32),
                self.version[failed],
                self.payload,
                ps,
                self.workload.compressibility,
            )
            yield Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, fb))

        # apply: evictions
        to_disk = dirty[~put_ok]
        to_fs = dirty[put_ok]
        self._map_out(victims)
        self.loc[clean] = self.slot[clean]
        self.loc[to_fs] = FRONTSWAP
        self.slot[to_fs] = FRONTSWAP
        self.loc[to_disk] = SWAP
        self.slot[to_disk] = SWAP
        self.slots_used += len(dirty)
        self.ref[victims] = False
        # apply: swap-ins and first touches
        incoming = np.concatenate([f_zero, f_fs, reads])
        newly_backed = self._map_in(incoming)
        self.loc[incoming] = RAM
        self.slot[f_zero] = NO_SLOT
        if self.exclusive_gets:
            self.slot[f_fs] = NO_SLOT
            self.slots_used -= len(f_fs)
        self.slot[free_slot] = NO_SLOT
        self.slots_used -= len(free_slot)
        # apply: the touches themselves
        wp, wc = np.unique(pages[writes], return_counts=True)
        self.version[wp] += wc.astype(np.uint32)
        self.last[uniq] = epoch + 1
        self.ref[uniq] = True

        # counters
        n_put = len(dirty) if self.uses_tmem else 0
        n_fail = int(np.count_nonzero(~put_ok)) if self.uses_tmem else 0
        new_puts = n_put
        self.window_new_puts += new_puts
        c["frontswap_puts"] += n_put - n_fail
        c["frontswap_put_failures"] += n_fail
        c["evictions"] += len(victims)
        c["first_touches"] += len(f_zero)
        c["faults"] += len(f_zero) + len(f_fs) + len(f_sw)
        c["major_faults"] += len(clusters)
        c["readahead_pages"] += len(reads) - len(f_sw)
        c["disk_reads"] += len(reads)
        c["disk_read_ops"] += len(clusters)
        write_ops = -(-len(to_disk) // SWAP_CLUSTER) if len(to_disk) else 0
        c["disk_writes"] += len(to_disk)
        c["disk_write_ops"] += write_ops

        # time: synchronous costs on the critical path, device demand for all I/O
        costs = self.costs
        dev = device.profile
        lat_zero = costs.minor_fault + (costs.host_page_alloc if newly_backed else 0.0)
        s_zero = len(f_zero) * costs.minor_fault + newly_backed * costs.host_page_alloc
        lat_fs = costs.minor_fault + costs.get(ps)
        s_fs = len(f_fs) * lat_fs
        read_bytes = ra * ps
        lat_sw = costs.major_fault + dev.op_time(False, read_bytes) + device.wait(1, read_bytes)
        s_sw = len(clusters) * lat_sw + (len(f_sw) - len(clusters)) * costs.minor_fault
        # direct reclaim: the sync share of puts and of disk writes
        sync_dirty = ~dirty_async
        s_put = 0.0
        if self.uses_tmem:
            ok_sync = int(np.count_nonzero(put_ok & sync_dirty))
            fail_sync = int(np.count_nonzero(~put_ok & sync_dirty))
            s_put = ok_sync * costs.put(ps) + fail_sync * costs.failed_put()
        sync_disk = int(np.count_nonzero(~put_ok & sync_dirty))
        s_write = 0.0
        if sync_disk:
            ops = -(-sync_disk // SWAP_CLUSTER)
            wbytes = min(sync_disk, SWAP_CLUSTER) * ps
            s_write = ops * (dev.op_time(True, wbytes) + device.wait(1, wbytes))
        stall = s_zero + s_fs + s_sw + s_put + s_write
        for src, v in zip(STALL_SOURCES, (s_zero, s_fs, s_sw, s_put, s_write)):
            self.stall_by_source[src] += v
        # fault latency histogram
        if len(f_zero):
            self.hist[_hist_bins(np.array([lat_zero]))[0]] += len(f_zero)
        if len(f_fs):
            self.hist[_hist_bins(np.array([lat_fs]))[0]] += len(f_fs)
        if len(clusters):
            self.hist[_hist_bins(np.array([lat_sw]))[0]] += len(clusters)
            self.hist[_hist_bins(np.array([costs.minor_fault]))[0]] += len(f_sw) - len(clusters)
        busy = dev.occupancy(len(clusters), len(reads) * ps) + dev.occupancy(
            write_ops, len(to_disk) * ps
        )
        self.debt += stall
        self.stall_seconds += stall
        self.alive_seconds += dt
        self.work_seconds += work
        billed = self.alloc_pages + self.tmem_pages
        self.peak_tmem_pages = max(self.peak_tmem_pages, self.tmem_pages)
        self.peak_billed_pages = max(self.peak_billed_pages, billed)
        violations += self.conservation()
        return EpochStats(
            alive=True,
            work=work,
            stall=stall,
            touches=len(pages),
            faults=len(f_zero) + len(f_fs) + len(f_sw),
            disk_reads=len(reads),
            disk_writes=len(to_disk),
            puts=n_put - n_fail,
            put_failures=n_fail,
            gets=len(f_fs),
            device_busy=busy,
            violations=violations,
        )

    def _check_read(
        self, pages: np.ndarray, found: np.ndarray, got: RecordBatch, where: str, out: list[str]
    ) -> None:
        """Compare records read back from a store with the versions the guest last wrote."""
        found = np.asarray(found, bool)
        missing = pages[~found]
        if len(missing):
            self.counters["lost_pages"] += len(missing)
            out.append(
                f"{self.name}: {len(missing)} page(s) missing from {where}, e.g. page "
                f"{int(missing[0])} version {int(self.version[missing[0]])}"
            )
        if len(got):
            expect = self.version[got.pages.astype(np.int64)]
            bad = (got.versions != expect) | verify(
                self.name, got, self.payload, self.page_size, self.workload.compressibility
            )
            nbad = int(np.count_nonzero(bad))
            if nbad:
                i = int(np.flatnonzero(bad)[0])
                self.counters["stale_reads"] += nbad
                out.append(
                    f"{self.name}: {nbad} stale record(s) read from {where}, e.g. page "
                    f"{int(got.pages[i])} has version {int(got.versions[i])}, "
                    f"last written {int(expect[i])}"
                )

    def _oom_kill(self, t: float, dt: float, work: float) -> Generator[Request, Reply, EpochStats]:
        """Neither RAM nor swap has room: the OOM killer ends the workload; it restarts later."""
        self.counters["guest_oom_kills"] += 1
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, None, drop=True))
        if self.uses_tmem:
            req.tmem = TmemOps(_E, _E, None, 0, 0, self.exclusive_gets, flush_area=True)
        yield req
        self.tmem_pages = 0
        self.alive_seconds += dt
        self.work_seconds += work
        self.alive = False
        self.down_until = t + dt + self.spec.oom_restart
        self._reset_memory()
        return EpochStats(alive=True, work=work, violations=self.conservation())

    # -- host-requested operations ----------------------------------------------------------
    def drain_tmem(self) -> Generator[Request, Reply, int]:
        """Move every page this guest holds in tmem to its swap disk, then flush the pool.

        A cooperative guest does this when asked (a partial swapoff to disk); an uncooperative
        one ignores the request. Returns the pages moved. The writes are background I/O.
        """
        if not self.spec.cooperative or not self.uses_tmem:
            return 0
        held = np.flatnonzero(self.slot == FRONTSWAP)
        if len(held) == 0:
            return 0
        reply = yield Request(
            self.name,
            self.host,
            self.disk,
            tmem=TmemOps(held.astype(np.uint32), _E, None, 0, 0, False),
        )
        out: list[str] = []
        self._check_read(held, reply.tmem.found, reply.tmem.got, "frontswap", out)
        batch = make_batch(
            self.name,
            held.astype(np.uint32),
            self.version[held],
            self.payload,
            self.page_size,
            self.workload.compressibility,
        )
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, batch))
        req.tmem = TmemOps(_E, _E, None, 0, 0, False, flush_area=True)
        yield req
        in_fs = held[self.loc[held] == FRONTSWAP]
        self.loc[in_fs] = SWAP
        self.slot[held] = SWAP
        self.tmem_pages = 0
        self.counters["disk_writes"] += len(held)
        self.counters["disk_write_ops"] += -(-len(held) // SWAP_CLUSTER)
        self.counters["frontswap_flushes"] += len(held)
        return len(held)

    # -- invariants ------------------------------------------------------------------------
    def location_counts(self) -> dict[str, int]:
        bc = np.bincount(self.loc, minlength=4)
        return {
            "untouched": int(bc[0]),
            "ram": int(bc[1]),
            "frontswap": int(bc[2]),
            "swap": int(bc[3]),
        }

    def conservation(self) -> list[str]:
        """Violations of the guest's page and frame conservation (empty when it holds)."""
        out = []
        bc = np.bincount(self.loc, minlength=4)
        if bc.sum() != self.N or len(bc) != 4:
            out.append(f"{self.name}: page locations do not partition the footprint")
        resident = int(bc[RAM])
        if resident + self.free_top != self.alloc_pages:
            out.append(
                f"{self.name}: resident {resident} + free frames {self.free_top} != "
                f"allocation {self.alloc_pages}"
            )
        self.census = bc
        slots = int(np.count_nonzero(self.slot))
        if slots != self.slots_used or slots > self.swap_slots:
            out.append(
                f"{self.name}: swap slots counted {self.slots_used}, held {slots}, "
                f"device has {self.swap_slots}"
            )
        if np.any(self.slot[self.loc == FRONTSWAP] != FRONTSWAP) or np.any(
            self.slot[self.loc == SWAP] != SWAP
        ):
            out.append(f"{self.name}: a swapped page holds no slot of its kind")
        fs_view = int(np.count_nonzero(self.slot == FRONTSWAP))
        if self.uses_tmem and fs_view != self.tmem_pages:
            out.append(
                f"{self.name}: guest holds {fs_view} frontswap pages, host pool reports "
                f"{self.tmem_pages}"
            )
        if self.alloc_pages + self.tmem_pages > self.maxmem_pages and self.tmem_pages:
            out.append(
                f"{self.name}: RAM {self.alloc_pages} + tmem {self.tmem_pages} pages above "
                f"maxmem {self.maxmem_pages}"
            )
        return out

    def progress(self) -> float:
        return self.work_seconds / self.alive_seconds if self.alive_seconds else 0.0


_E = np.empty(0, np.uint32)
