"""`zswap` and `zram`: compressed swap inside the guest, in the guest's own RAM.

Both keep compressed pages in a pool whose memory comes out of the guest's frames (the pool's
frames are taken from the guest's free frames, so compressing trades RAM for RAM). Sizes are
measured with a real codec (zlib, level 1): in `full` payload mode on each page's generated
content; in `digest` mode on a sample of pages generated at the workload's compressibility
(the ratio then comes from the compressibility, measured once). Pages whose content is one
repeated word are *same-filled* and stored without data. Compression and decompression cost
CPU time (`costs.compress_bandwidth`, `decompress_bandwidth`): in direct reclaim and on faults
the guest waits for it; kswapd's compression is background work.

- **zswap** (Linux admin-guide): a compressed LRU write-back cache in front of the swap disk. A
  page swapped out is compressed into the pool instead of being written; it keeps its swap slot
  on the disk. The pool may use at most `max_pool_percent` (default 20%) of the guest's RAM;
  at the limit new pages are rejected (they go to disk) and the pool writes its oldest entries
  back to the disk until it is under `accept_threshold` of the limit. The `zbud` allocator
  packs at most two compressed pages per frame and cannot hold a page that does not compress
  below its usable size (such pages are rejected, as zswap's `reject_compress_poor`); loads
  are exclusive (the entry is freed, the page dirty again).
- **zram** (a compressed RAM block device used as a swap disk, ahead of the disk swap): its
  slots are its own (`zram.size`, default half the guest's memory); the `zsmalloc` allocator
  packs compressed data densely, and a page that does not compress is stored whole. A load
  leaves the data in place (the page keeps its slot while clean). When a slot is freed (the
  page is rewritten), `discard: immediate` frees the data at once (the swap_slot_free_notify
  callback Nitin Gupta asked for in the 2010 thread); `discard: periodic` leaves it as *stale*
  data taking memory until the next discard scan every `discard_interval`, which is the stale-
  data argument of that thread.

The 2010 thread: Nitin Gupta's in-guest compressed swap (compcache/ramzswap, today's zram) and
its need for an immediate callback when a swap slot is freed; Dave Hansen's "how is a
RAM-backed frontswap better than a /dev/ramX-backed swap file in practice?". Compare `zram`
(`discard: immediate` and `periodic`) and `zswap` with `frontswap` and `none`.

Guest hooks (`CompressedSwapGuest`): the pool takes dirty victims before the disk
(`take_dirty`), its frames come out of the guest's (`frames_held`, `settle`), faults load from
it (`zpool_load`), direct reclaim waits for compression (`stall`).
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import _EI, SWAP, ZPOOL
from overcommit.nodes.mechanism import Mechanism
from overcommit.stores.codec import RecordBatch, guest_key, make_payload

if TYPE_CHECKING:
    from overcommit.nodes.kernel.model import GuestModel
    from overcommit.profiles import DeviceQueue

ZBUD_HEADER = 64  # bytes of a zbud page kept for its header
SAMPLE_PAGES = 16


def measure_sizes(payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compressed bytes, same-filled mask) of each page of a (k, page_size) payload."""
    k = payload.shape[0]
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    words = np.ascontiguousarray(payload).view("<u8")
    same = (words == words[:, :1]).all(axis=1)
    sizes = np.fromiter(
        (len(zlib.compress(payload[i].tobytes(), 1)) for i in range(k)), np.int64, count=k
    )  # one C call per page: the real codec, only in full mode or on a small sample
    sizes[same] = 0
    return sizes, same


