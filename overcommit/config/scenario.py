"""`Scenario`, the complete scenario model with its expansion helpers, and the cross-field
checks that need the whole scenario (`_cross_problems`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from overcommit.config.common import (
    _DEFER_CROSS_CHECKS,
    _EMPTY_IS_DEFAULT,
    _EMPTY_LIST,
    MAX_GUESTS,
    RESERVED_GUEST_NAME,
    RESERVED_HOST_NAME,
    Int,
    Loc,
    Name,
    PositiveDuration,
    Size,
    _default,
    _field,
    _Model,
    _some,
    _str_to_list,
)
from overcommit.config.events import (
    EVENT_ACTIONS,
    HA,
    Chaos,
    Condition,
    Event,
    _check_hypothesis,
    parse_conditions,
)
from overcommit.config.guests import (
    AnyWorkload,
    GuestGroup,
    GuestSpec,
    _group_guest_names,
    footprint,
)
from overcommit.config.hosts import (
    BUILTIN_DEVICES,
    Costs,
    DeviceOverride,
    Hosts,
    Limits,
    RedisConfig,
    Runtime,
    SharedStorage,
)
from overcommit.config.mechanisms import (
    BalloonSettings,
    CachedDiskSettings,
    CleancacheSettings,
    PageSharingSettings,
    SelfballoonSettings,
    ZramSettings,
    ZswapSettings,
    check_mechanism,
)
from overcommit.config.migration import MigrationSettings
from overcommit.units import format_duration, format_size


class Scenario(_Model):
    """A complete scenario. Build one with load_scenario / load_scenario_text."""

    name: Name
    seed: Int = Field(0, ge=0)
    duration: PositiveDuration
    epoch: PositiveDuration = Field(0.1, validate_default=True)
    sync_window: PositiveDuration = Field(1.0, validate_default=True)
    page_size: Size = 4096
    payload: Literal["digest", "full"] = "digest"
    mechanism: str = "none"
    runtime: Annotated[Runtime, _EMPTY_IS_DEFAULT] = _default(Runtime)
    hosts: Hosts
    shared_storage: Annotated[SharedStorage, _EMPTY_IS_DEFAULT] = _default(SharedStorage)
    devices: Annotated[dict[Name, DeviceOverride], _EMPTY_IS_DEFAULT] = Field(default_factory=dict)
    costs: Annotated[Costs, _EMPTY_IS_DEFAULT] = _default(Costs)
    redis: Annotated[RedisConfig, _EMPTY_IS_DEFAULT] = _default(RedisConfig)
    placement: Literal["first-fit", "most-free", "balanced"] = "first-fit"
    ha: Annotated[HA, _EMPTY_IS_DEFAULT] = _default(HA)
    guests: list[GuestGroup] = Field(min_length=1)
    events: Annotated[list[Event], _EMPTY_LIST] = Field(default_factory=list)
    chaos: Chaos | None = None
    hypothesis: Annotated[
        list[Annotated[str, AfterValidator(_check_hypothesis)]], BeforeValidator(_str_to_list)
    ] = Field(default_factory=list)
    limits: Annotated[Limits, _EMPTY_IS_DEFAULT] = _default(Limits)
    balloon: Annotated[BalloonSettings, _EMPTY_IS_DEFAULT] = _default(BalloonSettings)
    selfballoon: Annotated[SelfballoonSettings, _EMPTY_IS_DEFAULT] = _default(SelfballoonSettings)
    cached_disk: Annotated[CachedDiskSettings, _EMPTY_IS_DEFAULT] = _default(CachedDiskSettings)
    zswap: Annotated[ZswapSettings, _EMPTY_IS_DEFAULT] = _default(ZswapSettings)
    zram: Annotated[ZramSettings, _EMPTY_IS_DEFAULT] = _default(ZramSettings)
    page_sharing: Annotated[PageSharingSettings, _EMPTY_IS_DEFAULT] = _default(PageSharingSettings)
    cleancache: Annotated[CleancacheSettings, _EMPTY_IS_DEFAULT] = _default(CleancacheSettings)
    migration: Annotated[MigrationSettings, _EMPTY_IS_DEFAULT] = _default(MigrationSettings)

    # Where the scenario came from, so apply_overrides can re-validate the raw input.
    _source: str = PrivateAttr(default="<scenario>")
    _text: str | None = PrivateAttr(default=None)
    _base: Any = PrivateAttr(default=None)
    _overrides: tuple[tuple[str, Any, str], ...] = PrivateAttr(default=())

    @field_validator("epoch")
    @classmethod
    def _check_epoch(cls, epoch: float, info: ValidationInfo) -> float:
        duration = info.data.get("duration")
        if duration is not None and epoch > duration:
            raise ValueError(
                f"epoch {format_duration(epoch)} is longer than duration "
                f"{format_duration(duration)}"
            )
        return epoch

    @field_validator("sync_window")
    @classmethod
    def _check_sync_window(cls, window: float, info: ValidationInfo) -> float:
        epoch = info.data.get("epoch")
        if epoch is not None and window < epoch:
            raise ValueError(
                f"sync_window {format_duration(window)} is shorter than epoch "
                f"{format_duration(epoch)}"
            )
        return window

    @field_validator("page_size")
    @classmethod
    def _check_page_size(cls, size: int) -> int:
        if not (512 <= size <= 2**30 and size & (size - 1) == 0):
            raise ValueError(
                f"page size must be a power of two from 512B to 1GiB (like 4KiB), got {size}"
            )
        return size

    @field_validator("mechanism", mode="before")
    @classmethod
    def _check_mechanism(cls, value: Any) -> str:
        return check_mechanism(value)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Scenario:
        if info.context and info.context.get(_DEFER_CROSS_CHECKS):
            return self
        problems = _cross_problems(self)
        if problems:
            raise ValueError("; ".join(f"{_field(loc)}: {message}" for loc, message in problems))
        return self

    def __eq__(self, other: object) -> bool:
        # Equal scenarios compare equal whatever text they were loaded from.
        if not isinstance(other, Scenario):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # holds lists and dicts

    # -- expansion helpers ---------------------------------------------------------------

    def host_names(self) -> list[str]:
        """Host names: ``hosts.names`` if given, else ``host-1`` .. ``host-N``."""
        if self.hosts.names is not None:
            return list(self.hosts.names)
        return [f"host-{index}" for index in range(1, self.hosts.count + 1)]

    def guest_specs(self) -> list[GuestSpec]:
        """One GuestSpec per guest, in declaration order, with defaults resolved."""
        specs = []
        for group_index, group in enumerate(self.guests):
            for name in _group_guest_names(group):
                specs.append(
                    GuestSpec(
                        name=name,
                        group=group_index,
                        memory=group.memory,
                        maxmem=group.memory if group.maxmem is None else group.maxmem,
                        swap=group.memory if group.swap is None else group.swap,
                        cooperative=group.cooperative,
                        cooperation=group.cooperation,
                        host=group.host,
                        priority=group.priority,
                        pinned=group.pinned,
                        readahead=group.readahead,
                        lru=group.lru,
                        watermarks=group.watermarks,
                        oom_restart=group.oom_restart,
                        workload=group.workload,
                        swap_cluster=group.swap_cluster,
                    )
                )
        return specs

    def guest_names(self) -> list[str]:
        """Expanded guest names in declaration order."""
        return [name for group in self.guests for name in _group_guest_names(group)]

    @staticmethod
    def footprint(workload: AnyWorkload) -> int:
        """Bytes a workload can touch (max working set)."""
        return footprint(workload)

    def mechanism_parts(self) -> list[str]:
        """The mechanism names joined by ``+`` (``["none"]`` for the baseline)."""
        return self.mechanism.split("+")

    def conditions(self) -> list[Condition]:
        """All hypothesis clauses, in order (items joined with ``and`` are split)."""
        return [condition for item in self.hypothesis for condition in parse_conditions(item)]

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict of the resolved scenario (bytes, seconds), in field order.

        Host names, guest ``maxmem`` and ``swap`` are resolved; events are written in their
        file form (``{"at": 12.0, "tmem_freeze": "host-1"}``). The result loads back as is.
        """
        data = self.model_dump(mode="json")
        data["hosts"]["names"] = self.host_names()
        for group, raw in zip(self.guests, data["guests"], strict=True):
            raw["maxmem"] = group.memory if group.maxmem is None else group.maxmem
            raw["swap"] = group.memory if group.swap is None else group.swap
        data["events"] = [event.file_form() for event in self.events]
        return data


