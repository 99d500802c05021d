"""`cleancache`: ephemeral tmem for clean page-cache pages (Xen tmem's ephemeral pools).

A workload's `file_cache` share of its footprint is file-backed page cache (the last pages of
the footprint): read from the guest's own disk on first use, clean until written, and on
reclaim *dropped* (clean) or written back to its file (dirty) rather than swapped; a later
touch re-reads it from the disk. That much holds under every mechanism (`GuestModel`).

Guest side, with cleancache: a file page the guest reclaims, clean (or just written back), is
first *put* into the host's ephemeral pool; a page-cache miss first tries a *get*, which
returns the page only if the host still holds it. Gets are exclusive, as in Xen's private
ephemeral pools: the copy leaves the pool as the page comes back into the page cache, so a
page the guest then writes has no copy left to go stale (its next eviction puts the version it
then holds). A get that finds nothing costs the failed hypercall and then the disk read.

Host side (`Cleancache.plan_window`): the pool lives in the host's Redis
(`stores.ephemeral`, one hash and one LRU list per guest, `lua/eph_batch.lua`). The host may
drop ephemeral pages at any time, so it counts them as free when other lenders plan (the
persistent pool, the disk cache, allocation growth) and plans cleancache last: what is still
lendable is split among the guests by demand (pages held + pages put in the last window),
capped by each guest's file pages and by `cleancache.max`. Within the window the pool drops
the least recently put pages beyond each guest's quota: at once when the quota shrank (the
guest's first batch of the window, which the guest issues whenever it holds more than its
quota), and on each put that would exceed it. Host RAM counts the pool's pages
(`ephemeral_pages`) every epoch. A `host_reclaim` sets every quota to 0: the pool empties at
once, with no guest involvement. Counters: `cleancache_puts`, `cleancache_put_failures`,
`cleancache_hits`, `cleancache_misses`, `cleancache_evictions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel


class Cleancache(Mechanism):
    """Host policy: per-guest ephemeral quotas out of what is still lendable, planned last."""

    name = "cleancache"
    guest_features = frozenset({"cleancache"})
    plan_order = 70

    def plan_window(self, host: HostModel) -> None:
        guests = host.guests
        total = host.lendable()  # the pool's current pages count as free: dropped at will
        cfg = getattr(host.settings, "cleancache", None)
        if cfg is not None and cfg.max is not None:
            total = min(total, int(cfg.max) // host.page_size)
        caps = [g.file_pages if g.alive else 0 for g in guests]
        demand = [g.ephemeral_pages + g.ephemeral_demand + 1.0 for g in guests]
        grants = fill_by_demand(total, demand, caps)
        host.lend(sum(grants))
        for g, q in zip(guests, grants):
            g.plan.ephemeral_quota = q
        host.ephemeral_capacity = sum(grants)
