"""Mechanism names and settings: `MECHANISMS`, `BALLOON_DRIVERS`, the settings sections of
the mechanisms (`balloon:`, `selfballoon:`, `cached_disk:`, `zswap:`, `zram:`, `cleancache:`,
`page_sharing:`), the `CONFLICTS` table, the standard combinations, a registry for mechanism
names defined outside the package, and the check of a scenario's `mechanism` value."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from overcommit.config.common import (
    Duration,
    Fraction,
    Int,
    PositiveBandwidth,
    PositiveDuration,
    PositiveRate,
    Size,
    _first_duplicate,
    _Model,
)
from overcommit.units import show

#: Known mechanism names; a scenario's ``mechanism`` joins one or more of them with ``+``.
MECHANISMS: tuple[str, ...] = (
    "none",
    "frontswap",
    "host-swap",
    "balloon",
    "selfballoon",
    "cached-disk",
    "zswap",
    "zram",
    "page-sharing",
    "cleancache",
    "ramdisk",
)

#: Balloon driver profiles (see overcommit.profiles.BALLOON_DRIVERS).
BALLOON_DRIVERS: tuple[str, ...] = ("virtio", "virtio-sg", "vmw")


class BalloonSettings(_Model):
    """`balloon`: the driver's speed and the host's target policy."""

    driver: Literal["virtio", "virtio-sg", "vmw"] = "virtio-sg"
    rate: PositiveBandwidth | None = None
    max_share: Fraction = 0.65
    idle_tax: Fraction = 0.75


class SelfballoonSettings(_Model):
    """`selfballoon`: Xen's self-ballooning worker and frontswap self-shrinking."""

    interval: PositiveDuration = 5.0
    down_hysteresis: Int = Field(8, ge=1)
    up_hysteresis: Int = Field(1, ge=1)
    reserved: Size = 0
    min_usable: Size = 0
    selfshrink: bool = True
    inertia: Int = Field(3, ge=1)
    shrink_hysteresis: Int = Field(20, ge=1)


class CachedDiskSettings(_Model):
    """`cached-disk`: the host's write-back cache of guest swap disks."""

    max: Size | None = None
    writeback_after: Duration = 30.0
    dirty_ratio: Fraction = 0.5


class ZswapSettings(_Model):
    """`zswap`: the guest's compressed cache in front of its swap disk."""

    max_pool_percent: Fraction = 0.2
    accept_threshold: Fraction = 0.9


class CleancacheSettings(_Model):
    """`cleancache`: the host's ephemeral tmem pool for clean page-cache pages."""

    max: Size | None = None


class PageSharingSettings(_Model):
    """`page-sharing`: the host's scanner and its VMware-style free-memory states."""

    scan_rate: PositiveRate = 5000.0
    min_free: Size | None = None


class ZramSettings(_Model):
    """`zram`: a compressed RAM swap device inside the guest."""

    size: Size | None = None
    discard: Literal["immediate", "periodic"] = "immediate"
    discard_interval: PositiveDuration = 10.0


#: Pairs that cannot run together, with the reason (checked when a scenario loads).
CONFLICTS: dict[frozenset[str], str] = {
    frozenset({"zswap", "zram"}): "zswap in front of a zram device compresses twice",
    frozenset({"frontswap", "zswap"}): "zswap is itself a frontswap backend inside the guest; "
    "use one of them",
    frozenset({"frontswap", "zram"}): "a zram device takes the swap-outs frontswap would put",
    frozenset({"frontswap", "cached-disk"}): "frontswap and a host-cached swap disk both lend "
    "the host's free RAM as fast swap; compare them instead",
    frozenset({"balloon", "selfballoon"}): "a self-ballooning guest sets its own balloon target",
    frozenset({"frontswap", "ramdisk"}): "frontswap and a host RAM disk both lend the host's "
    "RAM as fast swap; compare them instead",
    frozenset({"cached-disk", "ramdisk"}): "the guest's swap device is either a host-cached "
    "disk or a host RAM disk",
}

#: The combinations real systems use (KVM, Xen with self-ballooning and with cleancache,
#: VMware); `compare` runs them after each mechanism alone.
STANDARD_COMBINATIONS: tuple[str, ...] = (
    "balloon+host-swap",
    "frontswap+selfballoon",
    "frontswap+cleancache",
    "page-sharing+balloon+zswap+host-swap",
)

