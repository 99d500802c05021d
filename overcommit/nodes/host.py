"""A hypervisor host: physical RAM, the reserve, the frames backing each guest, what it lends.

The host layer knows nothing of guest pages, only guest *frames*: per guest a `GuestFrames`
table says, for each guest-physical frame, whether the host backs it with RAM, has paged it out
to its own swap (host swap), or backs it with nothing yet (all frames are backed at boot when
`boot: eager`, on first touch when `lazy`; a ballooned frame is handed back). The table travels
with the guest (it is the host's per-guest page table, like a KVM process's) so a guest can run a
sync window on its own; the host decides only at window boundaries, through `Directives`.

Each window the host's mechanism turns the guests' reports (`GuestState`) into one `Directives`
per guest: tmem quotas, balloon targets, resident-frame budgets and host-swap quotas, disk-cache
and ephemeral-pool budgets. Memory the host lends (tmem, disk cache, ephemeral pool, allocation
growth) comes only from RAM that is free *and* promised to no guest's current allocation
(`HostModel.lendable`), booked in a fixed order so two lenders never promise the same page.
Conservation, checked every epoch:

    ram = reserve + resident guest frames + tmem + ephemeral + disk cache + free
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.profiles import DeviceQueue

# frame states, from the host's point of view
F_NONE, F_RAM, F_HSWAP = 0, 1, 2
NO_PAGE = 0xFFFFFFFF  # page field of a host-swap record of a frame that held no guest page

#: Guest features whose guests boot with maxmem frames and memory allocated (the balloon
#: holds the rest); the same set as `overcommit.nodes.guest.BALLOONING`.
BALLOONING = frozenset({"balloon", "selfballoon"})


def boot_need(spec: Any, features: frozenset[str], page_size: int, eager: bool) -> tuple[int, int]:
    """(allocation, frames backed at boot) of a freshly booted guest, in pages: what a host
    must find to restart a failed guest or to take a migrating one."""
    mem, maxm = spec.memory // page_size, spec.maxmem // page_size
    grows = bool(features & (BALLOONING | {"host_swap"}))
    nframes = max(mem, maxm) if grows else mem
    alloc = mem if features & BALLOONING else nframes
    return alloc, (alloc if eager else 0)


class GuestFrames:
    """Host-side state of one guest's frames: unbacked, resident in host RAM, or host-swapped.

    `access` holds, per frame, the last epoch (+1) the guest touched it; `seen` is the host's
    copy of those bits as of its last accessed-bit scan (the lagging information a real host
    has). `rec_page`/`rec_ver` remember what the host wrote to its swap for each host-swapped
    frame, so a swap-in can check that the store gave back what was written. `mkey` holds the
    content key of a merged frame (page sharing).

    Only a host that swaps the guest needs `access`, `seen` and the records, and only one that
    merges frames needs `mkey`: otherwise they are empty (16 and 8 bytes a frame saved).
    """

    def __init__(
        self, nframes: int, eager: bool, host_swap: bool = True, sharing: bool = True
    ) -> None:
        self.state = np.full(nframes, F_RAM if eager else F_NONE, dtype=np.int8)
        self.backed_count = nframes if eager else 0  # frames resident in host RAM
        self.hswapped_count = 0
        hs = nframes if host_swap else 0
        self.access = np.zeros(hs, np.int32)
        self.seen = np.zeros(hs, np.int32)
        self.rec_page = np.full(hs, NO_PAGE, np.uint32)
        self.rec_ver = np.zeros(hs, np.uint32)
        self.mkey = np.zeros(nframes if sharing else 0, np.uint64)
        self.merged_count = 0

    @property
    def private_count(self) -> int:
        """Resident frames with a host frame of their own (merged ones share one)."""
        return self.backed_count - self.merged_count

    def merge(self, frames: np.ndarray, keys: np.ndarray) -> None:
        """Map these resident frames onto the shared host frame of their content."""
        self.mkey[frames] = keys
        self.merged_count += len(frames)

    def unmerge(self, frames: np.ndarray) -> int:
        """Copy-on-write (or release): these frames stop sharing; returns how many did."""
        if self.merged_count == 0:
            return 0
        m = frames[self.mkey[frames] != 0] if len(frames) else frames
        self.mkey[m] = 0
        self.merged_count -= len(m)
        return len(m)

    def __len__(self) -> int:
        return len(self.state)

    @property
    def backed(self) -> np.ndarray:
        """Mask of frames resident in host RAM."""
        return self.state == F_RAM

    def back(self, frames: np.ndarray) -> int:
        """Back the unbacked frames among `frames`; returns how many the host had to allocate.

        Host-swapped frames must be swapped in first (`swap_in`)."""
        if len(frames) == 0 or self.backed_count + self.hswapped_count == len(self.state):
            return 0
        new = frames[self.state[frames] == F_NONE]
        self.state[new] = F_RAM
        self.backed_count += len(new)
        return len(new)

    def hswapped(self, frames: np.ndarray) -> np.ndarray:
        """The host-swapped frames among `frames` (unique input assumed)."""
        if self.hswapped_count == 0 or len(frames) == 0:
            return frames[:0]
        return frames[self.state[frames] == F_HSWAP]

    def swap_in(self, frames: np.ndarray) -> None:
        self.state[frames] = F_RAM
        self.backed_count += len(frames)
        self.hswapped_count -= len(frames)
        self.rec_page[frames] = NO_PAGE

    def swap_out(self, frames: np.ndarray, pages: np.ndarray, versions: np.ndarray) -> None:
        self.state[frames] = F_HSWAP
        self.backed_count -= len(frames)
        self.hswapped_count += len(frames)
        self.rec_page[frames] = pages
        self.rec_ver[frames] = versions

    def release(self, frames: np.ndarray) -> np.ndarray:
        """Hand frames back to the host (ballooned out); returns the host-swapped ones among
        them, whose host swap copies the host discards unread."""
        self.unmerge(frames)
        st = self.state[frames]
        discard = frames[st == F_HSWAP]
        self.backed_count -= int(np.count_nonzero(st == F_RAM))
        self.hswapped_count -= len(discard)
        self.state[frames] = F_NONE
        if len(discard):
            self.rec_page[discard] = NO_PAGE
        return discard

    def touch(self, frames: np.ndarray, epoch: int) -> None:
        self.access[frames] = epoch + 1

    def scan(self) -> None:
        """The host's accessed-bit scan: its view of which frames are cold, until the next."""
        self.seen[:] = self.access

    def pick_victims(
        self, k: int, epoch: int, policy: str, rng: np.random.Generator, exclude: np.ndarray
    ) -> np.ndarray:
        """k resident frames for the host to page out, chosen as a host can: frames not touched
        this epoch, at random or coldest by the last scan's bits; only when those are too few,
        frames the guest just used (the host is thrashing)."""
        if k <= 0:
            return np.empty(0, np.int64)
        resident = self.state == F_RAM
        if self.merged_count:
            resident &= self.mkey == 0  # shared frames stay
        cand = np.flatnonzero(resident & (self.access <= epoch))
        if len(exclude):
            cand = cand[~np.isin(cand, exclude)]
        if len(cand) < k:  # short of RAM: the host takes frames the guest just used, too
            used = np.flatnonzero(resident & (self.access > epoch))
            if len(exclude):
                used = used[~np.isin(used, exclude)]
            return np.sort(np.concatenate([cand, used[: k - len(cand)]]))
        if len(cand) == k:
            return cand
        if policy == "random":
            return np.sort(rng.choice(cand, size=k, replace=False))
        # lagged LRU: oldest by the scanned bits; ties broken at random
        key = self.seen[cand].astype(np.float64) + rng.random(len(cand)) * 0.5
        part = np.argpartition(key, k - 1)[:k]
        return np.sort(cand[part])


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


