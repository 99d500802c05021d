"""`selfballoon`: Xen's self-ballooning and frontswap self-shrinking, inside cooperative guests.

Guest side (`SelfballoonWorker`, Linux `drivers/xen/xen-selfballoon.c`): a worker runs every
`interval` (5 s). Its goal is the guest's committed memory (here: every page the workload has
touched, wherever it is now) plus the kernel's reserve (the high watermark) plus
`selfballoon.reserved`, plus, with self-shrinking, the pages the guest holds in frontswap (room
to repatriate them). It steps the allocation toward the goal by (cur - goal) / 8 going down and
(goal - cur) / 1 going up, never below a floor: none under 16 MiB of usable memory; 16 MiB +
1/2 of the rest under 64 MiB; 40 MiB + 1/8 of the rest under 512 MiB; else 99 MiB + 1/32 of the
rest (or `selfballoon.min_usable` when set). The balloon driver then moves at its rate.

Self-shrinking (`frontswap_selfshrink`): once frontswap has not grown for 3 worker intervals
(inertia), the worker targets `cur - cur / 20` frontswap pages (0 at or below 20) and shrinks by
a partial swapoff: that many frontswap pages are read back into guest RAM (as free frames allow)
and their tmem copies and swap slots freed. Only cooperative guests run the worker.

Host side (`Selfballoon.plan_window`): the host grants each guest that wants to grow a share of
its free, unpromised RAM (Xen populates a deflating balloon only from free memory).

The 2010 thread: Xen's answer to "the host is at the mercy of its guests": cooperative guests
size themselves and shrink their own frontswap, so tmem flows back without the host asking.
Compare `frontswap+selfballoon` with `frontswap` on a drill where memory must come back.

Guest hooks (`SelfballoonGuest`, with `balloon.BalloonGuest`): the worker's tick at the
epoch's start (`begin`) sets the balloon's goal and how many frontswap pages to bring back.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import UNTOUCHED
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel
    from overcommit.nodes.kernel.model import GuestModel

MiB = 2**20


def selfballoon_floor(nframes: int, reserve: int, page_size: int, min_usable: int = 0) -> int:
    """The self-ballooning floor in pages (xen-selfballoon.c, piecewise linear, ~3% slope)."""

    def mb(x: float) -> int:
        return int(x * MiB // page_size)

    if min_usable:
        return reserve + min_usable // page_size
    useful = nframes - reserve
    if useful < mb(16):
        return nframes  # not worth ballooning
    if useful < mb(64):
        return reserve + mb(16) + ((useful - mb(16)) >> 1)
    if useful < mb(512):
        return reserve + mb(40) + ((useful - mb(40)) >> 3)
    return reserve + mb(99) + ((useful - mb(99)) >> 5)


class SelfballoonWorker:
    """The guest's self-ballooning worker and frontswap self-shrinker."""

    def __init__(self, cfg: Any, page_size: int, nframes: int, reserve: int, shrink: bool):
        self.interval = float(cfg.interval)
        self.down = int(cfg.down_hysteresis)
        self.up = int(cfg.up_hysteresis)
        self.reserved = int(cfg.reserved) // page_size
        self.reserve = reserve  # totalreserve_pages: the kernel's reserve (high watermark)
        self.floor = selfballoon_floor(nframes, reserve, page_size, int(cfg.min_usable))
        self.nframes = nframes
        self.shrink = shrink and bool(cfg.selfshrink)
        self.inertia = int(cfg.inertia)
        self.hysteresis = int(cfg.shrink_hysteresis)
        self.inertia_counter = self.inertia
        self.cur_fs = 0
        self.goal_alloc: int | None = None

    def ticks(self, t: float, dt: float) -> bool:
        """Whether the worker runs during [t, t + dt) (first run one interval after boot)."""
        i = self.interval
        return math.floor((t + dt) / i - 1e-9) > math.floor(t / i - 1e-9) and t + dt > i - 1e-9

    def target(self, cur: int, committed: int, tmem_pages: int) -> int:
        """The allocation the worker sets, in pages."""
        goal = committed + self.reserve + self.reserved
        if self.shrink:
            goal += tmem_pages
        tgt = cur
        if cur > goal:
            tgt = cur - (cur - goal) // self.down
        elif cur < goal:
            tgt = cur + (goal - cur) // self.up
        tgt = min(self.nframes, max(tgt, self.floor))
        self.goal_alloc = tgt
        return tgt

    def selfshrink(self, tmem_pages: int) -> int | None:
        """Frontswap pages to keep after this run (None: no shrink this time)."""
        if not self.shrink:
            return None
        last, self.cur_fs = self.cur_fs, tmem_pages
        if self.cur_fs == 0 or self.cur_fs > last:
            self.inertia_counter = self.inertia
            return None
        if self.inertia_counter:
            self.inertia_counter -= 1
            if self.inertia_counter:
                return None
        tgt = 0 if self.cur_fs <= self.hysteresis else self.cur_fs - self.cur_fs // self.hysteresis
        self.inertia_counter = 1
        return tgt


class Selfballoon(Mechanism):
    """Host side: grant guests that want to grow a share of free, unpromised RAM."""

    name = "selfballoon"
    guest_features = frozenset({"balloon", "selfballoon"})
    guest_hooks = ("SelfballoonGuest",)  # with `balloon.BalloonGuest`, which both select
    plan_order = 10

    def plan_window(self, host: HostModel) -> None:
        guests = [g for g in host.guests if g.alive]
        want = [max(0, (g.alloc_goal or 0) - g.alloc_pages) for g in guests]
        if not any(want):
            return
        grants = fill_by_demand(host.lendable(), [float(w) for w in want], want)
        host.lend(sum(grants))
        for g, gr in zip(guests, grants):
            g.plan.grow_limit = max(g.plan.grow_limit, gr)


class SelfballoonGuest(GuestMechanism):
    """Guest side: a cooperative guest runs the worker; each tick sets the balloon's goal and,
    with frontswap, how many pool pages selfshrink brings back (`g.unuse_left`)."""

    features = frozenset({"selfballoon"})
    order = 5  # before frontswap, whose `begin` brings back what this tick asked for
    sees_maxmem = True

    def init(self, g: GuestModel) -> None:
        if g.spec.cooperative:
            from overcommit.config import SelfballoonSettings

            cfg = getattr(g.settings, "selfballoon", None) or SelfballoonSettings()
            g.selfballoon = SelfballoonWorker(
                cfg, g.page_size, g.nframes, g.wm_high, shrink="tmem" in g.features
            )

    def begin(self, g: GuestModel, ep: EpochContext) -> None:
        sb = g.selfballoon
        if sb is not None and sb.ticks(ep.t, ep.dt):
            committed = g.N - int(np.count_nonzero(g.loc == UNTOUCHED))
            target = sb.target(g.alloc_pages, committed, g.tmem_pages)
            g.balloon.set_own_goal(g.nframes - target)
            keep = sb.selfshrink(g.tmem_pages)
            if keep is not None:
                g.unuse_left = max(0, g.tmem_pages - keep)
