"""`host-swap` (KVM style): the host pages guest frames out to its own swap, the guest unaware.

The sum of the guests' memory may exceed the host's RAM (with `boot: lazy`, admission counts the
host's RAM plus its swap, "keep your commitment below RAM + swap"); a guest under this mechanism
sees `maxmem` of RAM. Host side (`HostSwap.plan_window`): every sync window the host aims each
guest at a number of resident frames: all the frames it may use while they fit in the RAM guests
can have, otherwise a fair share by demand (the working set the host estimates from the guest's
recent touches, quick to grow and slow to forget). A guest may grow toward its working set only
into RAM that is free at the window's start; what growing guests lack (and the host's own 1%
headroom) is taken from guests above their share, paged out at the pace the host swap device
writes (`hswap_step` pages per epoch, in 32-page clusters); a guest being paged out never grows
meanwhile. While RAM suffices, nothing is paged out. A host that reclaims (`host_reclaim`)
takes back everything it lent: each guest's budget falls to its boot `memory` (what it reserved;
host swap takes frames whatever the guest does with them), paged out at the device's pace. The
host also splits its swap area among the guests (`hswap_quota`) and rescans the frames'
accessed bits (`hswap_scan`).

Guest side (in `GuestModel`, with `nodes.host.GuestFrames`): at the end of every epoch, frames
above the budget are paged out to the host swap (records in the host's Redis,
`stores.hostswap`, written at the host swap device's pace, asynchronously), chosen with the
information a host has (`hosts.swap.policy`): `random` frames, or `lru`, the coldest by the
accessed bits of the last scan, which lag by a window. A guest that touches a host-swapped frame
stalls for a host swap device read without knowing why (`host_swap_read` stall). *Double
swapping*: when the guest itself swaps out a page whose frame the host has already swapped, the
host must read the frame back first (`double_swaps`, each also a `host_swap_ins` and charged a
host read), so `host_swap_ins >= double_swaps` always. A guest whose frames need more host swap
than its share has is killed by the host's OOM killer (`host_oom_kills`) and restarts.

The 2010 thread: Dan Magenheimer's "host swapping is evil": the host pages out frames without
knowing what they hold, so a guest writing out a page the host has swapped reads it back first
(double swapping, `double_swaps`), and the guest stalls on faults it cannot see. Run
`host-swap` (alone or under `balloon`) against `frontswap` to count them.

Guest hooks (`HostSwapGuest`): the guest sees maxmem of frames; after the epoch's page moves
(`settle`) the frames it used are swapped back in (the vCPU waits: `host_swap_read`) and frames
above the host's budget are paged out in phase 2; a host swap that cannot take them is a host
OOM kill.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.host import F_HSWAP, NO_PAGE, fill_by_demand, split_by_demand
from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import _EI, RAM, HostSwapOps, Reply, Request
from overcommit.nodes.mechanism import Mechanism
from overcommit.rng import stream

if TYPE_CHECKING:
    from overcommit.nodes.host import Directives, HostModel
    from overcommit.nodes.kernel.model import GuestModel

WS_DECAY = 0.9  # per window: how slowly the host's working-set estimate forgets
SWAP_OUT_CLUSTER = 32  # pages per host swap-out write (SWAP_CLUSTER_MAX)
HEADROOM = 0.01  # share of the guests' RAM the host keeps free (its own watermark)


class HostSwap(Mechanism):
    """Host policy: resident-frame budgets by demand, host swap split by need."""

    name = "host-swap"
    guest_features = frozenset({"host_swap"})
    guest_hooks = ("HostSwapGuest",)
    plan_order = 20

    def plan_window(self, host: HostModel) -> None:
        guests = host.guests
        if not guests:
            return
        # failover: RAM a restart needs is taken out of what the guests may have
        room = max(0, host.guest_room() - host.reclaim_need - host.promised)
        usable = [g.alloc_pages for g in guests]  # a guest that is down comes back
        backed = [g.backed - g.merged for g in guests]  # frames with a host frame of their own
        est = []
        for g in guests:
            memo = host.memo.setdefault(g.name, {})
            e = max(float(g.active_pages), WS_DECAY * memo.get("hws", 0.0))
            memo["hws"] = e
            est.append(e)
        if host.reclaiming:  # take back all it lent: frames above each guest's boot memory
            budgets = [min(b, g.memory_pages) for g, b in zip(guests, backed)]
        else:
            budgets = _budgets(room, usable, backed, est)
        shrinking = sum(1 for b0, b in zip(backed, budgets) if b0 > b)
        step = 0
        dev = host.hswap_device
        if dev is not None:
            prof = dev.profile
            rate = min(prof.iops * SWAP_OUT_CLUSTER, prof.bandwidth / host.page_size)
            step = max(1, int(rate * host.epoch_seconds / max(1, shrinking)))
        used = sum(g.hswapped for g in guests)
        free_swap = max(0, host.hswap_pages_cap - used)
        need = [max(0, b0 + g.hswapped - b) + 1.0 for g, b0, b in zip(guests, backed, budgets)]
        shares = split_by_demand(free_swap, need)
        device = dev.snapshot() if dev is not None else None
        if device is not None:
            device.users = max(1, len(guests))
        for g, b, sh in zip(guests, budgets, shares):
            g.plan.frame_budget = b
            g.plan.hswap_step = step
            g.plan.hswap_quota = g.hswapped + sh
            g.plan.hswap_device = device
            g.plan.hswap_scan = True
            g.plan.hswap_policy = host.hswap_policy


def _budgets(room: int, usable: list[int], backed: list[int], est: list[float]) -> list[int]:
    """Each guest's resident-frame budget for the window: all it may use while that fits in
    `room`, else a fair share by demand; growth only into free RAM, cuts from guests above
    their share (see the module docstring)."""
    if sum(usable) <= room:
        targets = usable
    else:  # RAM is short: each guest's fair share by demand
        targets = fill_by_demand(room, [e + 1.0 for e in est], usable)
    # what each guest wants to grow by: toward its working set (+25%), within its share
    want = [min(t, max(b, math.ceil(1.25 * e))) for t, b, e in zip(targets, backed, est)]
    grow = [max(0, w - b) for w, b in zip(want, backed)]
    headroom = math.ceil(HEADROOM * room)
    free_now = max(0, room - sum(backed) - headroom)
    grants = fill_by_demand(free_now, [float(x) for x in grow], grow) if sum(grow) else grow
    # RAM left over after the growers goes to anyone below its share
    left = free_now - sum(grants)
    room_up = [max(0, t - b - gr) for t, b, gr in zip(targets, backed, grants)]
    extra = fill_by_demand(left, [e + 1.0 for e in est], room_up) if left > 0 else room_up
    if left <= 0:
        extra = [0] * len(backed)
    # what the growers lack, and the host's own headroom, comes from guests above share
    short = max(0, sum(grow) - sum(grants)) + max(0, sum(backed) + headroom - room)
    excess = [max(0, b - t) for b, t in zip(backed, targets)]
    cuts = fill_by_demand(short, [float(x) for x in excess], excess) if short else excess
    if not short:
        cuts = [0] * len(backed)
    budgets = [b + gr + x - c for b, gr, x, c in zip(backed, grants, extra, cuts)]
    return budgets


_U = np.empty(0, np.uint32)


class HostSwapGuest(GuestMechanism):
    """Guest side: the guest sees maxmem of frames; the frames an epoch uses come back into
    host RAM (the vCPU waits), and frames above the host's budget are paged out."""

    features = frozenset({"host_swap"})
    order = 70  # last: it pages out frames the other mechanisms have settled
    sees_maxmem = True
    tracks_frames = True

    def init(self, g: GuestModel) -> None:
        g.host_swap = True
        g.hs_rng = stream(g.seed, f"{g.host}/{g.name}", g.incarnation, "hostswap")

    def start_window(self, g: GuestModel, e0: int, d: Directives) -> None:
        if d.hswap_scan:
            g.frames.scan()

    def replied(self, g: GuestModel, ep: EpochContext) -> None:
        """The frames the host must have resident for this epoch, before anything moves: the
        frames of touched pages and of pages the guest writes out (double swapping)."""
        self.backed0 = g.frames.private_count
        hs_touch = g.frame[ep.uniq[ep.loc_u == RAM]].astype(np.int64)
        out = ep.dirty
        if len(ep.fvict):  # the guest reads these out too: write-backs and cleancache puts
            out = np.concatenate([ep.dirty, ep.f_out])
        self.dirty = g.frame[out].astype(np.int64)
        self.need = np.concatenate([hs_touch, self.dirty])
        ep.violations += check_map(g, g.frames.hswapped(np.unique(self.need)))

    def settle(self, g: GuestModel, ep: EpochContext) -> None:
        """Frames used this epoch come back into RAM (swap-ins); frames above the budget are
        paged out, chosen as the host can."""
        d, fs, c = ep.d, g.frames, g.counters
        need = np.unique(np.concatenate([self.need, ep.in_frames, ep.pool_new]))
        swap_in = fs.hswapped(need)
        self.exp_page = fs.rec_page[swap_in].copy()
        self.exp_ver = fs.rec_ver[swap_in].copy()
        fs.swap_in(swap_in)
        fs.touch(need, ep.epoch)
        self.swap_in, self.out, self.recs = swap_in, _EI, None
        budget = d.frame_budget
        over = 0 if budget is None else fs.private_count - budget
        if over > 0:  # at the device's pace, but never letting an over-budget guest grow
            grew = max(0, fs.private_count - self.backed0)
            over = min(over, max(d.hswap_step, grew)) if d.hswap_step else over
            pool_frames = g.zp_stack[: g.zpool_frames].astype(np.int64)
            hs_out = fs.pick_victims(over, ep.epoch, d.hswap_policy, g.hs_rng, pool_frames)
            room = d.hswap_quota - fs.hswapped_count
            if len(hs_out) > room:  # the host's swap cannot take them: host OOM
                ep.host_oom = True
                return
            pg = g.fpage[hs_out].astype(np.int64)
            rp = np.where(pg >= 0, pg, NO_PAGE).astype(np.int64)
            rv = np.where(pg >= 0, g.version[np.maximum(pg, 0)], 0).astype(np.uint32)
            fs.swap_out(hs_out, rp, rv)
            self.out, self.recs = hs_out, g._batch(rp, rv)
        ep.hs_in, ep.hs_out = len(swap_in), len(self.out)
        ep.n_double = int(np.count_nonzero(np.isin(self.dirty, swap_in)))
        c["host_swap_ins"] += ep.hs_in
        c["host_swap_outs"] += ep.hs_out
        c["double_swaps"] += ep.n_double

    def request(self, g: GuestModel, ep: EpochContext, req: Request, phase: int) -> None:
        if phase == 2 and (len(self.swap_in) or len(ep.discard) or len(self.out)):
            d = ep.d
            req.hswap = HostSwapOps(
                self.swap_in.astype(np.uint32),
                ep.discard.astype(np.uint32),
                self.out.astype(np.uint32),
                self.recs,
                d.hswap_quota,
                d.hswap_capacity,
            )

    def reply(
        self, g: GuestModel, ep: EpochContext, req: Request, reply: Reply, phase: int
    ) -> None:
        if phase == 2 and req.hswap is not None:
            ep.violations += check_reply(
                g, self.swap_in, self.exp_page, self.exp_ver, reply.hswap, len(self.out)
            )

    def stall(self, g: GuestModel, ep: EpochContext, s: dict[str, float]) -> None:
        """The vCPU waits while the host faults a frame back in."""
        hs_dev = ep.d.hswap_device
        if ep.hs_in and hs_dev is not None:
            ps = g.page_size
            lat_hs = hs_dev.profile.op_time(False, ps) + hs_dev.wait(ps)
            s["host_swap_read"] = ep.hs_in * lat_hs
            g._hist_add(lat_hs, ep.hs_in)

    def release(self, g: GuestModel, req: Request, whole: bool) -> None:
        if whole:
            req.hswap = HostSwapOps(_U, _U, _U, None, 0, 0, drop=True)

    def leave(
        self, g: GuestModel, src: str, flush: bool, out: dict[str, Any]
    ) -> Generator[Request, Reply, None]:
        """Host-swapped frames are read back (records checked) and freed."""
        fs = g.frames
        hs = np.flatnonzero(fs.state == F_HSWAP)
        out["host_swap_reads"] = len(hs)
        if len(hs):
            exp_page, exp_ver = fs.rec_page[hs].copy(), fs.rec_ver[hs].copy()
            reply = yield Request(
                g.name, src, g.disk, hswap=HostSwapOps(hs.astype(np.uint32), _U, _U, None, 0, 0)
            )
            out["violations"] += check_reply(g, hs, exp_page, exp_ver, reply.hswap, 0)
            fs.swap_in(hs)
            g.counters["host_swap_ins"] += len(hs)

    def audit(self, g: GuestModel, full: bool) -> list[str]:
        fs, budget = g.frames, g.directives.frame_budget
        if full or budget is None or fs.private_count <= budget:
            return []
        if fs.private_count > g._hs_ceiling:
            return [
                f"{g.name}: {fs.private_count} frames resident, above both the host's "
                f"budget {budget} and what it held when the window began"
            ]
        return []


