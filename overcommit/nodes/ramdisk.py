"""`ramdisk`: the guest swaps to a virtual block device backed by host RAM (a host RAM disk).

The 2010 thread: Dave Hansen asked "how is a ram-backed frontswap better than a
/dev/ramX-backed swap file in practice?", Pavel Machek wanted "comparison of swap-to-frontswap
vs. swap-to-RAMdisk", and Dan Magenheimer answered that a RAM disk "is copying to a chunk of
RAM with a known permanently-fixed size so it SHOULD be faster than swap-to-hypervisor".
This mechanism tests that claim: the same host RAM frontswap would lend, offered as an
ordinary swap device (Avi Kivity: "an ordinary swap device, with a higher priority than the
disk device"). Compare `ramdisk` with `frontswap` and `cached-disk` (study i of `overcommit
findings`), and sweep `costs.io_exit` and `guests[].swap_cluster` against frontswap's
`costs.hypercall` for the exits-per-page break-even (study j).

Guest side: the guest's swap I/O is block I/O, batched and asynchronous like any disk's:
kswapd writes `swap_cluster` pages per I/O exit (`costs.io_exit` + the copy, charged to the
vCPU as `background_cpu`, no wait); direct reclaim waits for its batches (`reclaim_write`); a
swap-in reads its readahead cluster in one exit (`costs.major_fault` + `costs.io_exit` + the
copy). No write ever fails: the device has a fixed size, and once it is full the guest's
swap-outs go to its lower-priority swap disk (`cache_write_through`), decided by the guest's
own slot allocator, with no call wasted. There are no hypercalls.

Host side: the RAM disk's size is the RAM the host lets the guest have beyond its memory
(`maxmem - memory`, the same bill frontswap's pool is held to; at most the guest's swap). The
host commits it when the guest first runs on it, out of free RAM no one else is promised
(less if it has less; never more afterwards): a device of fixed size. Its pages are host
RAM: they are allocated as the guest writes them and freed when the guest discards their
slots (a page rewritten, or its swap slot freed), and the host's conservation counts them
(in the hosts.csv `cache_pages` column, as a cache's). What the host cannot do is take them
back: the RAM disk is the only copy of the guest's data and, like a Linux brd device, its
pages are neither reclaimable nor swappable, so a `host_reclaim` or a failover's reclaim gets
nothing from it (the RAM disk "cannot shrink"); only the guest's discards, its death (a host
failure loses them: `cache_pages_lost`) or its migration (the pages are written to its swap
disk on shared storage, `cache_writebacks`, and the destination commits a RAM disk of its
own) free them.

Store: the pages live in the host's Redis as the host cache's records do
(`stores.diskcache` with `kind="ramdisk"`: `{prefix}:ramdisk:{disk}`, every page marked dirty,
since nothing behind the RAM disk holds it); the integrity checker reads them back at the end.
Counters: `cache_writes` (pages written to the RAM disk), `cache_hits` (pages read from it),
`cache_write_through` (swap-outs to the disk because the RAM disk was full), `io_exits`.

Guest hooks (`RamDiskGuest`): those of `cached_disk.CachedDiskGuest` with a cache that never
writes back and never drops a page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from overcommit.nodes.cached_disk import C_CLEAN, CachedDiskGuest, DiskCache
from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.kernel.types import CacheOps
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import GuestState, HostModel
    from overcommit.nodes.kernel.hooks import EpochContext
    from overcommit.nodes.kernel.model import GuestModel


@dataclass
class RamDiskOps(CacheOps):
    """One epoch's operations on the guest's RAM disk (the host's Redis, `ramdisk` keys)."""

    store: str = "ramdisk"


def ramdisk_size(g: GuestState) -> int:
    """The RAM disk a guest asks for (pages): maxmem - memory, at most its swap."""
    return max(0, min(g.maxmem_pages - g.memory_pages, g.swap_pages))


class RamDisk(Mechanism):
    """Host policy: commit each guest's RAM disk once, out of free unpromised RAM, and keep
    the part not yet written promised to it; never take any of it back."""

    name = "ramdisk"
    guest_features = frozenset({"ramdisk"})
    guest_hooks = ("RamDiskGuest",)
    plan_order = 30  # a commitment: booked before anything is lent out of the rest

    def plan_window(self, host: HostModel) -> None:
        guests = host.guests
        if not guests:
            return
        # what a RAM disk committed earlier has not used stays promised to it: the host's
        # room for allocations and lending leaves it out (`HostModel.committed_unused`)
        new = [g for g in guests if g.name not in host.committed and g.alive]
        if new:
            want = [ramdisk_size(g) for g in new]
            grants = fill_by_demand(host.lendable(), [float(w) for w in want], want)
            for g, k in zip(new, grants):
                host.committed[g.name] = k
        for g in guests:
            g.plan.cache_budget = host.committed.get(g.name, 0)


class RamDiskState(DiskCache):
    """The guest's RAM disk as the host holds it (pages = swap slots): written pages stay
    until discarded; none is ever written back or dropped."""

    store = "ramdisk"

    def __init__(self, n: int) -> None:
        self.state = np.zeros(n, np.int8)
        self.stamp = np.zeros(n, np.int64)
        self.count = 0
        self.dirty = 0
        self.budget = 0  # the device's size, as the host committed it
        self.expire = math.inf
        self.dirty_ratio = 1.0
        self.demand = 0

    def audit(self) -> list[str]:
        out = super().audit()
        clean = int(np.count_nonzero(self.state == C_CLEAN))
        if clean:
            out.append(f"RAM disk holds {clean} page(s) marked written back (it has no disk)")
        if self.count > self.budget:
            out.append(f"RAM disk holds {self.count} pages, its size is {self.budget}")
        return out


class RamDiskGuest(CachedDiskGuest):
    """Guest side: swap I/O to a RAM disk of fixed size, then to the swap disk."""

    features = frozenset({"ramdisk"})
    order = 20
    ops = RamDiskOps

    def init(self, g: GuestModel) -> None:
        g.cache = RamDiskState(g.N)

    def writeback_limit(self, g: GuestModel, ep: EpochContext) -> int:
        return 0  # nothing behind a RAM disk to write back to
