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
stored for ~10x CPU) are modelled in billing only: the host's Redis stores every page's record
whole, duplicates included, and the pool bills host RAM, the guest's quota and its maxmem by what
its pages take, not by their number (`PoolBilling`, the guest-side table of what each of its
pool pages costs). With `compress` a page costs its compressed size, measured with zlib on the
page's content in `full` payload mode and on a sample at the workload's compressibility in
`digest` mode; a page that does not compress below a page less the allocator's header is
stored whole, a same-filled page costs nothing. With `dedup` the host bills content several
pages hold once (`share_identical`, by content key): at each window's start, content held by
two or more pool pages (in one guest or across guests) joins the host's shared store (a
billing table) and stays there while any guest still holds it; a put of content in that
store costs the guest nothing, and the shared store's bytes are billed to the host, once, for
the whole window. The tmem Lua script decides
each put against the bytes the guest may still add (its quota, in billed pages, less what it
holds), so outcomes depend on the guest's own pages and the window's directives only. Puts and
gets cost `costs.tmem_compress_factor` (10) times their plain cost when compressing; with dedup
each put hashes the page (a page copy's time).

The 2010 thread: Dan Magenheimer's claim that a synchronous, page-at-a-time "put may fail"
interface lets the hypervisor hand its *free* RAM to guests as fast swap, against Avi Kivity's
objection that the host is then "at the mercy of your guests to give up their tmem" when a
node dies. Compare `frontswap` with `none` and `cached-disk` for the speed claim; run a
failover drill (`host_reclaim`, uncooperative guests) for the commitment claim.

Guest hooks (`FrontswapGuest`): dirty victims are put first (`take_dirty`, phase-1 `request`),
refused puts go to the disk in phase 2, faults get from the pool (exclusive gets free the
slot), selfshrink brings pool pages back (`begin`), `drain`/`shrink` give the pool back,
`leave`/`arrive` move it with a migrating guest.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.kernel import jit
from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import (
    _E,
    FRONTSWAP,
    NO_SLOT,
    RAM,
    SWAP,
    UNTOUCHED,
    ZERO_PAGE_KEY,
    EpochStats,
    Reply,
    Request,
    SwapOps,
    TmemOps,
    _member,
)
from overcommit.nodes.mechanism import Mechanism
from overcommit.nodes.zswap import SAMPLE_PAGES, ZBUD_HEADER, measure_sizes
from overcommit.stores.codec import RecordBatch, guest_key, is_common, make_payload

if TYPE_CHECKING:
    from overcommit.nodes.host import Directives, HostModel
    from overcommit.nodes.kernel.model import GuestModel
    from overcommit.profiles import DeviceQueue


class Frontswap(Mechanism):
    name = "frontswap"
    guest_features = frozenset({"tmem"})
    guest_hooks = ("FrontswapGuest",)
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


class FrontswapGuest(GuestMechanism):
    """Guest side: swap-outs are put to host tmem first; faults get them back; selfshrink
    brings pool pages back; the host may ask the guest to drain or shrink its pool."""

    features = frozenset({"tmem"})
    order = 10

    def init(self, g: GuestModel) -> None:
        g.uses_tmem = True
        tm = getattr(getattr(g.settings, "hosts", None), "tmem", None)
        if tm is not None and (tm.compress or tm.dedup):
            g.billing = PoolBilling(
                g.N,
                g.page_size,
                tm.compress,
                tm.dedup,
                g.payload,
                g.workload.compressibility,
                g.name,
            )
        # a compressing pool's puts and gets cost this many times theirs (Xen: ~10x CPU)
        compressing = g.billing is not None and g.billing.compress
        g.tm_factor = g.costs.tmem_compress_factor if compressing else 1.0

    def start_window(self, g: GuestModel, e0: int, d: Directives) -> None:
        g.shrink_left = d.tmem_shrink if g.cooperative else 0
        if g.billing is not None:  # what the host's shared store now holds costs nothing
            g.billing.rebase(d.tmem_shared, np.flatnonzero(g.slot == FRONTSWAP))

    def quiet_ok(self, g: GuestModel) -> bool:
        return g.billing is None

    def billed(self, g: GuestModel) -> int:
        return g.billing.billed_pages if g.billing is not None else g.tmem_pages

    def begin(self, g: GuestModel, ep: EpochContext) -> None:
        if g.unuse_left > 0:  # selfshrink: bring pool pages back, flush clean copies
            ep.pull_in, ep.pull_flush = _unuse_pick(g, ep.uniq, ep.need0)
        pull_in, pull_fl = ep.pull_in, ep.pull_flush
        if len(pull_in) or len(pull_fl):
            ep.free_extra.append(np.union1d(pull_in, pull_fl))
        self.gets = np.union1d(ep.f_fs, pull_in) if len(pull_in) else ep.f_fs
        if g.exclusive_gets:
            ep.taken = self.gets

    def reclaim_plan(self, g: GuestModel, ep: EpochContext) -> None:
        ep.budget = -1  # kswapd may put anything: tmem takes it or the page waits for disk

    def take_dirty(self, g: GuestModel, ep: EpochContext) -> None:
        ep.puts_first = True

    def request(self, g: GuestModel, ep: EpochContext, req: Request, phase: int) -> None:
        if phase != 1:
            return
        gets, batch, d = self.gets, ep.batch, ep.d
        if len(gets) or len(ep.fs_flush) or batch is not None:
            req.tmem = TmemOps(
                gets=gets.astype(np.uint32),
                flushes=ep.fs_flush.astype(np.uint32),
                puts=batch,
                quota=d.tmem_quota,
                capacity=d.tmem_capacity,
                exclusive_gets=g.exclusive_gets,
            )
        bl = g.billing
        if bl is not None and req.tmem is not None:  # the pool bills what pages take
            self.leaving = np.union1d(ep.fs_flush, ep.taken) if g.exclusive_gets else ep.fs_flush
            if batch is not None:
                self.put_sizes = bl.stored_sizes(batch.payload, len(batch))
                self.put_keys = _put_keys(g, ep.dirty, ep.vers, batch)
                req.tmem.costs = bl.costs(self.put_sizes, self.put_keys)
                req.tmem.room = d.tmem_quota * g.page_size - (bl.bill - bl.removal(self.leaving))

    def reply(
        self, g: GuestModel, ep: EpochContext, req: Request, reply: Reply, phase: int
    ) -> None:
        if phase != 1:
            return
        c = g.counters
        dirty, batch, bl = ep.dirty, ep.batch, g.billing
        put_ok = np.zeros(len(dirty), bool)
        if req.tmem is not None:
            r = reply.tmem
            gets = self.gets
            g._check_read(gets, r.found, r.got, "frontswap", ep.violations)
            if batch is not None:
                put_ok = np.asarray(r.put_ok, bool)
            got_fs = r.found if gets is ep.f_fs else r.found[_member(gets, ep.f_fs)]
            c["frontswap_gets"] += int(np.count_nonzero(got_fs))
            c["frontswap_flushes"] += int(r.flushed)
            c["frontswap_invalidated"] += int(r.invalidated)
            g.tmem_pages = int(r.guest_pages)
            if bl is not None:
                bl.remove(self.leaving)
                if batch is not None:
                    ok = put_ok
                    bl.add(dirty[ok], self.put_sizes[ok], self.put_keys[ok])
                    deduped = ok & bl.shared_hits(self.put_keys)
                    c["frontswap_dedup_puts"] += int(np.count_nonzero(deduped))
        self.put_ok = put_ok
        ep.to_disk = dirty[~put_ok]
        self.to_fs = dirty[put_ok]
        if len(ep.to_disk):  # refused puts go to the disk in phase 2
            ep.p2_through = batch.take(np.flatnonzero(~put_ok))

    def evict(self, g: GuestModel, ep: EpochContext) -> None:
        g._set_loc(self.to_fs, FRONTSWAP)
        g._set_slot(self.to_fs, FRONTSWAP)

    def stall(self, g: GuestModel, ep: EpochContext, s: dict[str, float]) -> None:
        c, costs, ps = g.counters, g.costs, g.page_size
        ep.n_put, ep.n_fail = len(ep.dirty), len(ep.to_disk)
        g.window_new_puts += ep.n_put
        c["frontswap_puts"] += ep.n_put - ep.n_fail
        c["frontswap_put_failures"] += ep.n_fail
        c["selfshrink_pages"] += len(ep.pull_in) + len(ep.pull_flush)
        bl = g.billing
        lat_fs = costs.minor_fault + costs.get(ps)
        if bl is not None:  # decompressing gets
            lat_fs = costs.minor_fault + costs.get(ps) * g.tm_factor
        s["frontswap_get"] = len(ep.f_fs) * lat_fs
        s["frontswap_flush"] = len(ep.fs_flush) * costs.flush()
        g._hist_add(lat_fs, len(ep.f_fs))
        # puts by outcome and by reclaim kind: refused sync, refused async, ok sync, ok async
        if jit.ENABLED:
            fail_sync, fail_async, ok_sync, ok_async = jit.pair_counts(self.put_ok, ep.dirty_async)
        else:
            fail_sync, fail_async, ok_sync, ok_async = np.bincount(
                self.put_ok.view(np.uint8) * 2 + ep.dirty_async.view(np.uint8), minlength=4
            ).tolist()
        s_put = ok_sync * costs.put(ps) + fail_sync * costs.failed_put()
        if bl is not None:  # compression before the pool decides; dedup hashes the page
            f = g.tm_factor
            s_put = ok_sync * costs.put(ps) * f + fail_sync * costs.failed_put() * f
            if bl.dedup:
                s_put += (ok_sync + fail_sync) * costs.copy(ps)
        s["reclaim_put"] += s_put
        # kswapd's puts cost the same CPU, off the faulting path: the vCPU does no work then
        f = g.tm_factor if bl is not None else 1.0
        s_bg = ok_async * costs.put(ps) * f + fail_async * costs.failed_put() * f
        if bl is not None and bl.dedup:
            s_bg += (ok_async + fail_async) * costs.copy(ps)
        s["background_cpu"] += s_bg
        c["hypercalls"] += ep.n_put + len(ep.f_fs) + len(ep.fs_flush)
        # refused async puts beyond what the disk absorbs in the background are waited for
        ep.sync_disk = fail_sync + max(0, fail_async - ep.async_budget)
        ep.sync_cached = 0

    def release(self, g: GuestModel, req: Request, whole: bool) -> None:
        req.tmem = TmemOps(_E, _E, None, 0, 0, g.exclusive_gets, flush_area=True)

    def released(self, g: GuestModel, reply: Reply, out: list[tuple[str, str]]) -> None:
        if reply.area_flushed != g.tmem_pages:
            out.append(
                (
                    "frontswap",
                    f"{g.name}: flush area removed {reply.area_flushed} pages, "
                    f"the pool held {g.tmem_pages}",
                )
            )
        g.tmem_pages = 0
        if g.billing is not None:
            g.billing.reset()

    def lost(self, g: GuestModel) -> dict[str, int]:
        return {"tmem": int(g.census[FRONTSWAP])}

    def store_lost(self, g: GuestModel) -> None:
        copies = np.flatnonzero(g.slot == FRONTSWAP)  # clean copies of resident pages
        if len(copies):
            g._set_slot(copies, NO_SLOT)
            g.dirty[copies] = True
            g.slots_used -= len(copies)
        g.tmem_pages = 0
        if g.billing is not None:
            g.billing.reset()

    def drain(self, g: GuestModel) -> Generator[Request, Reply, tuple[int, EpochStats] | None]:
        """Move every page this guest holds in tmem to its swap disk, then flush the pool.

        A cooperative guest does this when asked (a partial swapoff to disk); an uncooperative
        one ignores the request. The records written are the ones read back from tmem, so a
        corrupt copy stays visible to the checkers. The writes are background I/O: they load
        the shared device but stall no one.
        """
        stats = EpochStats(alive=g.alive)
        if not g.cooperative:
            return 0, stats
        held = np.flatnonzero(g.slot == FRONTSWAP)
        if len(held) == 0:
            return 0, stats
        reply = yield Request(
            g.name, g.host, g.disk, tmem=TmemOps(held.astype(np.uint32), _E, None, 0, 0, False)
        )
        g._check_read(held, reply.tmem.found, reply.tmem.got, "frontswap", stats.violations)
        got = reply.tmem.got
        req = Request(g.name, g.host, g.disk, swap=SwapOps(_E, _E, got))
        req.tmem = TmemOps(_E, _E, None, 0, 0, False, flush_area=True)
        yield req
        moved = _to_disk(g, held, got)
        g.tmem_pages = 0
        if g.billing is not None:
            g.billing.reset()
        g.counters["frontswap_flushes"] += len(held)
        return len(moved), _write_stats(g, stats, moved)

    def shrink(
        self, g: GuestModel, device: DeviceQueue, dt: float
    ) -> Generator[Request, Reply, EpochStats | None]:
        """Cooperative reclaim, one epoch of it: move pool pages to the swap disk at the pace
        the disk writes (the guest's share of the shared device), as a guest does when its
        host asks it to shrink its tmem. Exclusive gets, then swap writes of the records read
        back, so a corrupt copy stays visible to the checkers."""
        held = np.flatnonzero(g.slot == FRONTSWAP)
        k = min(g.shrink_left, len(held), g._async_budget(device, dt, fair=True))
        if k <= 0:
            return None
        pick = held[:k]
        stats = EpochStats(alive=True)
        reply = yield Request(
            g.name, g.host, g.disk, tmem=TmemOps(pick.astype(np.uint32), _E, None, 0, 0, True)
        )
        r = reply.tmem
        g._check_read(pick, r.found, r.got, "frontswap", stats.violations)
        got = r.got
        if len(got):
            yield Request(g.name, g.host, g.disk, swap=SwapOps(_E, _E, got))
        moved = _to_disk(g, pick, got)
        g.tmem_pages = int(r.guest_pages)
        if g.billing is not None:
            g.billing.remove(pick)
        g.shrink_left -= len(pick)
        g.counters["tmem_shrink_pages"] += len(moved)
        return _write_stats(g, stats, moved)

    def leave(
        self, g: GuestModel, src: str, flush: bool, out: dict[str, Any]
    ) -> Generator[Request, Reply, None]:
        """Pool pages are read out (exclusive gets, checked), or with `flush` written to the
        swap disk; the records read travel in `out["records"]` to `arrive`."""
        held = np.flatnonzero(g.slot == FRONTSWAP)
        if len(held) == 0:
            return
        reply = yield Request(
            g.name, src, g.disk, tmem=TmemOps(held.astype(np.uint32), _E, None, 0, 0, True)
        )
        r = reply.tmem
        g._check_read(held, r.found, r.got, "frontswap", out["violations"])
        got = r.got
        if not flush:
            out["records"] = got
            return
        if len(got):  # flush-to-swap: the pool's pages go to the guest's swap disk
            yield Request(g.name, src, g.disk, swap=SwapOps(_E, _E, got))
        moved = got.pages.astype(np.int64)
        g._set_loc(moved[g.loc[moved] == FRONTSWAP], SWAP)
        g._set_slot(moved, SWAP)
        g.counters["disk_writes"] += len(moved)
        g.counters["disk_write_ops"] += -(-len(moved) // g.swap_cluster)
        out["tmem_pages_flushed"] = len(moved)
        g.tmem_pages = 0
        if g.billing is not None:
            g.billing.reset()

    def arrive(
        self, g: GuestModel, dest: str, records: Any, out: dict[str, Any]
    ) -> Generator[Request, Reply, None]:
        """Pool pages go into `dest`'s pool; those it refuses go to the swap disk."""
        if records is None or len(records) == 0:
            if records is not None:
                g.tmem_pages = 0
            return
        n = len(records)
        reply = yield Request(
            g.name, dest, g.disk, tmem=TmemOps(_E, _E, records, n, 1 << 62, False)
        )
        ok = np.asarray(reply.tmem.put_ok, bool)
        if not ok.all():  # the destination refused some: they go to the swap disk
            refused = records.take(np.flatnonzero(~ok))
            yield Request(g.name, dest, g.disk, swap=SwapOps(_E, _E, refused))
            rp = refused.pages.astype(np.int64)
            g._set_loc(rp[g.loc[rp] == FRONTSWAP], SWAP)
            g._set_slot(rp, SWAP)
            if g.billing is not None:
                g.billing.remove(rp)
        out["tmem_pages_moved"] = int(np.count_nonzero(ok))
        g.tmem_pages = int(reply.tmem.guest_pages)

    def audit(self, g: GuestModel, full: bool) -> list[str]:
        if not full:  # every epoch: plain integers, a message only when one is off
            tmem = g.tmem_pages
            fs_view = g.slot_census.item(FRONTSWAP)
            if fs_view == tmem and not tmem:
                return []
            out = []
            if fs_view != tmem:
                out.append(
                    f"{g.name}: guest holds {fs_view} frontswap pages, host pool reports {tmem}"
                )
            if tmem:
                billed = 0
                for h in g.mechs:  # `g.tmem_billed`, without its generator
                    billed += h.billed(g)
                if g.alloc_pages + billed > g.maxmem_pages:
                    out.append(
                        f"{g.name}: RAM {g.alloc_pages} + tmem {billed} pages above "
                        f"maxmem {g.maxmem_pages}"
                    )
            return out
        out = []
        if g.billing is not None:
            held = np.flatnonzero(g.slot == FRONTSWAP)
            again = g.billing.recount(held)
            if again != g.billing.bill or np.count_nonzero(g.billing.cost) > len(held):
                out.append(
                    f"{g.name}: the pool bills {g.billing.bill} bytes, its pages cost {again}"
                )
        return out


def _unuse_pick(g: GuestModel, uniq: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    """Selfshrink: the next frontswap slots to release, in slot order. Returns (pages to
    bring back into RAM, resident pages whose clean tmem copy is just flushed)."""
    cand = np.flatnonzero(g.slot == FRONTSWAP)
    cand = cand[~np.isin(cand, uniq)][: g.unuse_left]
    resident = cand[g.loc[cand] == RAM]
    away = cand[g.loc[cand] == FRONTSWAP]
    room = max(0, g.free_top - g.wm_high - need)
    away = away[:room]
    # pages that found no free frame stay in frontswap; the next epochs try again
    g.unuse_left -= len(resident) + len(away)
    return away, resident


def _put_keys(
    g: GuestModel, pages: np.ndarray, versions: np.ndarray, batch: RecordBatch
) -> np.ndarray:
    """Content keys of pages put to a deduplicating pool at these versions (0: content no
    other page can have): a hash of the bytes in `full` mode, the content rule in `digest`
    mode (the zero page; a never-written page of the shared image)."""
    keys = np.zeros(len(pages), np.uint64)
    if g.billing is None or not g.billing.dedup:
        return keys
    if g.payload == "full":
        return batch.checksums.astype(np.uint64)
    if g.workload.compressibility >= 1.0:
        keys[:] = ZERO_PAGE_KEY
        return keys
    common = (versions == 0) & is_common(pages, g.workload.duplicates)
    keys[common] = (pages[common].astype(np.uint64) << np.uint64(1)) | np.uint64(1)
    return keys


def _to_disk(g: GuestModel, held: np.ndarray, got: RecordBatch) -> np.ndarray:
    """Pool pages `held` whose records `got` were written to the swap disk now live there;
    those missing from the pool (counted lost by the read check) hold nothing."""
    moved = got.pages.astype(np.int64)
    lost = np.setdiff1d(held, moved)
    for pages in (moved, lost):
        g._set_loc(pages[g.loc[pages] == FRONTSWAP], SWAP)
    g._set_slot(moved, SWAP)
    g._set_slot(lost, NO_SLOT)
    g._set_loc(lost[g.loc[lost] == SWAP], UNTOUCHED)
    g.slots_used -= len(lost)
    return moved


def _write_stats(g: GuestModel, stats: EpochStats, moved: np.ndarray) -> EpochStats:
    """Count the background swap writes of `moved` pages (counters and `stats`)."""
    ops = -(-len(moved) // g.swap_cluster)
    g.counters["disk_writes"] += len(moved)
    g.counters["disk_write_ops"] += ops
    stats.disk_writes = len(moved)
    stats.dev_ops = ops
    stats.dev_bytes = len(moved) * g.page_size
    return stats