def check_map(g: GuestModel, swap_in: np.ndarray) -> list[tuple[str, str]]:
    """A host-swapped frame still holding a guest page must hold the version the host
    wrote: the guest never changes a frame the host has taken away."""
    if len(swap_in) == 0:
        return []
    pg = g.fpage[swap_in].astype(np.int64)
    m = pg >= 0
    bad = m & (
        (g.frames.rec_page[swap_in] != pg)
        | (g.frames.rec_ver[swap_in] != g.version[np.maximum(pg, 0)])
    )
    if bad.any():
        f = int(swap_in[np.flatnonzero(bad)[0]])
        return [("integrity", f"{g.name}: host-swapped frame {f} changed while paged out")]
    return []


def check_reply(
    g: GuestModel,
    swap_in: np.ndarray,
    exp_page: np.ndarray,
    exp_ver: np.ndarray,
    r: Any,
    n_out: int,
) -> list[tuple[str, str]]:
    """Frames read back from host swap: present, at the page and version the host wrote."""
    out = []
    found = np.asarray(r.found, bool)
    if len(swap_in) and not found.all():
        n = int(np.count_nonzero(~found))
        g.counters["lost_pages"] += n
        out.append(
            (
                "no_missing_pages",
                f"{g.name}: {n} frame(s) missing from host swap, e.g. frame "
                f"{int(swap_in[~found][0])}",
            )
        )
    got = r.got
    if len(got):
        ep, ev = exp_page[found], exp_ver[found]
        bad = (got.pages.astype(np.int64) != ep) | (got.versions != ev)
        bad |= g.verify(got)
        if bad.any():
            n = int(np.count_nonzero(bad))
            g.counters["stale_reads"] += n
            out.append(
                ("integrity", f"{g.name}: {n} stale or corrupt record(s) read from host swap")
            )
    ok = np.asarray(r.write_ok, bool)
    if n_out and not ok.all():
        out.append(
            (
                "conservation",
                f"{g.name}: host swap refused {int(np.count_nonzero(~ok))} swap-out(s) "
                "its quota allowed",
            )
        )
    if r.guest_frames != g.frames.hswapped_count:
        out.append(
            (
                "conservation",
                f"{g.name}: host swap holds {r.guest_frames} frames, "
                f"the host counts {g.frames.hswapped_count}",
            )
        )
    return out
