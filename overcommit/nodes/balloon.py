"""`balloon`: the host sets each guest's allocation target; the guest's balloon driver follows.

Guest side (`BalloonDriver`): the balloon holds guest frames the guest has handed back to the
host. A guest booted under a ballooning mechanism has `maxmem` of guest-physical frames with the
balloon holding `maxmem - memory` of them (Xen's model; KVM boots with the balloon inflated the
same way), so deflating can grow the guest up to `maxmem`. Each epoch the driver moves toward
its goal at its profile's rate (`profiles.BALLOON_DRIVERS`: virtio legacy ~1.7 GB/s,
virtio scatter-gather ~14 GB/s, vmw_balloon's 1 s worker with 512-16384 pages per cycle), timed
inside the epoch: a goal reached mid-epoch stops the lag clock at that exact time. Inflating
takes free frames above the high watermark; when there are too few, the driver's allocations
wake kswapd, so the guest reclaims to its own swap as fast as its disk allows and the balloon
follows. Deflating needs the host's grant (`Directives.grow_limit`). A guest that does not
cooperate never inflates its balloon (`cooperative: false`; it still takes memory it is given
back); a `cooperation` fraction lets the balloon grow to that share of the largest balloon
(`balloon.max_share` of the guest's frames, default 65% as in vSphere). `balloon_lag_seconds`
is the time the balloon spent away from the host's target.

Host side (`Balloon.plan_window`): every window the host estimates each guest's working set
(pages touched in the last window, decaying slowly: quick to grow, slow to forget, as VMware's
estimator) and splits the RAM guests may use by demand = working set + (1 - idle tax) x idle
allocation (idle-memory tax, default 75%), each guest between its floor (the largest balloon
leaves) and its frames. Shrinking targets apply at once; growth only from RAM that is free and
unpromised now (the host cannot hand out memory another guest has yet to give back). During a
`host_reclaim` the host asks every guest back down to its boot memory.

The 2010 thread: Dan Magenheimer's claim that ballooning is slow, because a needy guest must
wait for other guests to give memory up; `balloon_lag_seconds` and the stall of guests waiting
for memory measure it against `frontswap`'s immediate puts.

Guest hooks (`BalloonGuest`): the guest sees and boots with maxmem of frames, the balloon
holding what lies above its memory; a balloon that wants frames presses kswapd
(`kswapd_goal`); after the epoch's page moves the driver inflates or deflates (`settle`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import _EI
from overcommit.nodes.mechanism import Mechanism
from overcommit.profiles import BALLOON_DRIVERS, BalloonProfile

if TYPE_CHECKING:
    from overcommit.nodes.host import Directives, HostModel
    from overcommit.nodes.kernel.model import GuestModel

DRIVER_PAGE = 4096  # balloon drivers count 4 KiB pages
WS_DECAY = 0.9  # per window: how slowly the working-set estimate forgets


def driver_profile(settings: Any) -> BalloonProfile:
    """The balloon driver profile of a scenario (with its `rate` override)."""
    from dataclasses import replace

    cfg = getattr(settings, "balloon", None)
    name = cfg.driver if cfg is not None else "virtio-sg"
    prof = BALLOON_DRIVERS[name]
    if cfg is not None and cfg.rate is not None:
        prof = replace(prof, rate=float(cfg.rate), interval=0.0)
    return prof


def max_share(settings: Any) -> float:
    cfg = getattr(settings, "balloon", None)
    return 0.65 if cfg is None else float(cfg.max_share)


class BalloonDriver:
    """A guest's balloon driver: how many frames it holds, where it is going, how late it is."""

    def __init__(
        self,
        profile: BalloonProfile,
        page_size: int,
        size: int,
        max_size: int,
        cooperation: float,
    ) -> None:
        self.profile = profile
        self.page_size = page_size
        self.size = size  # frames the balloon holds
        self.max_size = max(size, max_size)
        # the most the guest lets the balloon hold: its share of the largest balloon; a guest
        # that does not cooperate never inflates at all
        self.inflates = cooperation > 0
        self.cap = int(math.floor(cooperation * self.max_size))
        self.wanted = size  # the balloon size the host's target implies
        self.own_goal: int | None = None  # a goal the guest sets itself (selfballoon)
        self.scale = DRIVER_PAGE / page_size  # emulated pages per driver page
        self.cycle = profile.pressure_pages
        self.lag = 0.0
        self.inflated = 0
        self.deflated = 0

    # -- goals ------------------------------------------------------------------------------
    def request(self, nframes: int, alloc_target: int | None) -> None:
        """The host asks for an allocation of `alloc_target` pages (None: no request)."""
        if alloc_target is not None:
            self.wanted = min(self.max_size, max(0, nframes - alloc_target))

    def set_own_goal(self, size: int | None) -> None:
        """A guest-side goal (self-ballooning); it replaces the host's request."""
        self.own_goal = None if size is None else min(self.max_size, max(0, size))
        if self.own_goal is not None:
            self.wanted = self.own_goal

    @property
    def goal(self) -> int:
        """Where the driver is going: the wanted size, but never above what the guest lets
        the balloon hold (cooperation)."""
        if self.wanted > self.size:
            if not self.inflates:
                return self.size
            return max(self.size, min(self.wanted, self.cap))
        return self.wanted

    # -- one epoch --------------------------------------------------------------------------
    def allowance(self, t: float, dt: float, pressure: bool) -> int:
        """Frames the driver could move in [t, t + dt) at its rate (before other limits)."""
        p = self.profile
        if p.interval <= 0:
            return int(p.rate * dt / self.page_size)
        ticks = math.floor((t + dt) / p.interval - 1e-9) - math.floor(t / p.interval - 1e-9)
        if ticks <= 0:
            return 0
        per = p.idle_pages if not pressure else self.cycle
        return int(ticks * per * self.scale)

    def commit(
        self, moved: int, limited: bool, t: float, dt: float, pressure: bool
    ) -> tuple[int, int]:
        """Apply a move of `moved` frames (signed: + inflates) and account the lag.

        `limited` says the move was cut short by memory (no free frames, no host grant).
        Returns (inflated, deflated)."""
        was_off = self.size != self.wanted
        self.size += moved
        if moved > 0:
            self.inflated += moved
        elif moved < 0:
            self.deflated += -moved
        p = self.profile
        if p.interval > 0 and moved != 0:  # vmw: adapt the batch to pressure and failures
            if limited:
                self.cycle = max(p.min_pages, self.cycle // 2)
            elif pressure:
                self.cycle = min(p.pressure_pages, self.cycle * 2)
        if not was_off:
            return max(moved, 0), max(-moved, 0)
        if self.size != self.wanted:
            self.lag += dt
        elif p.interval <= 0 and p.rate > 0:
            self.lag += min(dt, abs(moved) * self.page_size / p.rate)
        else:  # reached at the first tick of this epoch that sufficed
            per = max(1.0, (p.idle_pages if not pressure else self.cycle) * self.scale)
            first = (math.floor(t / p.interval - 1e-9) + 1) * p.interval
            k = max(1, math.ceil(abs(moved) / per))
            self.lag += min(dt, first + (k - 1) * p.interval - t)
        return max(moved, 0), max(-moved, 0)


class Balloon(Mechanism):
    """Host policy: allocation targets by demand with an idle-memory tax."""

    name = "balloon"
    guest_features = frozenset({"balloon"})
    guest_hooks = ("BalloonGuest",)
    plan_order = 10

    def plan_window(self, host: HostModel) -> None:
        guests = [g for g in host.guests if g.alive and g.nframes]
        if not guests:
            return
        cfg = getattr(host.settings, "balloon", None)
        tax = 0.75 if cfg is None else float(cfg.idle_tax)
        # VMware: while memory is plenty ("high", "clear") the balloon only gives memory back;
        # it reclaims from guests from the "soft" state down
        grow_only = host.state in ("high", "clear")
        if host.reclaiming:  # the host wants back what it lent: every guest to its boot size
            targets = [min(g.alloc_pages, max(g.min_alloc, g.memory_pages)) for g in guests]
            # failover: what a restart still lacks comes from inflating further, by the room
            # each guest has above its floor (cooperative guests first)
            short = host.reclaim_need - sum(g.alloc_pages - t for g, t in zip(guests, targets))
            if short > 0:
                asked = [i for i, g in enumerate(guests) if g.cooperative] or list(
                    range(len(guests))
                )
                room = [max(0, targets[i] - guests[i].min_alloc) for i in asked]
                cuts = fill_by_demand(short, [float(r) for r in room], room)
                for i, c in zip(asked, cuts):
                    targets[i] -= c
            for g, t in zip(guests, targets):
                g.plan.alloc_target = t
            return
        room = host.guest_room()
        ws = []
        for g in guests:
            memo = host.memo.setdefault(g.name, {})
            est = max(float(g.active_pages), WS_DECAY * memo.get("ws", 0.0))
            memo["ws"] = est
            ws.append(est)
        demand = [w + (1.0 - tax) * max(0.0, g.alloc_pages - w) + 1.0 for g, w in zip(guests, ws)]
        floors = [min(g.min_alloc, g.alloc_pages) for g in guests]
        rest = max(0, room - sum(floors))
        extra = fill_by_demand(rest, demand, [g.nframes - f for g, f in zip(guests, floors)])
        targets = [f + x for f, x in zip(floors, extra)]
        grow = [max(0, t - g.alloc_pages) for g, t in zip(guests, targets)]
        grants = grow
        if sum(grow) > 0:
            grants = fill_by_demand(host.lendable(), [float(x) for x in grow], grow)
            host.lend(sum(grants))
        for g, t, gr in zip(guests, targets, grants):
            g.plan.alloc_target = min(t, g.alloc_pages + gr) if t > g.alloc_pages else t
            if grow_only:
                g.plan.alloc_target = max(g.plan.alloc_target, g.alloc_pages)
            g.plan.grow_limit = max(g.plan.grow_limit, gr)


class BalloonGuest(GuestMechanism):
    """Guest side: the guest sees maxmem of frames, boots with the balloon holding what lies
    above its memory; the driver presses kswapd for the frames it wants and moves each epoch."""

    features = frozenset({"balloon", "selfballoon"})
    order = 50
    sees_maxmem = True
    frame_stacks = ("balloon_stack",)

    def init(self, g: GuestModel) -> None:
        g.initial_balloon = g.nframes - g.memory_pages
        # the largest balloon: a share of the frames (vSphere's 65%), or for a self-
        # ballooning guest its own floor
        share = max_share(g.settings)
        g.min_alloc = min(g.memory_pages, max(1, math.ceil(g.nframes * (1.0 - share))))
        if g.selfballoon is not None:
            g.min_alloc = min(g.memory_pages, g.selfballoon.floor)
        g.min_alloc = max(g.min_alloc, g.pinned_n + g.wm_high)
        coop = float(getattr(g.spec, "cooperation", 1.0))
        if not g.spec.cooperative:
            coop = 0.0
        self.args = (driver_profile(g.settings), g.page_size, g.nframes - g.min_alloc, coop)

    def boot(self, g: GuestModel) -> None:
        prof, ps, max_size, coop = self.args
        g.balloon = BalloonDriver(prof, ps, g.balloon_n, max_size, coop)

    def start_window(self, g: GuestModel, e0: int, d: Directives) -> None:
        if g.selfballoon is None:
            g.balloon.request(g.nframes, d.alloc_target)

    def kswapd_goal(self, g: GuestModel, ep: EpochContext, want: int) -> int:
        """The balloon's wish for frames this epoch presses kswapd when free frames run short."""
        b = g.balloon
        if b.goal > b.size:
            bal_want = min(b.goal - b.size, b.allowance(ep.t, ep.dt, ep.pressure))
            if bal_want:
                return max(want, g.wm_high + bal_want - ep.free)
        return want

    def settle(self, g: GuestModel, ep: EpochContext) -> None:
        ep.discard = _balloon_step(g, ep.t, ep.dt, ep.pressure)

    def stop_cooperating(self, g: GuestModel) -> None:
        g.balloon.inflates = False


def _balloon_step(g: GuestModel, t: float, dt: float, pressure: bool) -> np.ndarray:
    """Move the balloon for this epoch; returns host-swapped frames it gave back (their
    host swap copies are discarded unread)."""
    b = g.balloon
    goal = b.goal
    allow = b.allowance(t, dt, pressure)
    discard = _EI
    moved = 0
    limited = False
    if goal > b.size:
        want = min(goal - b.size, allow)
        avail = max(0, g.free_top - g.wm_high)
        k = min(want, avail)
        limited = k < want
        if k:
            fr = g._take_free(k)
            g.balloon_stack[g.balloon_n : g.balloon_n + k] = fr
            g.balloon_n += k
            discard = g.frames.release(fr)
            moved = k
    elif goal < b.size:
        want = min(b.size - goal, allow)
        grow_room = max(0, g.directives.grow_limit - g.grown)
        bill_room = max(0, g.maxmem_pages - g.tmem_pages - g.alloc_pages)
        if not g.uses_tmem:
            bill_room = want
        k = min(want, grow_room, bill_room)
        limited = k < want
        if k:
            fr = g.balloon_stack[g.balloon_n - k : g.balloon_n].astype(np.int64)
            g.balloon_n -= k
            g._give_free(fr)
            if g.eager:
                g.counters["host_frames_allocated"] += g.frames.back(fr)
            g.grown += k
            moved = -k
    lag0 = b.lag
    inflated, deflated = b.commit(moved, limited, t, dt, pressure)
    g.balloon_lag_seconds += b.lag - lag0
    g.counters["balloon_inflated"] += inflated
    g.counters["balloon_deflated"] += deflated
    return discard
