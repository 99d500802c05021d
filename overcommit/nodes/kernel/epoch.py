"""One epoch of a guest, as stages over an `EpochContext` (`run` drives them).

`run` is a generator: it yields at most two batched store `Request`s and receives their
`Reply`s, so the model never touches Redis itself. The stages, with the hooks each calls:

1. `_touches`: the workload's touches (pending ones first, newly mlocked pages, cut to what
   RAM can hold), live migration's share; a quiet epoch ends here (`_quiet`).
2. `_faults`: touched pages by location, swap readahead; `begin` hooks; the slots this epoch
   frees.
3. `_reclaim`: free frames and watermarks (`kswapd_goal`, `reclaim_plan` hooks), the victims
   and their records; `take_dirty` hooks; OOM when neither RAM nor swap has room; where dirty
   victims go.
4. phase 1: `request`/`reply` hooks around the core's swap-disk and file-disk ops.
5. `_apply`: `replied` hooks; slots freed, victims out (`evict` hooks), pages in, touches.
6. `settle` hooks (frames move; a host OOM ends the epoch); phase 2: refused puts and
   write-backs to the disk, cleancache misses from the file disk, the hooks' ops.
7. `_count` and `_time`: counters, stall by source (`stall` hooks), latency histogram.

Fault latencies are modelled per fault, not measured: a read from the guest's disk (a swap-in
cluster or a page-cache readahead cluster) takes the fixed fault cost, the window's queueing
on the device (`DeviceQueue.wait`) and the service time of the pages actually read for it,
plus the service time of the reads the epoch issued before it on that device (its queue
position, `queued_latencies`). The stall charged stays each read's own cost (the reads
ahead of a fault are charged once, to themselves), so the latencies of an epoch's faults
overlap and sum to more than its stall.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np

from overcommit.nodes.kernel import jit, readahead
from overcommit.nodes.kernel.hooks import EpochContext
from overcommit.nodes.kernel.types import (
    _E,
    _EI,
    FILE,
    FRONTSWAP,
    NO_SLOT,
    RAM,
    STALL_SOURCES,
    SWAP,
    SWAP_CLUSTER,
    UNTOUCHED,
    ZPOOL,
    EpochStats,
    Reply,
    Request,
    SwapOps,
    _concat_batches,
    _counts,
    _member,
    _unique,
)
from overcommit.profiles import DeviceQueue

if TYPE_CHECKING:
    from overcommit.nodes.kernel.model import GuestModel

#: the sources an epoch's stall sums, in this order (migration's is added elsewhere)
EPOCH_SOURCES = STALL_SOURCES[:-1]


def run(
    g: GuestModel, epoch: int, t: float, dt: float, device: DeviceQueue
) -> Generator[Request, Reply, EpochStats]:
    """Run one epoch of `g`; yields store requests, receives replies, returns its stats."""
    if not g.alive:
        g.downtime_seconds += dt
        if t + dt >= g.down_until - 1e-9:
            g.alive = True
        return EpochStats(alive=False)
    ep = _touches(g, epoch, t, dt, device)
    if not isinstance(ep, EpochContext):  # a quiet epoch: its stats
        return ep
    _faults(g, ep)
    if not _reclaim(g, ep):  # neither RAM nor swap has room
        return (yield from g._oom_kill(t, dt, ep.work, len(ep.pages)))
    req = _request1(g, ep)
    reply = (yield req) if not req.empty() else Reply()
    _reply1(g, ep, req, reply)
    _apply(g, ep)
    _migrate(g, ep)
    for h in g.mechs:
        h.settle(g, ep)
        if ep.host_oom:  # the host could not place the guest's frames
            return (yield from g._oom_kill(t, dt, ep.work, len(ep.pages), host=True))
    req2 = Request(g.name, g.host, g.disk)
    p2_writes = _concat_batches(ep.p2_through, ep.p2_wb)
    if p2_writes is not None:
        req2.swap = SwapOps(_E, _E, p2_writes, wait=False)  # its reply is not read
    if len(ep.f_rd2):  # cleancache misses: what the ephemeral pool no longer held
        req2.files = SwapOps(ep.f_rd2.astype(np.uint32), _E, None)
    for h in g.mechs:
        h.request(g, ep, req2, 2)
    if not req2.empty():
        reply2 = yield req2
        for h in g.mechs:
            h.reply(g, ep, req2, reply2, 2)
        if req2.files is not None:
            rf = reply2.files
            where = "the file disk"
            g._check_read(ep.f_rd2, rf.found, rf.got, where, ep.violations, ep.f_rd2_ver)
    _count(g, ep)
    return _time(g, ep)


def _touches(
    g: GuestModel, epoch: int, t: float, dt: float, device: DeviceQueue
) -> EpochContext | EpochStats:
    """The epoch's touches; the rest of a quiet epoch (its stats), else the epoch's context
    for the general path (a quiet epoch builds one only for a live migration's share)."""
    debt = g.debt
    consumed = dt if dt < debt else debt  # min(debt, dt)
    g.debt = debt - consumed
    work = dt - consumed
    mig = g.migration
    if mig is not None and mig.throttle and mig.active:  # auto-converge throttles the CPU
        throttled = work * mig.throttle
        work -= throttled
        g.stall_seconds += throttled
        g.stall_by_source["migration"] += throttled
    wl_t = g.wl_epochs * dt
    pages, writes = g.workload.touches(g.rng, wl_t, work)
    g.wl_epochs += 1
    if g.pending is not None:
        pages = np.concatenate([g.pending[0], pages])
        writes = np.concatenate([g.pending[1], writes])
        g.pending = None
    pin_to = g._pin_target(wl_t)
    if pin_to > g.pinned_n:  # mlock faults the newly pinned pages in
        newpin = np.arange(g.pinned_n, pin_to)
        pages = np.concatenate([newpin, pages])
        writes = np.concatenate([np.zeros(len(newpin), bool), writes])
    elif pin_to < g.pinned_n:  # munlock: the pages become ordinary
        g.pinned_n = pin_to
    pages, writes = g._fit(pages, writes)
    migrating = mig is not None and mig.active
    ep = None
    if migrating:  # what the touches dirty, by where pages were
        from overcommit.migration.transfer import dirtying

        ep = _context(g, epoch, t, dt, device, consumed)
        ep.mig_marks = dirtying(pages, writes, g.loc)
    n_touches = len(pages)
    g.counters["touches"] += n_touches
    may_quiet = g.unuse_left <= 0 and g._plain()
    if jit.ENABLED:  # one pass: distinct pages, their locations, the writes; a quiet epoch
        stamp = epoch + 1
        fused = may_quiet and stamp > g.window_start
        fs = g.frames
        state = fs.state
        out = g.touch_out
        if len(out[0]) < n_touches:  # (the buffers grow with the most touches an epoch)
            out = g.touch_out = jit.touch_buffers(max(n_touches, 2 * len(out[0])))
        applied, nu, m, top, n_zero, new, fresh, hits = jit.touch_pass(
            pages,
            writes,
            g.nbits,
            g.loc,
            g.slot,
            fused,
            g.free_top,
            g.wm_low,
            g.wm_high,
            g.wm_min,
            g.dirty,
            g.version,
            g.free_stack,
            g.frame,
            g.fpage,
            state,
            fs.backed_count + fs.hswapped_count == len(state),
            g.last,
            g.ref,
            g.ra,
            stamp,
            g.window_start,
            g.ra_n != 0,
            *out,
        )
        if applied:  # the context is read no further unless a migration's share runs
            stats = g._quiet_applied(epoch, dt, work, n_touches, n_zero, new, fresh, hits, pin_to)
            if ep is None:
                return stats
        elif ep is None:
            ep = _context(g, epoch, t, dt, device, consumed)
        # views of the buffers: read in this epoch only (the next one's pass overwrites them)
        uniq, loc_u, wp, wc = out[0][:nu], out[1][:nu], out[2][:m], out[3][:m]
        ep.wp, ep.wc, ep.wset = wp, wc, wp
        # not quiet (the kernel said so): the general path; before its window (never in a
        # run): the numpy path decides
        done = applied or fused or not may_quiet or top > RAM
    else:
        if ep is None:
            ep = _context(g, epoch, t, dt, device, consumed)
        uniq = _unique(pages)
        loc_u = g.loc[uniq]
        ep.wp = None
        applied = done = False
    ep.work, ep.pages, ep.writes, ep.pin_to, ep.uniq, ep.loc_u = (
        work,
        pages,
        writes,
        pin_to,
        uniq,
        loc_u,
    )
    if applied:
        _migrate(g, ep)
        return stats
    if done:
        return ep
    if may_quiet and (len(uniq) == 0 or int(loc_u.max()) <= RAM):
        stats = g._quiet_epoch(epoch, dt, work, pages, writes, uniq, loc_u, pin_to)
        if stats is not None:
            _migrate(g, ep)
            return stats
    return ep


def _context(
    g: GuestModel, epoch: int, t: float, dt: float, device: DeviceQueue, consumed: float
) -> EpochContext:
    """The epoch's context; its work starts once the stall it owed is served."""
    ep = EpochContext(epoch, t, dt, device, g.directives)
    ep.busy_from = t + consumed
    return ep


def _migrate(g: GuestModel, ep: EpochContext) -> None:
    """Live migration's share of the epoch, once its frames have changed (`transfer.epoch`)."""
    if g.migration is not None and g.migration.active:
        from overcommit.migration.transfer import epoch

        epoch(g, ep)


def _faults(g: GuestModel, ep: EpochContext) -> None:
    """Touched pages by location, swap readahead, `begin` hooks, the slots freed."""
    uniq, loc_u = ep.uniq, ep.loc_u
    if jit.ENABLED:
        f_zero, f_fs, f_z, f_sw, f_fnew, f_file = jit.split_faults(
            uniq, loc_u, g.file_lo if g.has_files else g.N
        )
        if not g.has_files:
            f_fnew = f_file = _EI
        ep.f_zero, ep.f_fs, ep.f_z, ep.f_sw = f_zero, f_fs, f_z, f_sw
    else:
        untouched = loc_u == UNTOUCHED
        f_fnew = f_file = _EI
        if g.has_files:  # page cache: first reads and misses come from the guest's disk
            isf_u = uniq >= g.file_lo
            f_fnew = uniq[untouched & isf_u]
            f_file = uniq[loc_u == FILE]
            untouched &= ~isf_u
        ep.f_zero = uniq[untouched]
        ep.f_fs = f_fs = uniq[loc_u == FRONTSWAP]
        ep.f_z = f_z = uniq[loc_u == ZPOOL]
        ep.f_sw = f_sw = uniq[loc_u == SWAP]
    ep.f_fnew, ep.f_file = f_fnew, f_file
    # swap-in reads an aligned cluster around each disk fault, of the adapted window
    ep.ra_win = ra = readahead.window(g, f_sw)
    if len(f_sw) and jit.ENABLED:
        clusters, reads = jit.swap_reads(f_sw, ra, g.N, g.loc)
    elif len(f_sw):
        clusters = _unique(f_sw // ra)
        reads = (clusters[:, None] * ra + np.arange(ra)).ravel()
        reads = reads[reads < g.N]
        reads = reads[g.loc[reads] == SWAP]
    else:
        clusters = np.empty(0, np.int64)
        reads = f_sw
    ep.clusters, ep.reads = clusters, reads
    ep.need0 = len(ep.f_zero) + len(f_fs) + len(f_z) + len(reads) + len(f_fnew) + len(f_file)
    for h in g.mechs:
        h.begin(g, ep)
    ep.need = ep.need0 + len(ep.pull_in)

    # slots freed this epoch: written pages, faulted ones when swap is full, mechanisms' own
    swap_full = 2 * (g.slots_used + g.zslots_used) > g.swap_slots + g.zram_slots
    if ep.wp is None:
        wp, wc = _counts(ep.pages[ep.writes])
        ep.wp, ep.wc, ep.wset = wp, wc, wp
    wp = ep.wp
    if jit.ENABLED:
        extra = _EI
        for more in ep.free_extra:
            extra = np.union1d(extra, more)
        ep.free_slot, ep.fs_flush, ep.sw_free, ep.z_free = jit.slots_freed(
            wp, g.slot, swap_full, f_fs, f_sw, f_z, extra.astype(np.int64), ep.taken
        )
        return
    free_slot = wp[g.slot[wp] != NO_SLOT]
    if swap_full:
        free_slot = np.union1d(free_slot, np.union1d(np.union1d(f_fs, f_sw), f_z))
    for extra in ep.free_extra:
        free_slot = np.union1d(free_slot, extra)
    taken = ep.taken  # an exclusive get already removed the copy (both sorted and distinct)
    if len(taken) and len(free_slot):
        free_slot = free_slot[~_member(free_slot, taken)]
    slot_f = g.slot[free_slot]
    ep.free_slot = free_slot
    ep.fs_flush = free_slot[slot_f == FRONTSWAP]
    ep.sw_free = free_slot[slot_f == SWAP]
    ep.z_free = free_slot[slot_f == ZPOOL]


def _reclaim(g: GuestModel, ep: EpochContext) -> bool:
    """Victims, where they go and their records; False when neither RAM nor swap has room."""
    need, free_slot = ep.need, ep.free_slot
    free = g.free_top
    ep.free = free
    ep.pressure = free < g.wm_high
    # reclaim: kswapd (async) toward the high watermark, as far as the disk lets it write;
    # then direct reclaim (sync) for whatever the faults still need above the min watermark
    async_want = g.wm_high - free if free < g.wm_low else 0
    for h in g.mechs:
        async_want = h.kswapd_goal(g, ep, async_want)
    ep.want = async_want + max(0, g.wm_min + need - free)
    ep.freed_disk = int(np.count_nonzero(g.slot[free_slot] != ZPOOL)) if g.zram_slots else 0
    if not g.zram_slots:
        room = g.swap_slots - g.slots_used + len(free_slot)
    else:
        freed_z = len(free_slot) - ep.freed_disk
        room = (g.swap_slots - g.slots_used + ep.freed_disk) + (
            g.zram_slots - g.zslots_used + freed_z
        )
    # kswapd's write budget (-1: any); the device's share does not change inside an epoch
    ep.budget = ep.async_budget = g._async_budget(ep.device, ep.dt)
    for h in g.mechs:
        h.reclaim_plan(g, ep)
    want, uniq, pull_in = ep.want, ep.uniq, ep.pull_in
    if want <= 0:  # nothing to reclaim: no scan (and no exclusion set to build)
        victims, is_async, clean = _EI, np.zeros(0, bool), np.zeros(0, bool)
    else:
        exclude = np.union1d(uniq, pull_in) if len(pull_in) else uniq
        scan = g._reclaim_order(want, exclude)
        victims, is_async, clean = g._pick_victims(
            scan, want, uniq, ep.loc_u, ep.pin_to, ep.wset, free, need, async_want, room, ep.budget
        )
    fvict = f_wb = _EI
    f_wb_async = np.zeros(0, bool)
    if g.has_files:  # page-cache victims: dropped if clean, else written to their file
        isf_v = victims >= g.file_lo
        fvict = victims[isf_v]
        f_wb = victims[isf_v & ~clean]
        f_wb_async = is_async[isf_v & ~clean]
        anon = ~clean & ~isf_v
        dirty = victims[anon]
        dirty_async = is_async[anon]
    else:
        dirty = victims[~clean]
        dirty_async = is_async[~clean]
    ep.fvict, ep.f_wb, ep.f_wb_async, ep.f_out = fvict, f_wb, f_wb_async, f_wb

    # versions the dirty victims leave with (a thrash victim was written this epoch)
    wp, wc = ep.wp, ep.wc
    batch = None
    vers = g.version[dirty].copy()
    if len(dirty):
        if len(wp):
            hit = wp.searchsorted(dirty)
            was_written = (hit < len(wp)) & (wp[np.minimum(hit, len(wp) - 1)] == dirty)
            vers[was_written] += wc[hit[was_written]].astype(np.uint32)
        batch = g._batch(dirty, vers)
    ep.victims, ep.is_async, ep.clean = victims, is_async, clean
    ep.dirty, ep.dirty_async, ep.vers, ep.batch = dirty, dirty_async, vers, batch
    ep.to_pool = np.zeros(len(dirty), bool)
    for h in g.mechs:  # a compressed pool takes dirty victims; a remote store is tried first
        h.take_dirty(g, ep)
    victims, dirty, batch = ep.victims, ep.dirty, ep.batch
    if free + len(victims) - ep.pool_growth < need:
        reads, f_sw = ep.reads, ep.f_sw
        extra = np.setdiff1d(reads, f_sw, assume_unique=True)
        short = need - free - len(victims) + ep.pool_growth
        if len(extra) < short:  # neither RAM nor swap has room
            return False
        ep.reads = reads = np.setdiff1d(reads, extra[len(extra) - short :], assume_unique=True)
        need = len(ep.f_zero) + len(ep.f_fs) + len(ep.f_z) + len(reads) + len(pull_in)
        ep.need = need + len(ep.f_fnew) + len(ep.f_file)
    if int(np.count_nonzero(~ep.is_async)):
        g.counters["direct_reclaims"] += 1

    # page-cache victims: dirty ones are written back to their file
    ep.fwb_batch = None
    if len(fvict):
        ep.f_vers = f_vers = g._leave_versions(fvict, wp, wc)
        if len(f_wb):
            wbm = np.isin(fvict, f_wb)
            ep.fwb_batch = g._batch(fvict[wbm], f_vers[wbm])

    # where the dirty victims go: a remote store first, the pool, or the disk
    disk_mask = ~ep.to_pool
    ep.disk_batch = None
    ep.wb_batch = g._batch(ep.p1_wb, g.version[ep.p1_wb]) if len(ep.p1_wb) else None
    if not ep.puts_first and batch is not None and disk_mask.any():
        ep.disk_batch = batch if disk_mask.all() else batch.take(np.flatnonzero(disk_mask))
    ep.disk_mask = disk_mask
    ep.disk_pages = dirty[disk_mask] if not ep.puts_first else _EI
    ep.disk_sync = ~ep.dirty_async[disk_mask] if not ep.puts_first else np.zeros(0, bool)
    return True


def _request1(g: GuestModel, ep: EpochContext) -> Request:
    """Phase 1: the hooks' ops, then swap-disk reads/frees/writes and file-disk I/O."""
    req = Request(g.name, g.host, g.disk)
    ep.through_batch = ep.disk_batch
    ep.disk_reads_dev = ep.reads
    f_file = ep.f_file
    # a page never written since the workload began holds its file's original content
    # (version 0): nothing is stored for it to read
    ep.f_rd1 = f_file[g.version[f_file] > 0] if len(f_file) else f_file
    for h in g.mechs:
        h.request(g, ep, req, 1)
    phase1_writes = _concat_batches(ep.through_batch, ep.wb_batch)
    if len(ep.disk_reads_dev) or len(ep.sw_free) or phase1_writes is not None:
        req.swap = SwapOps(
            ep.disk_reads_dev.astype(np.uint32), ep.sw_free.astype(np.uint32), phase1_writes
        )
    if len(ep.f_rd1) or ep.fwb_batch is not None:
        req.files = SwapOps(ep.f_rd1.astype(np.uint32), _E, ep.fwb_batch)
    return req


def _reply1(g: GuestModel, ep: EpochContext, req: Request, reply: Reply) -> None:
    """Phase 1's answers: the hooks', then the file disk's and the swap disk's reads."""
    ep.reply = reply
    ep.f_miss = ep.f_file  # page-cache misses the guest's disk serves
    ep.to_disk = ep.dirty[ep.disk_mask]
    for h in g.mechs:
        h.reply(g, ep, req, reply, 1)
    violations = ep.violations
    if req.files is not None and len(ep.f_rd1):
        rf = reply.files
        g._check_read(ep.f_rd1, rf.found, rf.got, "the file disk", violations)
    if req.swap is not None:
        rs = reply.swap
        g._check_read(ep.disk_reads_dev, rs.found, rs.got, "swap", violations)
        g.counters["disk_frees"] += int(rs.freed)


def _apply(g: GuestModel, ep: EpochContext) -> None:
    """Slots freed, victims out, pages in, the touches."""
    for h in g.mechs:
        h.replied(g, ep)
    if jit.ENABLED:
        _apply_jit(g, ep)
    else:
        _apply_numpy(g, ep)
    g.pinned_n = max(g.pinned_n, ep.pin_to)


def _apply_jit(g: GuestModel, ep: EpochContext) -> None:
    """`_apply_numpy`, the page loops in two kernels (`jit.apply_out`, `jit.apply_in`)."""
    free_slot, taken, victims = ep.free_slot, ep.taken, ep.victims
    file_lo = g.file_lo if g.has_files else g.N
    nz, misses = jit.apply_out(
        free_slot,
        taken,
        victims,
        ep.clean,
        file_lo,
        g.loc,
        g.slot,
        g.census,
        g.slot_census,
        g.dirty,
        g.ra,
        g.ra_n != 0,
        g.frame,
        g.fpage,
        g.free_stack,
        g.free_top,
    )
    if g.zram_slots:
        g.zslots_used -= nz
        g.slots_used -= len(free_slot) - nz
    else:
        g.slots_used -= len(free_slot)
    g.slots_used -= len(taken)
    if misses:
        g.ra_n -= misses
        g.counters["readahead_misses"] += misses
    g.free_top += len(victims)
    for h in g.mechs:
        h.evict(g, ep)
    # swap-ins and first touches, then the touches themselves
    pull_in, incoming = _incoming(g, ep)
    extra = jit.sorted_diff(ep.reads, ep.f_sw)
    fs = g.frames
    full = fs.backed_count + fs.hswapped_count == len(fs.state)
    do_touch = ep.epoch + 1 > g.window_start
    new, fresh, hits = jit.apply_in(
        ep.to_disk,
        victims,
        incoming,
        extra,
        ep.f_zero,
        pull_in,
        ep.wp,
        ep.wc,
        ep.uniq,
        g.loc,
        g.slot,
        g.census,
        g.slot_census,
        g.dirty,
        g.version,
        g.free_stack,
        g.free_top,
        g.frame,
        g.fpage,
        fs.state,
        full,
        g.ra,
        g.ra_n,
        g.last,
        g.ref,
        ep.epoch + 1,
        g.window_start,
        do_touch,
    )
    g.free_top -= len(incoming)
    fs.backed_count += new
    g.counters["host_frames_allocated"] += new
    ep.newly_backed = new
    g.ra_n += len(extra)
    if do_touch:
        g.active_n += fresh
        g.last_hi = max(g.last_hi, ep.epoch + 1)
        if hits:
            g.ra_n -= hits
            g.ra_hits_since += hits
            g.counters["readahead_hits"] += hits
    else:  # (an epoch before its window: never in a run)
        g._touched(ep.uniq, ep.epoch)
        g.ref[victims] = False


def _apply_numpy(g: GuestModel, ep: EpochContext) -> None:
    """Slots freed, victims out (`evict` hooks), pages in, the touches."""
    # apply: slots freed by writes, a full swap, loads and mechanisms; exclusive gets
    free_slot = ep.free_slot
    nz = int(np.count_nonzero(g.slot[free_slot] == ZPOOL))
    if g.zram_slots:
        g.zslots_used -= nz
        g.slots_used -= len(free_slot) - nz
    else:
        g.slots_used -= len(free_slot)
    g._set_slot(free_slot, NO_SLOT)
    taken = ep.taken
    if len(taken):
        g._set_slot(taken, NO_SLOT)
        g.dirty[taken] = True
        g.slots_used -= len(taken)
    # apply: evictions
    victims, clean = ep.victims, ep.clean
    readahead.evicted(g, victims)
    g._map_out(victims)
    if g.has_files:  # page-cache pages leave for their file on the guest's disk
        isf_v = victims >= g.file_lo
        cl = victims[clean & ~isf_v]
        g._set_loc(victims[isf_v], FILE)
    else:
        cl = victims[clean]
    g._set_loc(cl, g.slot[cl])
    for h in g.mechs:
        h.evict(g, ep)
    g._set_loc(ep.to_disk, SWAP)
    g._set_slot(ep.to_disk, SWAP)
    g.dirty[victims] = False
    # apply: swap-ins and first touches
    pull_in, incoming = _incoming(g, ep)
    ep.newly_backed = g._map_in(incoming)
    g._set_loc(incoming, RAM)
    readahead.brought_in(g, np.setdiff1d(ep.reads, ep.f_sw, assume_unique=True))
    g.dirty[ep.f_zero] = True
    g.dirty[pull_in] = True
    g._set_slot(pull_in, NO_SLOT)
    # apply: the touches themselves (a thrash victim was touched before it left)
    g.version[ep.wp] += ep.wc.astype(np.uint32)
    g.dirty[ep.wp] = True
    g.dirty[victims] = False
    g._touched(ep.uniq, ep.epoch)
    g.ref[victims] = False


def _count(g: GuestModel, ep: EpochContext) -> None:
    """The epoch's counters (the core's; mechanisms count in their hooks)."""
    c = g.counters
    ra = g.readahead
    f_zero, f_fs, f_z, f_sw, clusters = ep.f_zero, ep.f_fs, ep.f_z, ep.f_sw, ep.clusters
    c["evictions"] += len(ep.victims)
    c["first_touches"] += len(f_zero)
    c["faults"] += len(f_zero) + len(f_fs) + len(f_z) + len(f_sw)
    c["major_faults"] += len(clusters)
    c["readahead_pages"] += len(ep.reads) - len(f_sw)
    disk_reads_dev = ep.disk_reads_dev
    ep.dev_clusters = len(clusters)
    if disk_reads_dev is not ep.reads:  # a cluster all of whose pages were cached: no I/O
        missed = np.unique(disk_reads_dev // ep.ra_win) if len(disk_reads_dev) else _EI
        ep.dev_clusters = len(missed)
    c["disk_reads"] += len(disk_reads_dev)
    c["disk_read_ops"] += ep.dev_clusters
    n_through = len(ep.through_batch) if ep.through_batch is not None else 0
    if ep.puts_first:
        n_through = len(ep.to_disk)
    n_wb = (len(ep.p2_wb) if ep.p2_wb is not None else 0) + len(ep.p1_wb)
    ep.disk_pages_written = n_through + n_wb
    sc = g.swap_cluster
    ep.write_ops = -(-n_through // sc) + -(-n_wb // sc)
    c["disk_writes"] += ep.disk_pages_written
    c["disk_write_ops"] += ep.write_ops
    # the page cache's disk I/O: first reads and misses (pages of one readahead cluster
    # read in one epoch share an operation), write-backs in batches
    f_rd = np.concatenate([ep.f_fnew, ep.f_miss]) if len(ep.f_fnew) else ep.f_miss
    ep.n_fread = n_fread = len(f_rd)
    ep.n_fops = n_fops = len(_unique(f_rd // ra)) if n_fread else 0
    ep.n_fwb = n_fwb = len(ep.f_wb)
    ep.fw_ops = -(-n_fwb // sc)
    if g.has_files:
        c["file_reads"] += n_fread
        c["file_read_ops"] += n_fops
        c["file_writes"] += n_fwb
        c["file_write_ops"] += ep.fw_ops
        c["file_drops"] += len(ep.fvict) - n_fwb
        c["faults"] += len(ep.f_fnew) + len(ep.f_file)
        c["major_faults"] += n_fops


def queued_latencies(
    device: DeviceQueue, read_bytes: np.ndarray, fixed: float, ahead: float = 0.0
) -> tuple[np.ndarray, float]:
    """The latency of each of an epoch's reads on `device`, in issue order, and the service
    time they add to the epoch's queue: the i-th read waits for the `ahead` seconds already
    queued and the service of the reads before it, then its own (`fixed` plus the window's
    queueing, `device.wait`, plus its service time for its own size)."""
    if not len(read_bytes):
        return np.zeros(0), ahead
    svc = device.profile.op_time(False, read_bytes)
    wait = device.waits(read_bytes)
    done = ahead + np.cumsum(svc)
    return fixed + wait + done, float(done[-1])


def _cluster_bytes(pages: np.ndarray, ra: int, ps: int) -> np.ndarray:
    """Bytes actually read for each readahead cluster `pages` fall in, in cluster order."""
    if not len(pages):
        return np.zeros(0)
    if jit.ENABLED:
        n = jit.cluster_counts(pages, ra)
    else:
        _, n = np.unique(pages // ra, return_counts=True)
    return n.astype(np.float64) * ps


def _read_latencies(
    device: DeviceQueue, pages: np.ndarray, ra: int, ps: int, fixed: float, ahead: float = 0.0
) -> tuple[np.ndarray, float]:
    """`queued_latencies` of the reads of the readahead clusters `pages` (distinct) fall in,
    each its pages' bytes (`jit.read_latencies` in one pass, the same arithmetic)."""
    if not jit.ENABLED:
        return queued_latencies(device, _cluster_bytes(pages, ra, ps), fixed, ahead)
    p = device.profile
    half_backlog, rho = device.queue_terms()
    return jit.read_latencies(
        pages, ra, ps, p.read_latency, p.bandwidth, 1.0 / p.iops, half_backlog, rho, fixed, ahead
    )


def _time(g: GuestModel, ep: EpochContext) -> EpochStats:
    """Synchronous costs on the critical path, by source; the latency histogram; stats."""
    costs, ps, device, dt = g.costs, g.page_size, ep.device, ep.dt
    dev = device.profile
    f_zero, f_sw, clusters = ep.f_zero, ep.f_sw, ep.clusters
    dev_clusters = ep.dev_clusters
    s = dict.fromkeys(EPOCH_SOURCES, 0.0)
    s["first_touch"] = len(f_zero) * costs.minor_fault
    s["host_alloc"] = ep.newly_backed * costs.host_page_alloc
    lat_sw = lat_hit = s_sw = 0.0
    if len(clusters):
        read_bytes = len(ep.reads) * ps / len(clusters)  # the average cluster actually read
        lat_sw = costs.major_fault + dev.op_time(False, read_bytes) + device.wait(read_bytes)
        lat_hit = costs.major_fault + costs.io_exit + costs.copy(read_bytes)
        s_sw = dev_clusters * lat_sw + (len(clusters) - dev_clusters) * lat_hit
        s_sw += (len(f_sw) - len(clusters)) * costs.minor_fault
        g.counters["io_exits"] += len(clusters) - dev_clusters  # read clusters a cache served
    s["swap_read"] = s_sw
    # direct reclaim: the synchronous disk writes (mechanisms set what reclaim waited for)
    ep.sync_disk = int(np.count_nonzero(ep.disk_sync))
    ep.sync_cached = 0
    for h in g.mechs:
        h.stall(g, ep, s)
    s_write = 0.0
    sync_disk, sync_cached = ep.sync_disk, ep.sync_cached
    if sync_disk:
        ops = -(-sync_disk // g.swap_cluster)
        wbytes = sync_disk * ps / ops
        s_write = ops * (dev.op_time(True, wbytes) + device.wait(wbytes))
    if sync_cached:
        ops = -(-sync_cached // g.swap_cluster)
        s_write += ops * costs.io_exit + costs.copy(sync_cached * ps)
        g.counters["io_exits"] += ops
    # the page cache: reads from the guest's disk, write-backs in direct reclaim
    n_fread, n_fops, n_fwb = ep.n_fread, ep.n_fops, ep.n_fwb
    lat_f = 0.0
    if n_fread:
        fbytes = n_fread * ps / n_fops
        lat_f = costs.major_fault + dev.op_time(False, fbytes) + device.wait(fbytes)
        s["file_read"] = n_fops * lat_f + (n_fread - n_fops) * costs.minor_fault
    if g.has_files:
        sync_fw = int(np.count_nonzero(~ep.f_wb_async))
        sync_fw += max(0, n_fwb - sync_fw - ep.async_budget)
        if sync_fw:
            ops = -(-sync_fw // g.swap_cluster)
            wbytes = sync_fw * ps / ops
            s_write += ops * (dev.op_time(True, wbytes) + device.wait(wbytes))
    s["reclaim_write"] = s_write
    sources = tuple(s.values())
    stall = sum(sources)
    sbs = g.stall_by_source
    for src, v in zip(EPOCH_SOURCES, sources):
        if v:  # (adding 0.0 to a sum of non-negative costs leaves it as it is)
            sbs[src] += v
    # fault latency histogram: device reads one value each (queue position, own size)
    g._hist_add(costs.minor_fault, len(f_zero))
    ahead = 0.0
    if dev_clusters:
        lat, ahead = _read_latencies(device, ep.disk_reads_dev, g.readahead, ps, costs.major_fault)
        g._hist_add_each(lat)
    g._hist_add(lat_hit, len(clusters) - dev_clusters)
    g._hist_add(costs.minor_fault, len(f_sw) - len(clusters))
    if g.has_files:
        if n_fops:
            f_rd = np.concatenate([ep.f_fnew, ep.f_miss]) if len(ep.f_fnew) else ep.f_miss
            lat = _read_latencies(device, _unique(f_rd), g.readahead, ps, costs.major_fault, ahead)
            g._hist_add_each(lat[0])
        g._hist_add(costs.minor_fault, n_fread - n_fops)
    g._account(dt, ep.work, stall)
    ep.violations += [("conservation", m) for m in g.conservation()]
    n_file = len(ep.f_fnew) + len(ep.f_file)
    return EpochStats(
        alive=True,
        work=ep.work,
        stall=stall,
        touches=len(ep.pages),
        faults=len(f_zero) + len(ep.f_fs) + len(ep.f_z) + len(f_sw) + n_file,
        disk_reads=len(ep.disk_reads_dev),
        disk_writes=ep.disk_pages_written,
        puts=ep.n_put - ep.n_fail,
        put_failures=ep.n_fail,
        gets=len(ep.f_fs),
        dev_ops=dev_clusters + ep.write_ops + n_fops + ep.fw_ops,
        dev_bytes=(len(ep.disk_reads_dev) + ep.disk_pages_written + n_fread + n_fwb) * ps,
        hswap_ops=ep.hs_in + -(-ep.hs_out // SWAP_CLUSTER),
        hswap_bytes=(ep.hs_in + ep.hs_out) * ps,
        host_swap_ins=ep.hs_in,
        double_swaps=ep.n_double,
        file_reads=n_fread,
        cleancache_hits=len(ep.f_file) - len(ep.f_miss),
        violations=ep.violations,
    )


def _incoming(g: GuestModel, ep: EpochContext) -> tuple[np.ndarray, np.ndarray]:
    """After the `evict` hooks: the slots the evicted pages took, and the pages coming into
    RAM this epoch (swap-ins and first touches; `ep.incoming`, with their frames in
    `ep.in_frames` when a mechanism tracks frames). Returns (pages pulled in, incoming)."""
    n_dirty, n_stored = len(ep.dirty), len(ep.stored)
    if g.zram_slots:
        g.zslots_used += n_stored
        g.slots_used += n_dirty - n_stored
    else:
        g.slots_used += n_dirty
    pull_in = ep.pull_in
    incoming = np.concatenate([ep.f_zero, ep.f_fs, ep.f_z, ep.reads, pull_in, ep.f_fnew, ep.f_file])
    ep.incoming = incoming
    ep.in_frames = _EI  # the frames they get (for the host's view of them)
    if g.tracks_frames:
        ep.in_frames = g._incoming_frames(_EI, len(incoming))
    return pull_in, incoming
