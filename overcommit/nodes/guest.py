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
from overcommit.stores.codec import RecordBatch, make_batch, verify
from overcommit.workloads import TouchStreams, make_workload

UNTOUCHED, RAM, FRONTSWAP, SWAP = 0, 1, 2, 3
NO_SLOT = 0
SWAP_CLUSTER = 32  # pages per write I/O in reclaim (SWAP_CLUSTER_MAX)

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
    dev_ops: int = 0  # operations and bytes this guest put on the shared storage device
    dev_bytes: int = 0
    violations: list[tuple[str, str]] = field(default_factory=list)  # (checker, message)


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
        """Fresh workload state: nothing touched, every frame free, new random streams."""
        n = self.N
        self.loc = np.zeros(n, np.int8)
        self.slot = np.zeros(n, np.int8)
        self.dirty = np.zeros(n, bool)  # resident and written since it last left RAM
        self.version = np.zeros(n, np.uint32)
        self.frame = np.full(n, -1, np.int32)
        self.last = np.zeros(n, np.int64)  # last touched epoch + 1 (lru)
        self.ref = np.zeros(n, bool)  # referenced bit (clock)
        self.hand = 0
        self.free_stack = np.arange(self.alloc_pages - 1, -1, -1, dtype=np.int32)
        self.free_top = self.alloc_pages
        self.slots_used = 0
        self.wl_epochs = 0
        self.pending: tuple[np.ndarray, np.ndarray] | None = None
        self.restarts = getattr(self, "restarts", -1) + 1
        self.rng = TouchStreams(self.seed, self.name, self.incarnation, f"workload/{self.restarts}")
        if self.pinned_n:
            pinned = np.arange(self.pinned_n)
            self._map_in(pinned)
            self.loc[pinned] = RAM
            self.dirty[pinned] = True
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
    def _reclaim_order(self, k: int, exclude: np.ndarray) -> tuple[np.ndarray, Any]:
        """At least k (if there are) reclaim candidates, coldest first, and a commit function.

        Candidates are resident, unpinned pages not in `exclude`. `commit(victims)` records
        the scan (clock hand and cleared referenced bits) once the victims are chosen.
        """
        mask = self.loc == RAM
        mask[: self.pinned_n] = False
        mask[exclude] = False
        cand = np.flatnonzero(mask)
        if k <= 0 or len(cand) == 0:
            return np.empty(0, np.int64), _no_commit
        if self.spec.lru == "lru":
            key = self.last[cand] * self.N + cand  # unique: ties broken by page index
            if len(cand) > 2 * k:
                part = np.argpartition(key, 2 * k - 1)[: 2 * k]
                cand, key = cand[part], key[part]
            return cand[np.argsort(key)], _no_commit
        # clock: sweep from the hand; referenced pages get a second chance (bit cleared)
        start = int(np.searchsorted(cand, self.hand))
        sweep = np.concatenate([cand[start:], cand[:start]])
        refd = self.ref[sweep]
        first = np.flatnonzero(~refd)
        order = np.concatenate([sweep[first], sweep[refd]])
        pos = np.concatenate([first, np.flatnonzero(refd)])

        def commit(victims: np.ndarray) -> None:
            taken = np.flatnonzero(np.isin(order, victims))
            if len(taken) == 0:
                return
            last = int(taken[-1])
            if last >= len(first):  # a full sweep cleared every bit
                self.ref[sweep] = False
                self.hand = int(order[last]) + 1
                return
            stop = int(pos[last])
            self.ref[sweep[: stop + 1]] = False
            self.hand = int(sweep[stop]) + 1

        return order, commit

    def _fit(self, pages: np.ndarray, writes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the prefix of this epoch's touches whose new pages RAM can hold at once.

        A workload touching more distinct non-resident pages in one epoch than its RAM has
        frames thrashes: the rest of its touches wait for the next epoch (`pending`).
        """
        room = self.alloc_pages - self.pinned_n - self.wm_min
        if len(pages) <= room:
            return pages, writes
        uniq, first = np.unique(pages, return_index=True)
        new_first = np.sort(first[self.loc[uniq] != RAM])
        if len(new_first) <= room:
            return pages, writes
        cut = int(new_first[max(room, 1)])
        self.pending = (pages[cut:], writes[cut:])
        return pages[:cut], writes[:cut]

    def _async_budget(self, device: DeviceQueue, dt: float) -> int:
        """Pages kswapd can write to the swap disk this epoch: this guest's share of the
        device time the previous window left idle."""
        prof = device.profile
        per_page = max(1.0 / (SWAP_CLUSTER * prof.iops), self.page_size / prof.bandwidth)
        spare = max(0.0, 1.0 - device.util) * dt / max(1, device.users)
        return int(spare / per_page)

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
        consumed = min(self.debt, dt)
        self.debt -= consumed
        work = dt - consumed
        pages, writes = self.workload.touches(self.rng, self.wl_epochs * dt, work)
        self.wl_epochs += 1
        if self.pending is not None:
            pages = np.concatenate([self.pending[0], pages])
            writes = np.concatenate([self.pending[1], writes])
            self.pending = None
        pages, writes = self._fit(pages, writes)
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

        # slots freed by this epoch's swap-ins: written pages, or all faults when swap is full
        swap_full = 2 * self.slots_used > self.swap_slots
        wp, wc = np.unique(pages[writes], return_counts=True)
        wset = wp
        free_slot = wset[self.slot[wset] != NO_SLOT]
        if swap_full:
            free_slot = np.union1d(free_slot, np.union1d(f_fs, f_sw))
        if self.exclusive_gets:  # an exclusive get already removed the copy
            free_slot = np.setdiff1d(free_slot, f_fs, assume_unique=True)
        fs_flush = free_slot[self.slot[free_slot] == FRONTSWAP]
        sw_free = free_slot[self.slot[free_slot] == SWAP]

        # reclaim: kswapd (async) toward the high watermark, as far as the disk lets it write;
        # then direct reclaim (sync) for whatever the faults still need above the min watermark
        free = self.free_top
        async_want = self.wm_high - free if free < self.wm_low else 0
        want = async_want + max(0, self.wm_min + need - free)
        order, commit = self._reclaim_order(want, uniq)
        if free + len(order) < need:  # thrashing: this epoch's own pages are the last choice
            resident_touched = uniq[(loc_u == RAM) & (uniq >= self.pinned_n)]
            order = np.concatenate([order, resident_touched])
        # a page written this epoch (possible only when thrashing) is dirty whatever its slot
        written = np.isin(order, wset, assume_unique=True)
        clean = (self.slot[order] != NO_SLOT) & ~self.dirty[order] & ~written
        new_slot = (self.slot[order] == NO_SLOT) | written
        room = self.swap_slots - self.slots_used + len(free_slot)
        ok = ~new_slot | (np.cumsum(new_slot) <= room)  # no slot left: the page cannot leave
        order, clean = order[ok], clean[ok]
        if self.uses_tmem:
            async_pick = np.arange(min(async_want, len(order)))
        else:
            budget = self._async_budget(device, dt)
            fits = clean | (np.cumsum(~clean) <= budget)
            async_pick = np.flatnonzero(fits)[:async_want]
        is_async = np.zeros(len(order), bool)
        is_async[async_pick] = True
        rest = np.flatnonzero(~is_async)
        direct_n = max(0, self.wm_min + need - free - len(async_pick))
        take = np.sort(np.concatenate([async_pick, rest[:direct_n]]))
        victims, is_async, clean = order[take], is_async[take], clean[take]
        commit(victims)
        if free + len(victims) < need:
            extra = np.setdiff1d(reads, f_sw, assume_unique=True)
            short = need - free - len(victims)
            if len(extra) < short:  # neither RAM nor swap has room
                return (yield from self._oom_kill(t, dt, work, len(pages)))
            reads = np.setdiff1d(reads, extra[len(extra) - short :], assume_unique=True)
            need = len(f_zero) + len(f_fs) + len(reads)
        dirty = victims[~clean]
        dirty_async = is_async[~clean]
        n_direct = int(np.count_nonzero(~is_async))
        if n_direct:
            c["direct_reclaims"] += 1

        # phase 1: tmem gets/flushes/puts and disk reads/frees (and writes without tmem)
        batch = None
        if len(dirty):
            vers = self.version[dirty].copy()
            if len(wp):
                hit = np.searchsorted(wp, dirty)
                was_written = (hit < len(wp)) & (wp[np.minimum(hit, len(wp) - 1)] == dirty)
                vers[was_written] += wc[hit[was_written]].astype(np.uint32)
            batch = make_batch(
                self.name,
                dirty.astype(np.uint32),
                vers,
                self.payload,
                ps,
                self.workload.compressibility,
            )
        req = Request(self.name, self.host, self.disk)
        if self.uses_tmem and (len(f_fs) or len(fs_flush) or batch is not None):
            req.tmem = TmemOps(
                gets=f_fs.astype(np.uint32),
                flushes=fs_flush.astype(np.uint32),
                puts=batch,
                quota=self.tmem_quota,
                capacity=self.tmem_capacity,
                exclusive_gets=self.exclusive_gets,
            )
        disk_batch = None if self.uses_tmem else batch
        if len(reads) or len(sw_free) or disk_batch is not None:
            req.swap = SwapOps(reads.astype(np.uint32), sw_free.astype(np.uint32), disk_batch)
        reply = (yield req) if (req.tmem or req.swap) else Reply()
        violations: list[tuple[str, str]] = []

        put_ok = np.zeros(len(dirty), bool)
        if req.tmem is not None:
            r = reply.tmem
            self._check_read(f_fs, r.found, r.got, "frontswap", violations)
            if batch is not None:
                put_ok = np.asarray(r.put_ok, bool)
            c["frontswap_gets"] += int(np.count_nonzero(r.found))
            c["frontswap_flushes"] += int(r.flushed)
            c["frontswap_invalidated"] += int(r.invalidated)
            self.tmem_pages = int(r.guest_pages)
        if req.swap is not None:
            self._check_read(reads, reply.swap.found, reply.swap.got, "swap", violations)
            c["disk_frees"] += int(reply.swap.freed)

        # phase 2: pages the pool refused go to the swap disk
        to_disk = dirty[~put_ok]
        to_fs = dirty[put_ok]
        if self.uses_tmem and len(to_disk):
            fb = batch.take(np.flatnonzero(~put_ok))
            yield Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, fb))

        # apply: slots freed by writes or a full swap, and exclusive gets
        self.slot[free_slot] = NO_SLOT
        self.slots_used -= len(free_slot)
        if self.exclusive_gets:
            self.slot[f_fs] = NO_SLOT
            self.dirty[f_fs] = True
            self.slots_used -= len(f_fs)
        # apply: evictions
        self._map_out(victims)
        cl = victims[clean]
        self.loc[cl] = self.slot[cl]
        self.loc[to_fs] = FRONTSWAP
        self.slot[to_fs] = FRONTSWAP
        self.loc[to_disk] = SWAP
        self.slot[to_disk] = SWAP
        self.dirty[victims] = False
        self.slots_used += len(dirty)
        # apply: swap-ins and first touches
        incoming = np.concatenate([f_zero, f_fs, reads])
        newly_backed = self._map_in(incoming)
        self.loc[incoming] = RAM
        self.dirty[f_zero] = True
        # apply: the touches themselves (a thrash victim was touched before it left)
        self.version[wp] += wc.astype(np.uint32)
        self.dirty[wp] = True
        self.dirty[victims] = False
        self.last[uniq] = epoch + 1
        self.ref[uniq] = True
        self.ref[victims] = False

        # counters
        n_put = len(dirty) if self.uses_tmem else 0
        n_fail = len(to_disk) if self.uses_tmem else 0
        self.window_new_puts += n_put
        c["frontswap_puts"] += n_put - n_fail
        c["frontswap_put_failures"] += n_fail
        c["evictions"] += len(victims)
        c["first_touches"] += len(f_zero)
        c["faults"] += len(f_zero) + len(f_fs) + len(f_sw)
        c["major_faults"] += len(clusters)
        c["readahead_pages"] += len(reads) - len(f_sw)
        c["disk_reads"] += len(reads)
        c["disk_read_ops"] += len(clusters)
        write_ops = -(-len(to_disk) // SWAP_CLUSTER)
        c["disk_writes"] += len(to_disk)
        c["disk_write_ops"] += write_ops

        # time: synchronous costs on the critical path
        dev = device.profile
        s_zero = len(f_zero) * costs.minor_fault
        s_alloc = newly_backed * costs.host_page_alloc
        lat_fs = costs.minor_fault + costs.get(ps)
        s_fs = len(f_fs) * lat_fs
        s_flush = len(fs_flush) * costs.flush()
        lat_sw = 0.0
        if len(clusters):
            read_bytes = len(reads) * ps / len(clusters)  # the average cluster actually read
            lat_sw = costs.major_fault + dev.op_time(False, read_bytes) + device.wait(read_bytes)
        s_sw = len(clusters) * lat_sw + (len(f_sw) - len(clusters)) * costs.minor_fault
        # direct reclaim: the synchronous share of puts and of disk writes
        sync_dirty = ~dirty_async
        s_put = 0.0
        if self.uses_tmem:
            ok_sync = int(np.count_nonzero(put_ok & sync_dirty))
            fail_sync = int(np.count_nonzero(~put_ok & sync_dirty))
            s_put = ok_sync * costs.put(ps) + fail_sync * costs.failed_put()
            # refused async puts beyond what the disk absorbs in the background are waited for
            fail_async = int(np.count_nonzero(~put_ok & dirty_async))
            sync_disk = fail_sync + max(0, fail_async - self._async_budget(device, dt))
        else:
            sync_disk = int(np.count_nonzero(sync_dirty))
        s_write = 0.0
        if sync_disk:
            ops = -(-sync_disk // SWAP_CLUSTER)
            wbytes = sync_disk * ps / ops
            s_write = ops * (dev.op_time(True, wbytes) + device.wait(wbytes))
        sources = (s_zero, s_alloc, s_fs, s_flush, s_sw, s_put, s_write)
        stall = sum(sources)
        for src, v in zip(STALL_SOURCES, sources):
            self.stall_by_source[src] += v
        # fault latency histogram (one value per kind of fault this epoch)
        self._hist_add(costs.minor_fault, len(f_zero))
        self._hist_add(lat_fs, len(f_fs))
        self._hist_add(lat_sw, len(clusters))
        self._hist_add(costs.minor_fault, len(f_sw) - len(clusters))
        self.debt += stall
        self.stall_seconds += stall
        self.alive_seconds += dt
        self.work_seconds += work
        self.peak_tmem_pages = max(self.peak_tmem_pages, self.tmem_pages)
        self.peak_billed_pages = max(self.peak_billed_pages, self.alloc_pages + self.tmem_pages)
        violations += [("conservation", m) for m in self.conservation()]
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
            dev_ops=len(clusters) + write_ops,
            dev_bytes=(len(reads) + len(to_disk)) * ps,
            violations=violations,
        )

    def _hist_add(self, latency: float, n: int) -> None:
        if n > 0:
            self.hist[_hist_bins(np.array([latency]))[0]] += n

    def _check_read(
        self,
        pages: np.ndarray,
        found: np.ndarray,
        got: RecordBatch,
        where: str,
        out: list[tuple[str, str]],
    ) -> None:
        """Compare records read back from a store with the versions the guest last wrote."""
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
            expect = self.version[got.pages.astype(np.int64)]
            bad = (got.versions != expect) | verify(
                self.name, got, self.payload, self.page_size, self.workload.compressibility
            )
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
        self, t: float, dt: float, work: float, touches: int
    ) -> Generator[Request, Reply, EpochStats]:
        """Neither RAM nor swap has room: the OOM killer ends the workload; it restarts later."""
        self.counters["guest_oom_kills"] += 1
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, None, drop=True))
        if self.uses_tmem:
            req.tmem = TmemOps(_E, _E, None, 0, 0, self.exclusive_gets, flush_area=True)
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
        self.tmem_pages = 0
        self.alive_seconds += dt
        self.work_seconds += work
        self.alive = False
        self.down_until = t + dt + self.spec.oom_restart
        self.debt = 0.0  # the killed workload's stall dies with it
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
        if not self.spec.cooperative or not self.uses_tmem:
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
            self.loc[pages[self.loc[pages] == FRONTSWAP]] = SWAP
        self.slot[moved] = SWAP
        self.slot[lost] = NO_SLOT
        self.loc[lost[self.loc[lost] == SWAP]] = UNTOUCHED
        self.slots_used -= len(lost)
        self.tmem_pages = 0
        ops = -(-len(moved) // SWAP_CLUSTER)
        self.counters["disk_writes"] += len(moved)
        self.counters["disk_write_ops"] += ops
        self.counters["frontswap_flushes"] += len(held)
        stats.disk_writes = len(moved)
        stats.dev_ops = ops
        stats.dev_bytes = len(moved) * self.page_size
        return len(moved), stats

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
        """Violations of the guest's page, frame and slot conservation (empty when it holds)."""
        out = []
        loc, slot = self.loc, self.slot
        bc = np.array([np.count_nonzero(loc == k) for k in range(4)], np.int64)
        self.census = bc
        if bc.sum() != self.N:
            out.append(f"{self.name}: {self.N - bc.sum()} page(s) in no known place")
        resident = int(bc[RAM])
        mapped = int(np.count_nonzero(self.frame >= 0))
        if resident + self.free_top != self.alloc_pages or mapped != resident:
            out.append(
                f"{self.name}: resident {resident}, pages with a frame {mapped}, free frames "
                f"{self.free_top}, allocation {self.alloc_pages}"
            )
        if self.frames.backed_count != int(np.count_nonzero(self.frames.backed)):
            out.append(f"{self.name}: host frame counter disagrees with the frames it backs")
        slots = int(np.count_nonzero(slot))
        if slots != self.slots_used or slots > self.swap_slots:
            out.append(
                f"{self.name}: swap slots counted {self.slots_used}, held {slots}, "
                f"device has {self.swap_slots}"
            )
        if np.count_nonzero((loc >= FRONTSWAP) & (slot != loc)):
            out.append(f"{self.name}: a swapped page holds no slot of its kind")
        if self.pinned_n and np.count_nonzero(loc[: self.pinned_n] != RAM):
            out.append(f"{self.name}: a pinned page left RAM")
        fs_view = int(np.count_nonzero(slot == FRONTSWAP))
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

    def frame_audit(self) -> list[str]:
        """Frames: every resident page has one, no frame is used twice or also free."""
        used = self.frame[self.frame >= 0]
        free = self.free_stack[: self.free_top]
        both = np.concatenate([used, free])
        if len(both) != self.alloc_pages or np.any(
            np.bincount(both, minlength=self.alloc_pages) != 1
        ):
            return [f"{self.name}: a frame is used twice, or both used and free"]
        return []

    def progress(self) -> float:
        return self.work_seconds / self.alive_seconds if self.alive_seconds else 0.0


_E = np.empty(0, np.uint32)


def _no_commit(victims: np.ndarray) -> None:
    """Exact LRU keeps no scan state."""
