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
meanwhile. While RAM suffices, nothing is paged out. The host
also splits its swap area among the guests (`hswap_quota`) and rescans the frames' accessed bits
(`hswap_scan`).

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
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from overcommit.nodes.host import fill_by_demand, split_by_demand
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel

WS_DECAY = 0.9  # per window: how slowly the host's working-set estimate forgets
SWAP_OUT_CLUSTER = 32  # pages per host swap-out write (SWAP_CLUSTER_MAX)
HEADROOM = 0.01  # share of the guests' RAM the host keeps free (its own watermark)


class HostSwap(Mechanism):
    """Host policy: resident-frame budgets by demand, host swap split by need."""

    name = "host-swap"
    guest_features = frozenset({"host_swap"})
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
            extra = [0] * len(guests)
        # what the growers lack, and the host's own headroom, comes from guests above share
        short = max(0, sum(grow) - sum(grants)) + max(0, sum(backed) + headroom - room)
        excess = [max(0, b - t) for b, t in zip(backed, targets)]
        cuts = fill_by_demand(short, [float(x) for x in excess], excess) if short else excess
        if not short:
            cuts = [0] * len(guests)
        budgets = [b + gr + x - c for b, gr, x, c in zip(backed, grants, extra, cuts)]
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
