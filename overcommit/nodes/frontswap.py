"""`frontswap`: guests offer swapped-out pages to the host's persistent tmem pool first.

Guest side (in the guest kernel's swap path): every page written to swap is first *put* to
tmem; the put may fail (pool full, host short of free RAM, guest RAM + tmem at maxmem, client
frozen) and the page then goes to the swap disk. A page in tmem still holds a swap slot. A get
does not remove the page unless `exclusive_gets`. The atomic pool operations are Lua scripts in
the host's Redis (`overcommit.stores.tmem`).

Host side (this module): the host lends free RAM that no guest's boot allocation claims. Each
sync window it splits the room among its guests by their previous window's put demand (largest
remainder), so every put in the window is decided by the guest's own quota and the outcome does
not depend on the order in which guests run — "any put may fail" makes this a faithful policy.

When the HA controller needs memory on this host for a restart (`HostModel.reclaim_need`), the
host refuses every put and asks guests to move pool pages to their swap disks (`tmem_shrink`);
a cooperative guest does so at the pace its share of the shared storage device writes, an
uncooperative one ignores the request.

Compression and deduplication (`hosts.tmem.compress`, `hosts.tmem.dedup`; Xen: ~2x pages
stored for ~10x CPU): the pool then bills host RAM, the guest's quota and its maxmem by what
its pages take, not by their number (`PoolBilling`, the guest-side table of what each of its
pool pages costs). With `compress` a page costs its compressed size, measured with zlib on the
page's content in `full` payload mode and on a sample at the workload's compressibility in
`digest` mode; a page that does not compress below a page less the allocator's header is
stored whole, a same-filled page costs nothing. With `dedup` the host stores content several
pages hold once (`share_identical`): at each window's start, content held by two or more pool
pages (in one guest or across guests) joins the host's shared store and stays there while any
guest still holds it; a put of content in that store costs the guest nothing, and the shared
store's bytes are billed to the host, once, for the whole window. The tmem Lua script decides
each put against the bytes the guest may still add (its quota, in billed pages, less what it
holds), so outcomes depend on the guest's own pages and the window's directives only. Puts and
gets cost `costs.tmem_compress_factor` (10) times their plain cost when compressing; with dedup
each put hashes the page (a page copy's time).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.mechanism import Mechanism
from overcommit.nodes.zswap import SAMPLE_PAGES, ZBUD_HEADER, measure_sizes
from overcommit.stores.codec import guest_key, make_payload

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel


class Frontswap(Mechanism):
    name = "frontswap"
    guest_features = frozenset({"tmem"})
    plan_order = 40

    def plan_window(self, host: HostModel) -> None:
        guests = host.guests
        room = host.tmem_room()
        # a guest can use at most its billing headroom (maxmem - RAM - what it holds), where
        # RAM is its allocation after any growth granted for this window
        headroom = [
            max(0, g.maxmem_pages - g.alloc_pages - g.plan.grow_limit - g.tmem_billed)
            for g in guests
        ]
        demand = [min(g.window_new_puts + 1.0, h) for g, h in zip(guests, headroom)]
        grants = fill_by_demand(room, demand, headroom)
        host.lend(sum(grants))
        for g, grant in zip(guests, grants):
            # a reclaiming host refuses every new put (persistent pages it cannot take back)
            g.plan.tmem_quota = 0 if host.reclaiming else g.tmem_billed + grant
            g.window_new_puts = 0
        host.tmem_capacity = host.tmem_pages() + sum(grants)
        for g in guests:
            g.plan.tmem_capacity = host.tmem_capacity
        if host.reclaim_need > 0:
            ask_to_shrink(host)


def ask_to_shrink(host: HostModel) -> None:
    """Failover reclaim: ask guests to move pool pages to their swap disks, the host's need
    split by what each holds, among the guests that still cooperate (all, if none does)."""
    guests = [g for g in host.guests if g.alive and g.tmem_pages]
    asked = [g for g in guests if g.cooperative] or guests
    held = [g.tmem_pages for g in asked]
    want = min(host.reclaim_need, sum(held))
    for g, k in zip(asked, fill_by_demand(want, [float(x) for x in held], held)):
        g.plan.tmem_shrink = k


class PoolBilling:
    """What one guest's persistent-pool pages cost with a compressing or deduplicating pool.

    Per page of the footprint: the bytes its pool copy is stored in (`size`), its content key
    (`key`; 0 for content no other page can have) and the bytes billed to the guest (`cost`:
    its size, or 0 while the host's shared store holds that content). `bill` is their sum."""

    def __init__(
        self,
        n: int,
        page_size: int,
        compress: bool,
        dedup: bool,
        payload: str,
        compressibility: float,
        guest: str,
    ) -> None:
        self.page_size = page_size
        self.compress = compress
        self.dedup = dedup
        self.payload = payload
        self.compressibility = compressibility
        self.gkey = guest_key(guest)
        self.size = np.zeros(n, np.int64)
        self.key = np.zeros(n, np.uint64)
        self.cost = np.zeros(n, np.int64)
        self.bill = 0
        self.shared = np.zeros(0, np.uint64)  # content the host's shared store holds
        self._sample: int | None = None

    def stored_sizes(self, payload: np.ndarray | None, k: int) -> np.ndarray:
        """Bytes the pool stores each of k pages in (their payload in `full` mode)."""
        ps = self.page_size
        if not self.compress:
            return np.full(k, ps, np.int64)
        if self.payload == "full" and payload is not None:
            sizes, _ = measure_sizes(payload)
        else:
            if self._sample is None:
                sample = make_payload(
                    self.gkey,
                    np.arange(SAMPLE_PAGES, dtype=np.uint32),
                    np.ones(SAMPLE_PAGES, np.uint32),
                    ps,
                    self.compressibility,
                )
                self._sample = int(round(measure_sizes(sample)[0].mean()))
            sizes = np.full(k, self._sample, np.int64)
        return np.where(sizes >= ps - ZBUD_HEADER, ps, sizes)  # poorly compressed: whole

    def costs(self, sizes: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Bytes billed to the guest for pages of these sizes and keys."""
        if not len(self.shared):
            return sizes.copy()
        return np.where((keys != 0) & np.isin(keys, self.shared), 0, sizes)

    def shared_hits(self, keys: np.ndarray) -> np.ndarray:
        return (keys != 0) & np.isin(keys, self.shared) if len(self.shared) else keys != keys

    def removal(self, pages: np.ndarray) -> int:
        """Bytes the guest stops being billed for when these pool pages leave."""
        return int(self.cost[pages].sum()) if len(pages) else 0

    def remove(self, pages: np.ndarray) -> None:
        if len(pages):
            self.bill -= int(self.cost[pages].sum())
            self.cost[pages] = 0

    def add(self, pages: np.ndarray, sizes: np.ndarray, keys: np.ndarray) -> None:
        if len(pages):
            c = self.costs(sizes, keys)
            self.size[pages] = sizes
            self.key[pages] = keys
            self.cost[pages] = c
            self.bill += int(c.sum())

    def rebase(self, shared: np.ndarray | None, held: np.ndarray) -> None:
        """A new window: the host's shared store is `shared`; `held` are the pool's pages."""
        self.shared = np.zeros(0, np.uint64) if shared is None else shared
        self.cost[held] = self.costs(self.size[held], self.key[held])
        self.bill = int(self.cost[held].sum())

    def reset(self) -> None:
        self.cost[:] = 0
        self.bill = 0

    @property
    def billed_pages(self) -> int:
        return -(-self.bill // self.page_size)

    def recount(self, held: np.ndarray) -> int:
        """The bill recomputed from the table (the audit's check of the running sum)."""
        return int(self.costs(self.size[held], self.key[held]).sum())

    def report(self, held: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(content keys, pages holding each, their stored size, bytes of unkeyed pages)."""
        keys, sizes = self.key[held], self.size[held]
        keyed = keys != 0
        unkeyed = int(sizes[~keyed].sum())
        uk, first, counts = np.unique(keys[keyed], return_index=True, return_counts=True)
        return uk, counts.astype(np.int64), sizes[keyed][first], unkeyed


def share_identical(host: HostModel) -> None:
    """The host's deduplicating pool at a window's start: content two or more pool pages hold
    (or held at the last window's start, and some page still holds) is stored once, billed to
    the host; each guest is billed what remains of its pages (`tmem_billed`)."""
    ps = host.page_size
    guests = host.guests
    reps = [g for g in guests if g.tmem_keys is not None and len(g.tmem_keys)]
    if reps:
        keys = np.concatenate([g.tmem_keys for g in reps])
        counts = np.concatenate([g.tmem_key_counts for g in reps])
        sizes = np.concatenate([g.tmem_key_sizes for g in reps])
        uk, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        total = np.bincount(inv, weights=counts).astype(np.int64)
        keep = (total >= 2) | np.isin(uk, host.tmem_shared)
        shared, shared_sizes = uk[keep], sizes[first][keep]
    else:
        shared, shared_sizes = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    host.tmem_shared = shared.astype(np.uint64)
    host.tmem_shared_pages = math.ceil(int(shared_sizes.sum()) / ps)
    for g in guests:
        billed = g.tmem_unkeyed_bytes
        if g.tmem_keys is not None and len(g.tmem_keys):
            private = ~np.isin(g.tmem_keys, shared)
            billed += int((g.tmem_key_sizes[private] * g.tmem_key_counts[private]).sum())
        g.tmem_billed = -(-billed // ps)
        g.plan.tmem_shared = host.tmem_shared


__all__ = ["Frontswap", "PoolBilling", "fill_by_demand", "share_identical"]
