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

from overcommit.nodes.host import split_by_demand
from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel


class Frontswap(Mechanism):
    name = "frontswap"
    guest_uses_tmem = True

    def plan_window(self, host: HostModel) -> None:
        room = host.tmem_room()
        guests = host.guests
        demand = [g.window_new_puts + 1.0 for g in guests]
        grants = split_by_demand(room, demand)
        for g, grant in zip(guests, grants):
            billing = g.maxmem_pages - g.alloc_pages
            g.tmem_quota = max(0, min(billing, g.tmem_pages + grant))
            g.window_new_puts = 0
        host.tmem_capacity = host.tmem_pages() + room
        for g in guests:
            g.tmem_capacity = host.tmem_capacity
