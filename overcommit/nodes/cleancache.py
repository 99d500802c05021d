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

The 2010 thread: tmem's second client: clean page-cache pages the guest would drop are kept in
the host's free RAM, which the host may take back at any time (ephemeral), so the commitment
objection does not apply. Compare `frontswap+cleancache` with `frontswap` on a file-heavy
workload.

Guest hooks (`CleancacheGuest`): page-cache victims are put (`request`), page-cache misses get
first and read the file disk in phase 2 for what the pool no longer held (`reply`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import _EI, EphOps, Reply, Request
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import Directives, HostModel
    from overcommit.nodes.kernel.model import GuestModel


class Cleancache(Mechanism):
    """Host policy: per-guest ephemeral quotas out of what is still lendable, planned last."""

    name = "cleancache"
    guest_features = frozenset({"cleancache"})
    guest_hooks = ("CleancacheGuest",)
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


_U = np.empty(0, np.uint32)


class CleancacheGuest(GuestMechanism):
    """Guest side: reclaimed page-cache pages are put to the ephemeral pool; page-cache
    misses get from it first, and read the file disk in phase 2 for what it no longer holds."""

    features = frozenset({"cleancache"})
    order = 15  # after frontswap: its put stall adds to frontswap's

    def init(self, g: GuestModel) -> None:
        g.cleancache = True

    def start_window(self, g: GuestModel, e0: int, d: Directives) -> None:
        g.eph_demand = 0  # cleancache puts in the window

    def request(self, g: GuestModel, ep: EpochContext, req: Request, phase: int) -> None:
        if phase != 1:
            return
        fvict = ep.fvict
        self.puts = None
        if len(fvict):  # every reclaimed file page (clean by then) is put; frames read out
            self.puts = g._batch(fvict, ep.f_vers)
            ep.f_out = fvict
        gets, d = ep.f_file, ep.d
        if len(gets) or self.puts is not None or g.eph_pages > d.ephemeral_quota:
            req.eph = EphOps(gets.astype(np.uint32), self.puts, d.ephemeral_quota)
        ep.f_rd1 = _EI  # the file disk serves only the pool's misses, in phase 2

    def reply(
        self, g: GuestModel, ep: EpochContext, req: Request, reply: Reply, phase: int
    ) -> None:
        if phase != 1:
            return
        c = g.counters
        self.ok = np.zeros(len(ep.fvict) if self.puts is not None else 0, bool)
        if req.eph is not None:
            r = reply.eph
            hit = np.asarray(r.found, bool)
            got = r.got
            found = np.ones(len(got), bool)
            g._check_read(
                got.pages.astype(np.int64), found, got, "the ephemeral pool", ep.violations
            )
            ep.f_miss = ep.f_file[~hit]
            if self.puts is not None:
                self.ok = np.asarray(r.put_ok, bool)
                g.eph_demand += len(self.puts)
            c["cleancache_hits"] += len(ep.f_file) - len(ep.f_miss)
            c["cleancache_misses"] += len(ep.f_miss)
            c["cleancache_puts"] += int(np.count_nonzero(self.ok))
            c["cleancache_put_failures"] += len(self.ok) - int(np.count_nonzero(self.ok))
            c["cleancache_evictions"] += int(r.dropped)
            g.eph_pages = int(r.guest_pages)
        # misses are read in phase 2, after this epoch's writes: keep the versions they expect
        f_miss = ep.f_miss
        if len(f_miss):
            v = g.version[f_miss]
            ep.f_rd2, ep.f_rd2_ver = f_miss[v > 0], v[v > 0]

    def stall(self, g: GuestModel, ep: EpochContext, s: dict[str, float]) -> None:
        """Gets (a miss spends the hypercall), puts in direct reclaim."""
        if not g.has_files:
            return
        costs, ps = g.costs, g.page_size
        lat_cc = costs.minor_fault + costs.get(ps)
        n_hit = len(ep.f_file) - len(ep.f_miss)
        s["cleancache_get"] = n_hit * lat_cc + len(ep.f_miss) * (costs.hypercall + costs.tmem_get)
        ok = self.ok
        if len(ok):
            sync_v = ~ep.is_async[ep.victims >= g.file_lo]  # aligned with fvict
            s["reclaim_put"] += int(np.count_nonzero(ok & sync_v)) * costs.put(ps)
            s["reclaim_put"] += int(np.count_nonzero(~ok & sync_v)) * costs.failed_put()
            # kswapd's puts: the same CPU, off the faulting path
            s["background_cpu"] += int(np.count_nonzero(ok & ~sync_v)) * costs.put(ps)
            s["background_cpu"] += int(np.count_nonzero(~ok & ~sync_v)) * costs.failed_put()
        g.counters["hypercalls"] += len(ep.f_file) + len(ok)
        g._hist_add(lat_cc, n_hit)

    def release(self, g: GuestModel, req: Request, whole: bool) -> None:
        req.eph = EphOps(_U, None, 0, flush_area=True)

    def released(self, g: GuestModel, reply: Reply, out: list[tuple[str, str]]) -> None:
        if reply.eph_flushed != g.eph_pages:
            out.append(
                (
                    "conservation",
                    f"{g.name}: flushing the ephemeral pool removed {reply.eph_flushed} "
                    f"pages, the pool held {g.eph_pages}",
                )
            )
        g.eph_pages = 0

    def store_lost(self, g: GuestModel) -> None:
        g.eph_pages = 0

    def leave(
        self, g: GuestModel, src: str, flush: bool, out: dict[str, Any]
    ) -> Generator[Request, Reply, None]:
        """Ephemeral pages are dropped (the host may drop them at any time anyway)."""
        out["ephemeral_dropped"] = g.eph_pages
        if g.eph_pages:
            yield Request(g.name, src, g.disk, eph=EphOps(_U, None, 0, flush_area=True))
            g.eph_pages = 0