def fill_by_demand(total: int, demand: list[float], cap: list[int]) -> list[int]:
    """Split `total` by demand without giving anyone more than its cap; what a capped share
    leaves over is split again among the others (water-filling). Deterministic."""
    grants = [0] * len(demand)
    left = total
    active = [i for i, c in enumerate(cap) if c > 0]
    while left > 0 and active:
        shares = split_by_demand(left, [demand[i] or 1.0 for i in active])
        still = []
        for i, share in zip(active, shares):
            give = min(share, cap[i] - grants[i])
            grants[i] += give
            left -= give
            if grants[i] < cap[i]:
                still.append(i)
        if len(still) == len(active):  # nobody capped: the split was final
            break
        active = still
    return grants


@dataclass
class Directives:
    """What the host tells one guest for the next sync window (plain, picklable data).

    Fields a mechanism does not use keep their defaults, which mean "no limit from this
    mechanism": `alloc_target` None (no balloon request), `frame_budget` None (every frame the
    guest touches stays resident).
    """

    tmem_quota: int = 0  # frontswap: pages the guest's pool may hold
    tmem_capacity: int = 0  # frontswap: pages the host's whole pool may hold
    tmem_shared: np.ndarray | None = None  # tmem dedup: content the host's shared store holds
    alloc_target: int | None = None  # balloon: the allocation (pages) the host asks for
    grow_limit: int = 0  # pages the allocation may grow above its size at the window's start
    frame_budget: int | None = None  # host-swap: frames the host keeps resident
    hswap_step: int = 0  # host-swap: frames the host may page out per epoch above the budget
    hswap_quota: int = 0  # host-swap: host swap slots the guest's frames may hold
    hswap_device: DeviceQueue | None = None  # host-swap: the host swap device's queue state
    hswap_scan: bool = False  # host-swap: the host rescans accessed bits at the window's start
    hswap_policy: str = "random"
    hswap_capacity: int = 0  # host-swap: the host's whole swap area (frames)
    cache_budget: int = 0  # cached-disk: pages the host caches for the guest's virtual disk
    ephemeral_quota: int = 0  # cleancache: pages the guest may hold in the ephemeral pool
    compress: bool = True  # zswap/zram: whether the guest compresses (VMware state gating)
    stable: np.ndarray | None = None  # page-sharing: content keys with a shared host frame
    scan_pages: int = 0  # page-sharing: frames the host's scanner visits per epoch
    host_state: str = ""  # VMware-style free-memory state of the host ("" when unused)
    tmem_shrink: int = 0  # frontswap reclaim: pool pages the host asks the guest to move out
    migration: Any = None  # live migration: the driver's MigrationOrder while one runs


