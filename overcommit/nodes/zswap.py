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
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from overcommit.nodes.mechanism import Mechanism
from overcommit.stores.codec import guest_key, make_payload

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
    plan_order = 60


class Zram(Mechanism):
    """zram: guest-side only; the host plans nothing for it."""

    name = "zram"
    guest_features = frozenset({"zram"})
    plan_order = 60
