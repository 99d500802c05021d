"""The interface every overcommit mechanism implements, and the registry of mechanisms.

A mechanism decides two things: on the guest side, whether a page the guest swaps out is first
offered to host tmem (`guest_uses_tmem`); on the host side, how the host splits what it can
lend among its guests for each sync window (`plan_window`). Combinations (`a+b`) apply each
part in order. Counters a mechanism owns are always present in the summary, 0 when unused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel


class Mechanism:
    """Base class: the `none` behaviour (guests swap to their own disks, host lends nothing)."""

    name: ClassVar[str] = "none"
    guest_uses_tmem: ClassVar[bool] = False

    def plan_window(self, host: HostModel) -> None:
        """Set each guest's limits for the next sync window (host-side policy)."""


class Combined(Mechanism):
    """Several mechanisms applied together, in the order named."""

    def __init__(self, parts: list[Mechanism]) -> None:
        self.parts = parts
        self.name = "+".join(p.name for p in parts)  # type: ignore[misc]
        self.guest_uses_tmem = any(p.guest_uses_tmem for p in parts)  # type: ignore[misc]

    def plan_window(self, host: HostModel) -> None:
        for p in self.parts:
            p.plan_window(host)


def _registry() -> dict[str, type[Mechanism]]:
    from overcommit.nodes.frontswap import Frontswap
    from overcommit.nodes.none import NoOvercommit

    return {"none": NoOvercommit, "frontswap": Frontswap}


MECHANISMS: tuple[str, ...] = ("none", "frontswap")


def build_mechanism(name: str) -> Mechanism:
    """The mechanism for a (possibly `+`-joined) name from a validated scenario."""
    reg = _registry()
    parts = [reg[p.strip()]() for p in name.split("+")]
    return parts[0] if len(parts) == 1 else Combined(parts)