@dataclass
class GuestState:
    """What a host knows of one of its guests between sync windows (a guest's own state lives
    with the guest; the host keeps this mirror, refreshed from each window's report)."""

    name: str
    alloc_pages: int  # current allocation: frames not held by the balloon (the host's promise)
    maxmem_pages: int
    memory_pages: int = 0  # the guest's boot allocation
    nframes: int = 0  # guest-physical frames (the most the allocation can be)
    min_alloc: int = 0  # the smallest allocation the balloon may leave (max balloon share)
    backed: int = 0  # frames resident in host RAM
    hswapped: int = 0  # frames in host swap
    tmem_pages: int = 0  # pages the host pool holds for the guest
    tmem_view: int = 0  # pages the guest believes it holds in tmem
    tmem_billed: int = 0  # pages of host RAM billed to the guest for them (= tmem_pages unless
    # the pool compresses or deduplicates)
    tmem_keys: np.ndarray | None = None  # tmem dedup: content keys of its pool pages
    tmem_key_counts: np.ndarray | None = None  # pool pages holding each
    tmem_key_sizes: np.ndarray | None = None  # bytes each is stored in
    tmem_unkeyed_bytes: int = 0  # tmem dedup: bytes of pool pages no other page can match
    window_new_puts: int = 0  # put attempts in the last window (demand)
    alive: bool = True
    cooperative: bool = True  # whether the guest still honours balloon and shrink requests
    active_pages: int = 0  # distinct pages the workload touched in the last window
    active_estimate: float = 0.0  # the host's smoothed estimate of the working set (pages)
    cache_pages: int = 0  # cached-disk: pages of the guest's disk in the host cache
    cache_dirty: int = 0
    cache_demand: int = 0  # cached-disk: swap writes and reads in the last window
    ephemeral_pages: int = 0  # cleancache pages the host holds for the guest
    ephemeral_demand: int = 0  # cleancache puts in the last window
    file_pages: int = 0  # cleancache: file-backed pages of the footprint (the most it can put)
    alloc_goal: int | None = None  # selfballoon: the allocation the guest's worker set
    swap_pages: int = 0  # the guest's swap disk size (pages)
    next_epoch: int = 0  # the first epoch of the guest's next window
    merged: int = 0  # page-sharing: guest frames merged into shared host frames
    candidates: np.ndarray | None = None  # page-sharing: content keys scanned last window
    merged_keys: np.ndarray | None = None  # page-sharing: the shared contents it maps
    plan: Directives = field(default_factory=Directives)  # set by the mechanism

    # compatibility with mechanisms that set the tmem grant directly on the mirror
    @property
    def tmem_quota(self) -> int:
        return self.plan.tmem_quota

    @tmem_quota.setter
    def tmem_quota(self, v: int) -> None:
        self.plan.tmem_quota = v

    @property
    def tmem_capacity(self) -> int:
        return self.plan.tmem_capacity

    @tmem_capacity.setter
    def tmem_capacity(self, v: int) -> None:
        self.plan.tmem_capacity = v