class CompressedPool:
    """One guest's zswap pool or zram device: what it holds, its bytes and frames."""

    def __init__(
        self,
        kind: str,
        n: int,
        page_size: int,
        cfg: Any,
        payload: str,
        compressibility: float,
        guest: str,
        memory_pages: int,
    ) -> None:
        self.kind = kind
        self.page_size = page_size
        self.payload = payload
        self.compressibility = compressibility
        self.gkey = guest_key(guest)
        self.size = np.zeros(n, np.int64)  # compressed bytes of each page held (live or stale)
        self.held = np.zeros(n, bool)  # live data in the pool
        self.stale = np.zeros(n, bool)  # zram: a freed slot whose data lingers
        self.stamp = np.zeros(n, np.int64)  # epoch stored (zswap's LRU order)
        self.frames = 0  # guest frames the pool occupies
        self.limit_hit = False
        if kind == "zswap":
            self.allocator = "zbud"
            self.max_percent = float(cfg.max_pool_percent)
            self.accept = float(cfg.accept_threshold)
            self.slots = 0
            self.discard = "immediate"
            self.discard_every = 0.0
        else:
            self.allocator = "zsmalloc"
            self.max_percent = 1.0
            self.accept = 1.0
            size = cfg.size if cfg.size is not None else memory_pages * page_size // 2
            self.slots = int(size) // page_size
            self.discard = cfg.discard
            self.discard_every = float(cfg.discard_interval)
        self._sample: tuple[int, bool] | None = None
        self.half = (page_size - ZBUD_HEADER) // 2  # a zbud buddy's room
        self.n_big = self.n_small = self.n_bytes = 0  # entries with data, and their bytes
        self.avg_cost = 0.5  # frames per stored page, running average

    # -- sizes ------------------------------------------------------------------------------
    def sizes(
        self, pages: np.ndarray, versions: np.ndarray, payload: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Compressed sizes and same-filled flags of pages about to be stored."""
        if self.payload == "full" and payload is not None:
            return measure_sizes(payload)
        if self._sample is None:
            sample = make_payload(
                self.gkey,
                np.arange(SAMPLE_PAGES, dtype=np.uint32),
                np.ones(SAMPLE_PAGES, np.uint32),
                self.page_size,
                self.compressibility,
            )
            s, same = measure_sizes(sample)
            self._sample = (int(round(s.mean())), bool(same.all()))
        size, same = self._sample
        k = len(pages)
        return np.full(k, size, np.int64), np.full(k, same, bool)

    def fits(self, sizes: np.ndarray) -> np.ndarray:
        """Which compressed pages the allocator can hold at all."""
        if self.allocator == "zbud":
            return sizes <= self.page_size - ZBUD_HEADER
        return np.ones(len(sizes), bool)

    def stored_size(self, sizes: np.ndarray) -> np.ndarray:
        """Bytes the pool keeps (zsmalloc stores an incompressible page whole)."""
        return np.minimum(sizes, self.page_size)

    # -- memory ---------------------------------------------------------------------------
    def _cost(self, sizes: np.ndarray) -> tuple[int, int, int]:
        """(big, small, bytes) of stored sizes: zbud pairs small ones; zsmalloc packs bytes."""
        s = sizes[sizes > 0]
        big = int(np.count_nonzero(s > self.half))
        return big, len(s) - big, int(s.sum())

    def _frames(self, big: int, small: int, nbytes: int) -> int:
        if self.allocator == "zbud":
            return big + (small + 1) // 2
        return -(-nbytes // self.page_size)

    def frames_needed(self) -> int:
        """Frames the allocator needs for what the pool holds (live and stale data)."""
        return self._frames(self.n_big, self.n_small, self.n_bytes)

    def frames_after(self, drop: np.ndarray, add: np.ndarray) -> tuple[int, np.ndarray]:
        """Frames needed after dropping `drop`, and after adding each prefix of `add` (stored
        sizes, 0 for entries not added)."""
        big, small, nbytes = self.n_big, self.n_small, self.n_bytes
        if len(drop):
            b, sm, nb = self._cost(self.size[drop])
            big, small, nbytes = big - b, small - sm, nbytes - nb
        base = self._frames(big, small, nbytes)
        if len(add) == 0:
            return base, np.zeros(0, np.int64)
        if self.allocator == "zbud":
            cb = big + np.cumsum(add > self.half)
            cs = small + np.cumsum((add > 0) & (add <= self.half))
            return base, cb + (cs + 1) // 2
        return base, -(-(nbytes + np.cumsum(add)) // self.page_size)

    def frames_per_page(self) -> float:
        """Frames one more stored page costs, on average (for reclaim's estimate)."""
        return self.avg_cost

    def limit_frames(self, alloc_pages: int) -> int:
        return int(self.max_percent * alloc_pages)

    @property
    def live_pages(self) -> int:
        return int(np.count_nonzero(self.held))

    @property
    def stale_pages(self) -> int:
        return int(np.count_nonzero(self.stale))

    def stored_bytes(self) -> int:
        return self.n_bytes

    # -- changes ----------------------------------------------------------------------------
    def _account(self, pages: np.ndarray, sign: int) -> None:
        b, sm, nb = self._cost(self.size[pages])
        self.n_big += sign * b
        self.n_small += sign * sm
        self.n_bytes += sign * nb

    def store(self, pages: np.ndarray, sizes: np.ndarray, epoch: int) -> None:
        """Keep these pages' compressed data (a slot's stale data is overwritten)."""
        self.drop(pages[self.stale[pages]])
        ss = self.stored_size(sizes)
        self.size[pages] = ss
        self.held[pages] = True
        self.stamp[pages] = epoch
        self._account(pages, +1)
        if len(ss):
            if self.allocator == "zbud":
                cost = np.where(ss > self.half, 1.0, np.where(ss > 0, 0.5, 0.0))
            else:
                cost = ss / self.page_size
            self.avg_cost = 0.9 * self.avg_cost + 0.1 * float(np.mean(cost))

    def drop(self, pages: np.ndarray) -> None:
        """Free the data of these pages (a load, a discard, a write-back)."""
        if len(pages) == 0:
            return
        have = pages[self.held[pages] | self.stale[pages]]
        self._account(have, -1)
        self.held[pages] = False
        self.stale[pages] = False
        self.size[pages] = 0

    def free_slots(self, pages: np.ndarray) -> int:
        """Slots freed by the guest: discard now, or leave stale data until the next scan.
        Returns the pages discarded now."""
        if len(pages) == 0:
            return 0
        if self.discard == "immediate":
            self.drop(pages)
            return len(pages)
        self.held[pages] = False
        self.stale[pages] = True
        return 0

    def discard_scan(self) -> int:
        """The periodic discard: free every stale slot's data; returns how many."""
        n = self.stale_pages
        if n:
            self.drop(np.flatnonzero(self.stale))
        return n

    def discard_due(self, t: float, dt: float) -> bool:
        if self.discard != "periodic" or self.discard_every <= 0:
            return False
        i = self.discard_every
        return math.floor((t + dt) / i - 1e-9) > math.floor(t / i - 1e-9)

    def oldest(self, k: int) -> np.ndarray:
        """The k oldest live entries (zswap's write-back order)."""
        live = np.flatnonzero(self.held)
        if k <= 0 or len(live) == 0:
            return live[:0]
        if len(live) > k:
            key = self.stamp[live] * len(self.held) + live
            live = live[np.argpartition(key, k - 1)[:k]]
        return np.sort(live)

    def audit(self) -> list[str]:
        mask = self.held | self.stale
        b, sm, nb = self._cost(self.size[mask])
        if (b, sm, nb) != (self.n_big, self.n_small, self.n_bytes):
            return ["the compressed pool's byte counters disagree with its entries"]
        return []

    def reset(self) -> None:
        self.size[:] = 0
        self.held[:] = False
        self.stale[:] = False
        self.frames = 0
        self.n_big = self.n_small = self.n_bytes = 0
        self.limit_hit = False


class Zswap(Mechanism):
    """zswap: guest-side only; the host plans nothing for it."""

    name = "zswap"
    guest_features = frozenset({"zswap"})
    guest_hooks = ("CompressedSwapGuest",)
    plan_order = 60


class Zram(Mechanism):
    """zram: guest-side only; the host plans nothing for it."""

    name = "zram"
    guest_features = frozenset({"zram"})
    guest_hooks = ("CompressedSwapGuest",)
    plan_order = 60


class CompressedSwapGuest(GuestMechanism):
    """Guest side of zswap and zram: the pool takes dirty victims before the disk, its frames
    come out of the guest's free frames, faults load (and decompress) from it."""

    features = frozenset({"zswap", "zram"})
    order = 18  # before cached_disk, whose disk accounting replaces the pool's
    frame_stacks = ("zp_stack",)

    def init(self, g: GuestModel) -> None:
        from overcommit.config import ZramSettings, ZswapSettings

        kind = "zswap" if "zswap" in g.features else "zram"
        default = ZswapSettings() if kind == "zswap" else ZramSettings()
        cfg = getattr(g.settings, kind, None) or default
        g.pool = CompressedPool(
            kind,
            g.N,
            g.page_size,
            cfg,
            g.payload,
            g.workload.compressibility,
            g.name,
            g.memory_pages,
        )
        g.zram_slots = g.pool.slots if kind == "zram" else 0

    def reset(self, g: GuestModel) -> None:
        g.pool.reset()

    def frames_held(self, g: GuestModel) -> int:
        return g.pool.frames

    def begin(self, g: GuestModel, ep: EpochContext) -> None:
        if g.pool.kind == "zswap" and len(ep.f_z):  # exclusive loads
            ep.free_extra.append(ep.f_z)

    def reclaim_plan(self, g: GuestModel, ep: EpochContext) -> None:
        if ep.d.compress:  # a page reclaimed into the pool frees less than a frame
            ratio = g.pool.frames_per_page()
            ep.want = int(math.ceil(ep.want / max(0.05, 1.0 - ratio)))
            ep.budget = -1  # kswapd may compress anything

    def take_dirty(self, g: GuestModel, ep: EpochContext) -> None:
        """The compressed pool takes what it can; zram keeps what it cannot take resident."""
        pool = g.pool
        dirty = ep.dirty
        if ep.d.compress and len(dirty):
            disk_room = g.swap_slots - g.slots_used
            disk_room += ep.freed_disk if g.zram_slots else len(ep.free_slot)
            after_free = ep.free + len(ep.victims) - ep.need
            to_pool, sizes, kept, growth = _pool_decide(
                g, dirty, ep.vers, ep.batch, after_free, disk_room, ep.z_free
            )
            ep.pool_growth = growth
            if kept.any():  # zram could not take them: the writes failed, pages stay
                keep_pages = dirty[kept]
                mask = ~np.isin(ep.victims, keep_pages)
                ep.victims, ep.is_async, ep.clean = (
                    ep.victims[mask],
                    ep.is_async[mask],
                    ep.clean[mask],
                )
                sel = ~kept
                ep.dirty, ep.dirty_async, ep.vers = dirty[sel], ep.dirty_async[sel], ep.vers[sel]
                to_pool, sizes = to_pool[sel], sizes[sel]
                ep.batch = ep.batch.take(np.flatnonzero(sel)) if ep.batch is not None else None
            ep.to_pool, self.sizes = to_pool, sizes
        if pool.kind == "zswap" and pool.limit_hit:
            ep.p1_wb = _zswap_writeback_pick(g, ep.device, ep.dt, np.union1d(ep.uniq, ep.z_free))

    def evict(self, g: GuestModel, ep: EpochContext) -> None:
        pool, c = g.pool, g.counters
        if pool.kind == "zswap":
            pool.drop(ep.z_free)
        else:
            c["zpool_discards"] += pool.free_slots(ep.z_free)
        if pool.discard_due(ep.t, ep.dt):
            c["zpool_discards"] += pool.discard_scan()
        ep.stored = stored = ep.dirty[ep.to_pool]
        if len(stored):
            pool.store(stored, self.sizes[ep.to_pool], ep.epoch)
            g._set_loc(stored, ZPOOL)
            g._set_slot(stored, ZPOOL)
        wb = ep.p1_wb
        if len(wb):
            pool.drop(wb)
            g._set_loc(wb, SWAP)
            g._set_slot(wb, SWAP)
            if pool.frames_needed() <= pool.accept * pool.limit_frames(g.alloc_pages):
                pool.limit_hit = False

    def settle(self, g: GuestModel, ep: EpochContext) -> None:
        ep.pool_new = _pool_frames(g)

    def stall(self, g: GuestModel, ep: EpochContext, s: dict[str, float]) -> None:
        costs, ps = g.costs, g.page_size
        f_z = ep.f_z
        g.counters["zpool_loads"] += len(f_z)
        g.counters["zpool_writebacks"] += len(ep.p1_wb)
        if len(f_z):  # loads: decompression (same-filled pages are a memset)
            s["zpool_load"] = len(f_z) * (costs.minor_fault + costs.decompress(ps))
        g._hist_add(costs.minor_fault + costs.decompress(ps), len(f_z))
        if len(ep.stored):
            sync = int(np.count_nonzero(ep.to_pool & ~ep.dirty_async))
            s["compress"] = sync * costs.compress(ps)
            # kswapd's stores are compressed on the vCPU too, off the faulting path
            n_bg = int(np.count_nonzero(ep.to_pool & ep.dirty_async))
            s["background_cpu"] += n_bg * costs.compress(ps)
        # kswapd's refused stores beyond the disk budget are waited for
        async_disk = len(ep.disk_sync) - ep.sync_disk
        ep.sync_disk += max(0, async_disk - ep.async_budget)

    def audit(self, g: GuestModel, full: bool) -> list[str]:
        if not full:
            return []
        p, out = g.pool, []
        held = int(np.count_nonzero(p.held))
        slots = int(g.slot_census[ZPOOL])
        if held != slots:
            out.append(
                f"{g.name}: the compressed pool holds {held} pages, {slots} slots point at it"
            )
        if p.frames != p.frames_needed():
            out.append(
                f"{g.name}: the pool has {p.frames} frames, its contents need {p.frames_needed()}"
            )
        return out


def _pool_decide(
    g: GuestModel,
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
    pool = g.pool
    c = g.counters
    k = len(dirty)
    sizes, same = pool.sizes(dirty, vers, batch.payload if batch is not None else None)
    cand = pool.fits(sizes)  # zbud cannot hold a page that does not compress enough
    beyond = np.zeros(k, bool)
    if pool.kind == "zram":  # dirty victims hold no slot: zram's free slots first
        zroom = g.zram_slots - g.zslots_used + len(z_free)
        beyond = np.arange(k) >= zroom
        cand &= ~beyond
    ss = np.where(cand, pool.stored_size(sizes), 0)
    drop = z_free if (pool.kind == "zswap" or pool.discard == "immediate") else _EI
    _, cum = pool.frames_after(drop, ss)
    limit = pool.limit_frames(g.alloc_pages) if pool.kind == "zswap" else None
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


def _zswap_writeback_pick(
    g: GuestModel, device: DeviceQueue, dt: float, busy: np.ndarray
) -> np.ndarray:
    """zswap at its limit writes its oldest entries back to disk until it is under the
    acceptance threshold, at the disk's background pace."""
    pool = g.pool
    limit = pool.limit_frames(g.alloc_pages)
    excess = pool.frames - int(pool.accept * limit)
    if excess <= 0:
        pool.limit_hit = False
        return _EI
    per_frame = max(1.0, pool.live_pages / max(1, pool.frames))
    k = min(int(math.ceil(excess * per_frame)), g._async_budget(device, dt))
    pages = pool.oldest(k + len(busy))
    pages = pages[(g.loc[pages] == ZPOOL) & ~np.isin(pages, busy)]
    return pages[:k]


def _pool_frames(g: GuestModel) -> np.ndarray:
    """Give the pool the frames its contents need (or take back those it no longer
    does); returns the frames newly taken (the host backs them)."""
    pool = g.pool
    delta = pool.frames_needed() - pool.frames
    if delta > 0:
        fr = g._take_free(min(delta, g.free_top))
        g.zp_stack[pool.frames : pool.frames + len(fr)] = fr
        pool.frames += len(fr)
        g.counters["host_frames_allocated"] += g.frames.back(fr)
        return fr
    if delta < 0:
        k = -delta
        fr = g.zp_stack[pool.frames - k : pool.frames].astype(np.int64)
        pool.frames -= k
        g._give_free(fr)
    return _EI
