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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from overcommit.nodes.host import fill_by_demand
from overcommit.nodes.mechanism import Mechanism

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
            max(0, g.maxmem_pages - g.alloc_pages - g.plan.grow_limit - g.tmem_pages)
            for g in guests
        ]
        demand = [min(g.window_new_puts + 1.0, h) for g, h in zip(guests, headroom)]
        grants = fill_by_demand(room, demand, headroom)
        host.lend(sum(grants))
        for g, grant in zip(guests, grants):
            # a reclaiming host refuses every new put (persistent pages it cannot take back)
            g.plan.tmem_quota = 0 if host.reclaiming else g.tmem_pages + grant
            g.window_new_puts = 0
        host.tmem_capacity = host.tmem_pages() + sum(grants)
        for g in guests:
            g.plan.tmem_capacity = host.tmem_capacity


__all__ = ["Frontswap", "fill_by_demand"]