# --------------------------------------------------------------------------------------------
# Cross-field checks (need the whole scenario)


def _cross_problems(scenario: Scenario) -> list[tuple[Loc, str]]:
    """Problems that involve several parts of a validated scenario, each with its location."""
    problems: list[tuple[Loc, str]] = []

    def add(message: str, *loc: Any) -> None:
        problems.append((loc, message))

    hosts = scenario.hosts
    host_names = scenario.host_names()
    host_set = set(host_names)
    known_hosts = f"(hosts: {_some(host_names)})"
    if RESERVED_HOST_NAME in host_set:
        add(f"{RESERVED_HOST_NAME!r} is reserved for the shared-storage store", "hosts", "names")

    # Devices referenced by name.
    for device, loc in (
        (hosts.swap.device, ("hosts", "swap", "device")),
        (scenario.shared_storage.device, ("shared_storage", "device")),
    ):
        defined = scenario.devices.get(device)
        if device in BUILTIN_DEVICES:
            continue
        if defined is None:
            builtin = ", ".join(BUILTIN_DEVICES)
            add(
                f"unknown device {device!r} (built-in: {builtin}; or define it under devices)", *loc
            )
        elif defined.missing():
            missing = ", ".join(defined.missing())
            add(f"device {device!r} is not built-in, so devices.{device} must set {missing}", *loc)

    # Guests: unique expanded names, known hosts, sizes that fit.
    total = sum(group.count for group in scenario.guests)
    guest_names: set[str] | None = None
    if total > MAX_GUESTS:
        add(f"{total} guests in all; the limit is {MAX_GUESTS}", "guests")
    else:
        owner: dict[str, int] = {}
        for index, group in enumerate(scenario.guests):
            for name in _group_guest_names(group):
                if name == RESERVED_GUEST_NAME:
                    add(
                        f"{name!r} is reserved for the tmem pool's metadata",
                        "guests",
                        index,
                        "name",
                    )
                    break
                if name in owner:
                    other = "the same group" if owner[name] == index else f"guests[{owner[name]}]"
                    add(
                        f"guest name {name!r} is also used by {other} "
                        "(a group with count > 1 names its guests NAME-1, NAME-2, ...)",
                        *("guests", index, "name"),
                    )
                    break
                owner[name] = index
        guest_names = set(owner)
    usable = hosts.ram - hosts.reserve
    for index, group in enumerate(scenario.guests):
        if group.host is not None and group.host not in host_set:
            add(f"unknown host {group.host!r} {known_hosts}", "guests", index, "host")
        if group.memory > usable:
            add(
                f"guest memory {format_size(group.memory)} exceeds every host's RAM above "
                f"reserve ({format_size(usable)})",
                *("guests", index, "memory"),
            )
        elif (
            "host-swap" in scenario.mechanism_parts()
            and group.maxmem is not None
            and group.maxmem > usable
        ):
            add(
                f"with host-swap a guest sees maxmem of RAM, and maxmem "
                f"{format_size(group.maxmem)} exceeds every host's RAM above reserve "
                f"({format_size(usable)}): no guest may be larger than a host",
                *("guests", index, "maxmem"),
            )
        size = footprint(group.workload)
        if group.pinned * size > group.memory:
            add(
                f"pinned share {group.pinned:g} of the {format_size(size)} workload footprint "
                f"({format_size(group.pinned * size)}) does not fit in memory "
                f"{format_size(group.memory)}",
                *("guests", index, "pinned"),
            )
        for pi, phase in enumerate(getattr(group.workload, "phases", None) or []):
            if phase.pinned * size > group.memory:
                add(
                    f"pinned share {phase.pinned:g} of the {format_size(size)} workload "
                    f"footprint ({format_size(phase.pinned * size)}) does not fit in memory "
                    f"{format_size(group.memory)}",
                    *("guests", index, "workload", "phases", pi, "pinned"),
                )

    # Events: inside the run, naming things that exist.
    for index, event in enumerate(scenario.events):
        if event.at >= scenario.duration:
            add(
                f"event at {format_duration(event.at)} is not before the end of the run "
                f"(duration {format_duration(scenario.duration)})",
                *("events", index, "at"),
            )
        action, target = event.action, event.target
        if EVENT_ACTIONS[action] == "host" and target not in host_set:
            add(f"unknown host {target!r} {known_hosts}", "events", index, action)
        elif EVENT_ACTIONS[action] == "guest" and guest_names and target not in guest_names:
            known = _some(scenario.guest_names())
            add(f"unknown guest {target!r} (guests: {known})", "events", index, action)
        if event.to is not None and event.to not in host_set:
            add(f"unknown host {event.to!r} {known_hosts}", "events", index, "to")
    if scenario.chaos is not None:
        for index, name in enumerate(scenario.chaos.targets or []):
            if name not in host_set:
                add(f"unknown host {name!r} {known_hosts}", "chaos", "targets", index)
        if scenario.chaos.start >= scenario.duration:
            add(
                f"chaos starts at {format_duration(scenario.chaos.start)}, not before the end "
                f"of the run (duration {format_duration(scenario.duration)})",
                "chaos",
                "start",
            )

    # External Redis: exactly one URL per host.
    if scenario.redis.hosts is not None:
        for name in scenario.redis.hosts:
            if name not in host_set:
                add(f"unknown host {name!r} {known_hosts}", "redis", "hosts", name)
        missing = [name for name in host_names if name not in scenario.redis.hosts]
        if missing:
            add(f"no Redis URL for host {_some(missing)}; give one per host", "redis", "hosts")
    return problems