_MECHANISM_NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

# Mechanism names registered at run time (in registration order) and their conflicts.
_REGISTERED: dict[str, None] = {}
_REGISTERED_CONFLICTS: dict[frozenset[str], str] = {}


def known_mechanisms() -> tuple[str, ...]:
    """Mechanism names a scenario may use: the built-ins (`MECHANISMS`, in order), then the
    names registered with :func:`register_mechanism_name`, in registration order."""
    return (*MECHANISMS, *_REGISTERED)


def mechanism_conflicts() -> dict[frozenset[str], str]:
    """Pairs that cannot run together: `CONFLICTS` plus those given at registration."""
    return {**CONFLICTS, **_REGISTERED_CONFLICTS}


def _conflicts_of(name: str) -> dict[str, str]:
    return {
        other: why
        for pair, why in mechanism_conflicts().items()
        if name in pair
        for other in pair - {name}
    }


def register_mechanism_name(name: str, conflicts: dict[str, str] | None = None) -> None:
    """Make `name` a mechanism scenarios may use (alone or joined with `+`).

    `name` uses lowercase letters, digits and '-' (like `my-swap`). `conflicts` maps each
    known mechanism it cannot run with to the reason, which a scenario combining the two is
    refused with. Registering a known name again is allowed only with the conflicts it already
    has (a no-op); anything else raises ValueError.
    """
    if not isinstance(name, str) or not _MECHANISM_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid mechanism name {show(name)}: use lowercase letters, digits and '-' "
            "(like my-swap)"
        )
    wanted = dict(conflicts or {})
    for other, why in wanted.items():
        if other == name:
            raise ValueError(f"mechanism {name!r} cannot conflict with itself")
        if other not in known_mechanisms():
            raise ValueError(
                f"mechanism {name!r} conflicts with unknown mechanism {show(other)} "
                f"(known: {', '.join(known_mechanisms())})"
            )
        if not isinstance(why, str) or not why.strip():
            raise ValueError(
                f"the conflict of {name!r} with {other!r} needs a reason, got {show(why)}"
            )
    if name in known_mechanisms():
        if _conflicts_of(name) != wanted:
            kind = "built-in" if name in MECHANISMS else "already registered"
            raise ValueError(f"mechanism {name!r} is {kind} with other conflicts")
        return
    _REGISTERED[name] = None
    for other, why in wanted.items():
        _REGISTERED_CONFLICTS[frozenset({name, other})] = why


def _unknown_mechanism_message(unknown: list[str]) -> str:
    plural = "s" if len(unknown) > 1 else ""
    names = ", ".join(repr(name) for name in unknown)
    return (
        f"unknown mechanism{plural} {names} (known: {', '.join(known_mechanisms())}; "
        f"combinations join them with '+', e.g. {', '.join(STANDARD_COMBINATIONS)})"
    )


def check_mechanism(value: Any) -> str:
    """The normalised form of a scenario's `mechanism` value (blanks removed); raises
    ValueError for a non-string, an empty part, an unknown or repeated name, `none` combined
    with others, or a pair that conflicts."""
    if not isinstance(value, str):
        raise ValueError(f"expected a mechanism name like 'frontswap', got {show(value)}")
    normalized = "".join(value.split())
    parts = normalized.split("+")
    if "" in parts:
        raise ValueError(
            f"empty name in mechanism {show(value)}; join names with '+' like 'frontswap+balloon'"
        )
    known = known_mechanisms()
    unknown = [part for part in parts if part not in known]
    if unknown:
        raise ValueError(_unknown_mechanism_message(unknown))
    if "none" in parts and len(parts) > 1:
        raise ValueError("'none' cannot be combined with other mechanisms")
    duplicate = _first_duplicate(parts)
    if duplicate is not None:
        raise ValueError(f"mechanism {duplicate!r} is given twice")
    conflicts = mechanism_conflicts()
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            why = conflicts.get(frozenset({a, b}))
            if why is not None:
                raise ValueError(f"'{a}' and '{b}' cannot be combined: {why}")
    return normalized