@dataclass
class HostUse:
    """One epoch of a host's RAM use, summed over its guests' reports."""

    backed: int
    tmem: int
    cache: int = 0
    ephemeral: int = 0
    shared: int = 0  # host frames holding merged (shared) content
    hswap: int = 0


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
        swap_size: int = 0,
        swap_device: DeviceQueue | None = None,
        swap_policy: str = "random",
        settings: object | None = None,
        epoch_seconds: float = 0.1,
    ) -> None:
        self.name = name
        self.settings = settings  # the scenario: mechanisms read their sections from it
        self.memo: dict[str, dict] = {}  # per-guest host memory across windows (estimates)
        # RAM the host committed to a guest's own device (its RAM disk), by guest, in pages:
        # what the device holds counts in the pools (cache_pages), the rest stays promised
        self.committed: dict[str, int] = {}
        self.epoch_seconds = epoch_seconds
        self.lendable_at_plan = 0
        self.window_count = 0
        self.page_size = page_size
        self.ram_pages = ram // page_size
        self.reserve_pages = reserve // page_size
        self.boot = boot
        self.tmem_max_pages = None if tmem_max is None else tmem_max // page_size
        self.exclusive_gets = exclusive_gets
        tm = getattr(getattr(settings, "hosts", None), "tmem", None)
        self.tmem_dedup = bool(getattr(tm, "dedup", False))
        self.tmem_shared = np.zeros(0, np.uint64)  # tmem dedup: the shared store's contents
        self.tmem_shared_pages = 0  # host RAM the shared store takes this window
        self.hswap_pages_cap = swap_size // page_size
        self.hswap_device = swap_device
        self.hswap_policy = swap_policy
        self.guests: list[GuestState] = []
        self.tmem_capacity = 0  # host-wide cap passed to the pool for the current window
        self.cache_pages = 0  # disk cache held now (cached-disk), from the guests' reports
        self.ephemeral_pages = 0  # cleancache pool, from the guests' reports
        self.ephemeral_capacity = 0  # cleancache: the guests' quotas for the current window
        self.shared_pages = 0  # page-sharing: host frames holding shared content
        self.granted = 0  # pages lent in the window being planned (see lend)
        self.frozen = False
        self.reclaiming = False  # a host_reclaim event: lend nothing, take back what it can
        self.reclaim_need = 0  # pages the HA controller needs freed for a restart (failover)
        self.promised = 0  # pages promised to guests arriving (restart, migration): not lent
        self.state = ""  # VMware-style free-memory state, when a mechanism sets one
        self.peak_tmem_pages = 0
        self.min_free_pages = self.ram_pages
        self.peak_hswap_pages = 0
        self.window = 0

    # -- accounting -------------------------------------------------------------------------
    def reserved_pages(self) -> int:
        """RAM promised to guests: their current allocations."""
        return sum(g.alloc_pages for g in self.guests)

    def backed_pages(self) -> int:
        return sum(g.backed for g in self.guests)

    def tmem_pages(self) -> int:
        """Host RAM the persistent pool takes: the pages billed to each guest (the pages the
        pool in Redis reported, unless it compresses or deduplicates) and the shared store."""
        return sum(g.tmem_billed for g in self.guests) + self.tmem_shared_pages

    def refresh(self) -> None:
        """Take the pools' sizes from the guests' latest reports."""
        self.cache_pages = sum(g.cache_pages for g in self.guests)
        self.ephemeral_pages = sum(g.ephemeral_pages for g in self.guests)

    def committed_unused(self) -> int:
        """RAM committed to its guests' RAM disks that they do not hold yet (promised: no
        guest allocation, restart or lender may use it)."""
        if not self.committed:
            return 0
        return sum(max(0, self.committed.get(g.name, 0) - g.cache_pages) for g in self.guests)

    def pools_pages(self) -> int:
        """RAM the host holds outside guest frames: tmem, ephemeral, cache."""
        return self.tmem_pages() + self.ephemeral_pages + self.cache_pages

    def free_pages(self, use: HostUse | None = None) -> int:
        if use is None:
            use = HostUse(
                self.backed_pages() - sum(g.merged for g in self.guests),
                self.tmem_pages(),
                self.cache_pages,
                self.ephemeral_pages,
                self.shared_pages,
            )
        return (
            self.ram_pages
            - self.reserve_pages
            - use.backed
            - use.shared
            - use.tmem
            - use.ephemeral
            - use.cache
        )

    def guest_room(self) -> int:
        """RAM guest allocations may use: all but the reserve, what the pools hold now, except
        the ephemeral pool, which the host drops at will (cleancache plans last and the pool
        shrinks to its new quotas in the window's first epoch), and RAM disk space committed
        but not yet written."""
        held = self.pools_pages() - self.ephemeral_pages
        return (
            self.ram_pages - self.reserve_pages - held - self.shared_pages - self.committed_unused()
        )

    def lendable(self) -> int:
        """Pages the host may still lend this window: free RAM not promised to any guest's
        allocation, minus what earlier lenders of this window booked."""
        if self.reclaiming:
            return 0
        return max(0, self.guest_room() - self.reserved_pages() - self.granted - self.promised)

    def lend(self, pages: int) -> None:
        """Book `pages` of this window's lending (allocation growth, tmem, caches)."""
        self.granted += max(0, pages)

    def tmem_room(self) -> int:
        """Pages the persistent pool may still grow by: lendable RAM, under the pool's cap."""
        room = self.lendable()
        if self.tmem_max_pages is not None:
            room = min(room, max(0, self.tmem_max_pages - self.tmem_pages()))
        return room

    def epoch_checks(self, use: HostUse) -> list[str]:
        """Host RAM conservation for one epoch, given its guests' reports."""
        out = []
        free = self.free_pages(use)
        self.peak_tmem_pages = max(self.peak_tmem_pages, use.tmem)
        self.peak_hswap_pages = max(self.peak_hswap_pages, use.hswap)
        self.min_free_pages = min(self.min_free_pages, free)
        if free < 0:
            out.append(
                f"{self.name}: RAM overdrawn: ram {self.ram_pages} < reserve {self.reserve_pages}"
                f" + frames {use.backed} + shared {use.shared} + tmem {use.tmem}"
                f" + ephemeral {use.ephemeral} + cache {use.cache} (pages)"
            )
        if use.tmem > self.tmem_capacity:
            out.append(f"{self.name}: tmem {use.tmem} pages above window cap {self.tmem_capacity}")
        if use.ephemeral > self.ephemeral_capacity:
            out.append(
                f"{self.name}: ephemeral pool {use.ephemeral} pages above the window's quotas "
                f"{self.ephemeral_capacity}"
            )
        if use.hswap > self.hswap_pages_cap:
            out.append(
                f"{self.name}: {use.hswap} frames in host swap, which holds "
                f"{self.hswap_pages_cap} pages"
            )
        return out
