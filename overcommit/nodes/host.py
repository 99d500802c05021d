"""A hypervisor host: physical RAM, the reserve, the frames backing each guest, the tmem pool.

The host layer knows nothing of guest pages, only guest *frames*: per guest a `GuestFrames`
table says which of its guest-physical frames the host backs with RAM (all at boot when
`boot: eager`, on first touch when `lazy`). The persistent tmem pool may use RAM that is free
and not reserved for any guest's boot allocation. Conservation, checked every epoch:

    ram = reserve + backed guest frames + tmem + disk cache + migration buffers + free
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class GuestFrames:
    """Host-side state of one guest's frames: backed by host RAM or not (yet)."""

    def __init__(self, nframes: int, eager: bool) -> None:
        self.backed = np.full(nframes, eager, dtype=bool)
        self.backed_count = nframes if eager else 0

    def back(self, frames: np.ndarray) -> int:
        """Back the frames not backed yet; returns how many the host had to allocate."""
        if self.backed_count == len(self.backed) or len(frames) == 0:
            return 0
        new = frames[~self.backed[frames]]
        self.backed[new] = True
        self.backed_count += len(new)
        return len(new)

    def release_all(self) -> int:
        n = self.backed_count
        self.backed[:] = False
        self.backed_count = 0
        return n


def split_by_demand(total: int, demand: list[float]) -> list[int]:
    """Split `total` units in proportion to demand by largest remainder; ties by position."""
    n = len(demand)
    if n == 0 or total <= 0:
        return [0] * n
    d = np.asarray(demand, dtype=float)
    if d.sum() <= 0:
        d = np.ones(n)
    exact = total * d / d.sum()
    base = np.floor(exact).astype(np.int64)
    rem = int(total - base.sum())
    if rem > 0:
        frac = exact - base
        order = np.lexsort((np.arange(n), -frac))
        base[order[:rem]] += 1
    return [int(x) for x in base]


@dataclass
class GuestState:
    """What a host knows of one of its guests between sync windows (a guest's own state lives
    with the guest; the host keeps this mirror, refreshed from each window's report)."""

    name: str
    alloc_pages: int  # boot allocation (the host's reservation for the guest)
    maxmem_pages: int
    backed: int = 0  # frames the host backs with RAM
    tmem_pages: int = 0  # pages the host pool holds for the guest
    tmem_view: int = 0  # pages the guest believes it holds in tmem
    window_new_puts: int = 0  # put attempts in the last window (demand)
    alive: bool = True
    tmem_quota: int = 0  # set by the mechanism for the next window
    tmem_capacity: int = 0


class HostModel:
    """One hypervisor host and the guests placed on it (as mirrors), in placement order."""

    def __init__(
        self,
        name: str,
        ram: int,
        reserve: int,
        page_size: int,
        boot: str,
        tmem_max: int | None,
        exclusive_gets: bool,
    ) -> None:
        self.name = name
        self.page_size = page_size
        self.ram_pages = ram // page_size
        self.reserve_pages = reserve // page_size
        self.boot = boot
        self.tmem_max_pages = None if tmem_max is None else tmem_max // page_size
        self.exclusive_gets = exclusive_gets
        self.guests: list[GuestState] = []
        self.tmem_capacity = 0  # host-wide cap passed to the pool for the current window
        self.cache_pages = 0  # disk cache (cached-disk mechanism); 0 here
        self.buffer_pages = 0  # migration buffers; 0 here
        self.frozen = False
        self.peak_tmem_pages = 0
        self.min_free_pages = self.ram_pages

    # -- accounting -------------------------------------------------------------------------
    def reserved_pages(self) -> int:
        """RAM promised to guests: their boot allocations."""
        return sum(g.alloc_pages for g in self.guests)

    def backed_pages(self) -> int:
        return sum(g.backed for g in self.guests)

    def tmem_pages(self) -> int:
        """Persistent tmem pages, as the pool in Redis reported them for each guest."""
        return sum(g.tmem_pages for g in self.guests)

    def free_pages(self, backed: int | None = None, tmem: int | None = None) -> int:
        backed = self.backed_pages() if backed is None else backed
        tmem = self.tmem_pages() if tmem is None else tmem
        return (
            self.ram_pages
            - self.reserve_pages
            - backed
            - tmem
            - self.cache_pages
            - self.buffer_pages
        )

    def tmem_room(self) -> int:
        """Pages the persistent pool may still grow by: free RAM not promised to any guest."""
        unpromised = (
            self.ram_pages
            - self.reserve_pages
            - self.reserved_pages()
            - self.tmem_pages()
            - self.cache_pages
            - self.buffer_pages
        )
        room = max(0, unpromised)
        if self.tmem_max_pages is not None:
            room = min(room, max(0, self.tmem_max_pages - self.tmem_pages()))
        return room

    def epoch_checks(self, backed: int, tmem: int) -> list[str]:
        """Host RAM conservation for one epoch, given its guests' backed frames and tmem."""
        out = []
        free = self.free_pages(backed, tmem)
        self.peak_tmem_pages = max(self.peak_tmem_pages, tmem)
        self.min_free_pages = min(self.min_free_pages, free)
        if free < 0:
            out.append(
                f"{self.name}: RAM overdrawn: ram {self.ram_pages} < reserve {self.reserve_pages}"
                f" + frames {backed} + tmem {tmem} + cache {self.cache_pages}"
                f" + buffers {self.buffer_pages} (pages)"
            )
        if tmem > self.tmem_capacity:
            out.append(f"{self.name}: tmem {tmem} pages above window cap {self.tmem_capacity}")
        return out
