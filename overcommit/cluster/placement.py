"""Initial placement of guests on hosts, under an admission policy.

Policies: `first-fit` (hosts in order, the first with room), `most-free` (the host with the most
unreserved RAM), `balanced` (the host with the lowest reserved share). A guest naming a host goes
there if it fits. Admission: `none` only requires room; `host-failures` keeps enough spare
capacity to restart every guest after the `tolerate` largest hosts fail; `percentage` keeps that
share of cluster memory unreserved. A guest's `memory` is its reservation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PlacementError(Exception):
    """The scenario's guests cannot all be placed; the message says which and why."""


@dataclass
class HostRoom:
    name: str
    capacity: int  # bytes guests may reserve: ram - reserve
    reserved: int = 0

    @property
    def free(self) -> int:
        return self.capacity - self.reserved


def place(guests: list[Any], hosts: list[HostRoom], policy: str, admission: Any) -> dict[str, str]:
    """Map guest name -> host name, in guest order; raise PlacementError on failure."""
    by_name = {h.name: h for h in hosts}
    out: dict[str, str] = {}
    for g in guests:
        if g.host is not None:
            h = by_name[g.host]
            if h.free < g.memory:
                raise PlacementError(
                    f"guest {g.name} asks for host {h.name}, which has {h.free} bytes unreserved "
                    f"but the guest needs {g.memory}"
                )
        else:
            fits = [h for h in hosts if h.free >= g.memory]
            if not fits:
                raise PlacementError(
                    f"guest {g.name} (memory {g.memory} bytes) fits on no host: "
                    + ", ".join(f"{h.name} has {h.free} free" for h in hosts)
                )
            if policy == "first-fit":
                h = fits[0]
            elif policy == "most-free":
                h = max(fits, key=lambda x: (x.free, -hosts.index(x)))
            else:  # balanced
                h = min(fits, key=lambda x: (x.reserved / x.capacity, hosts.index(x)))
        h.reserved += g.memory
        out[g.name] = h.name
    _admit(guests, hosts, admission)
    return out


def _admit(guests: list[Any], hosts: list[HostRoom], admission: Any) -> None:
    total = sum(h.capacity for h in hosts)
    demand = sum(g.memory for g in guests)
    if admission.admission == "host-failures":
        n = admission.tolerate
        if n >= len(hosts):
            raise PlacementError(
                f"ha.tolerate {n} leaves no host: the cluster has {len(hosts)} host(s)"
            )
        largest = sorted((h.capacity for h in hosts), reverse=True)[:n]
        usable = total - sum(largest)
        if demand > usable:
            raise PlacementError(
                f"admission control (host-failures, tolerate {n}): guests reserve {demand} bytes "
                f"but only {usable} remain after losing the {n} largest host(s)"
            )
    elif admission.admission == "percentage":
        usable = int(total * (1.0 - admission.percentage))
        if demand > usable:
            raise PlacementError(
                f"admission control (percentage, {admission.percentage:.0%} reserved): guests "
                f"reserve {demand} bytes but only {usable} may be reserved"
            )
