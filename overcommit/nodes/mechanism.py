"""The interface every overcommit mechanism implements, and the registry of mechanisms.

A mechanism has two sides, both in its own module:

- **guest side** — `guest_features`: the names of the guest-kernel behaviours it switches on
  (`tmem`: swap-outs are offered to host tmem first; `balloon`: a balloon driver follows host
  targets; `selfballoon`/`selfshrink`: Xen's self-ballooning worker; `host_swap`: the host pages
  the guest's frames out; `cached_disk`: the swap disk is write-back cached in host RAM;
  `zswap`/`zram`: compressed swap inside the guest; `cleancache`: clean page-cache pages go to
  ephemeral tmem; `page_sharing`: the host merges identical frames; `ramdisk`: the guest swaps
  to a RAM disk the host backs with its RAM), and `guest_hooks`: the
  `kernel.hooks.GuestMechanism` classes that implement them (a class, or its name in the
  mechanism's module). The paging core (`kernel.model.GuestModel`) builds one hook object per
  class whose `features` its guest has (`guest_hooks`), calls them in their `order`, and
  reads the per-window `Directives`; it never asks the host anything inside a window.
- **host side** — `plan_window(host)`: at each sync window's start, turn the guests' reports
  (`host.guests`, `GuestState` mirrors) into each guest's `Directives` (`g.plan`). Lenders book
  what they lend with `host.lend`, so two mechanisms never promise the same free page.

`plan_order` fixes the order in which the parts of a combination plan (guest allocations first,
then the host's own frames, then what it lends out of the rest), whatever order the name lists
them in. Settings come from `host.settings` (the scenario). Counters a mechanism owns are always
present in the summary, 0 when unused.

`register(cls)` (also `overcommit.register_mechanism`) makes a mechanism defined outside the
package known to scenarios and guests; docs/mechanisms.md has a worked example.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, ClassVar

from overcommit.config import CONFLICTS as CONFLICTS
from overcommit.config import MECHANISMS as _MECHANISM_NAMES

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel
    from overcommit.nodes.kernel.hooks import GuestMechanism


class Mechanism:
    """Base class: the `none` behaviour (guests swap to their own disks, host lends nothing)."""

    name: ClassVar[str] = "none"
    guest_features: ClassVar[frozenset[str]] = frozenset()
    #: the guest side: `GuestMechanism` classes (or their names in this class's module)
    guest_hooks: ClassVar[tuple[type[GuestMechanism] | str, ...]] = ()
    plan_order: ClassVar[int] = 100

    @property
    def guest_uses_tmem(self) -> bool:
        """Whether guests offer swapped-out pages to host tmem (frontswap)."""
        return "tmem" in self.guest_features

    @property
    def parts(self) -> list[Mechanism]:
        return [self]

    def has(self, name: str) -> bool:
        """Whether this mechanism is, or combines, the one called `name`."""
        return any(p.name == name for p in self.parts)

    def plan_window(self, host: HostModel) -> None:
        """Set each guest's directives for the next sync window (host-side policy)."""


class Combined(Mechanism):
    """Several mechanisms applied together; they plan in `plan_order`."""

    def __init__(self, parts: list[Mechanism]) -> None:
        self._parts = parts
        self.name = "+".join(p.name for p in parts)  # type: ignore[misc]
        self.guest_features = frozenset().union(*(p.guest_features for p in parts))  # type: ignore[misc]

    @property
    def parts(self) -> list[Mechanism]:
        return list(self._parts)

    def plan_window(self, host: HostModel) -> None:
        for p in sorted(self._parts, key=lambda m: m.plan_order):
            p.plan_window(host)


def _registry() -> dict[str, type[Mechanism]]:
    from overcommit.nodes.balloon import Balloon
    from overcommit.nodes.cached_disk import CachedDisk
    from overcommit.nodes.cleancache import Cleancache
    from overcommit.nodes.frontswap import Frontswap
    from overcommit.nodes.host_swap import HostSwap
    from overcommit.nodes.none import NoOvercommit
    from overcommit.nodes.page_sharing import PageSharing
    from overcommit.nodes.ramdisk import RamDisk
    from overcommit.nodes.selfballoon import Selfballoon
    from overcommit.nodes.zswap import Zram, Zswap

    classes = [
        NoOvercommit,
        Frontswap,
        HostSwap,
        Balloon,
        Selfballoon,
        CachedDisk,
        Zswap,
        Zram,
        PageSharing,
        Cleancache,
        RamDisk,
    ]
    return {c.name: c for c in [*classes, *_REGISTERED.values()]}


#: Mechanisms registered from outside the package (`register`), by name.
_REGISTERED: dict[str, type[Mechanism]] = {}


def register(cls: type[Mechanism], conflicts: dict[str, str] | None = None) -> type[Mechanism]:
    """Make a mechanism defined outside the package known by its `name` (usable as a
    decorator): scenarios may name it, alone or `+`-joined, and guests get its hooks.
    `conflicts` maps names it cannot run with to the reason. For the Ray runtimes, call this
    at the import of a module the workers import too."""
    from overcommit.config import register_mechanism_name

    if not isinstance(cls, type) or not issubclass(cls, Mechanism):
        raise TypeError(f"register() wants a Mechanism subclass, not {cls!r}")
    register_mechanism_name(cls.name, conflicts)  # validation reads its conflicts from there
    _REGISTERED[cls.name] = cls
    return cls


def _hook_class(mech: type[Mechanism], ref: type[GuestMechanism] | str) -> type[GuestMechanism]:
    return getattr(sys.modules[mech.__module__], ref) if isinstance(ref, str) else ref


def guest_hooks(features: frozenset[str]) -> list[GuestMechanism]:
    """One hook object per guest-side class whose features the guest has, in `order`."""
    if not features:
        return []
    seen: list[type[GuestMechanism]] = []
    for mech in _registry().values():
        for ref in mech.guest_hooks:
            cls = _hook_class(mech, ref)
            if cls not in seen and cls.features & features:
                seen.append(cls)
    return [cls() for cls in sorted(seen, key=lambda c: c.order)]


#: Known mechanism names (defined with the scenario schema, which validates them).
MECHANISMS = _MECHANISM_NAMES


def build_mechanism(name: str) -> Mechanism:
    """The mechanism for a (possibly `+`-joined) name from a validated scenario. Mechanisms
    read their settings (the scenario's `balloon:`, `selfballoon:`, ... sections) from
    `host.settings` when they plan."""
    reg = _registry()
    parts = [reg[p.strip()]() for p in name.split("+")]
    return parts[0] if len(parts) == 1 else Combined(parts)
