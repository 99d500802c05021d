"""Scenario configuration: pydantic models, YAML loading with located errors, expansion helpers.

A scenario file (see docs/config.md) is loaded with :func:`load_scenario` or
:func:`load_scenario_text`. Any problem with the input -- unreadable file, YAML syntax, unknown
key, bad value, inconsistent values -- raises :class:`ConfigError`, whose ``problems`` each name
the source, the line (when known), the field as a dotted path (``guests[0].workload.skew``) and a
readable message. Nothing else escapes the loaders for bad input.

The models are frozen; field names and defaults are the contract the engine reads.
:class:`Scenario` offers the expansion helpers (:meth:`Scenario.host_names`,
:meth:`Scenario.guest_specs`, :meth:`Scenario.conditions`, :meth:`Scenario.to_json`).
:func:`apply_overrides` applies command-line ``path=value`` overrides and validates again.
:func:`register_mechanism_name` lets a mechanism defined elsewhere be named by scenarios.

This package re-exports the public names of its modules, one per section of a scenario:
``common`` (base model, value types, errors), ``hosts``, ``guests`` (workloads), ``mechanisms``
(names, settings, conflicts, the registry), ``migration``, ``events`` (events, chaos, HA,
hypotheses), ``scenario`` (the model and its cross-field checks), ``yamldoc`` and ``errors``
(located problems) and ``loader`` (loading and overrides). It imports nothing from the model.
"""

# Context keys the loader passes to pydantic validation (kept importable here).
from overcommit.config.common import _BASE_DIR as _BASE_DIR
from overcommit.config.common import _DEFER_CROSS_CHECKS as _DEFER_CROSS_CHECKS
from overcommit.config.common import (
    MAX_GUESTS,
    MAX_HOSTS,
    MAX_PROBLEMS,
    RESERVED_GUEST_NAME,
    RESERVED_HOST_NAME,
    Bandwidth,
    ConfigError,
    Duration,
    Float,
    Fraction,
    Int,
    Loc,
    Name,
    PositiveBandwidth,
    PositiveDuration,
    PositiveRate,
    PositiveSize,
    Problem,
    Rate,
    RedisUrl,
    Size,
)
from overcommit.config.events import (
    CHAOS_FAULTS,
    EVENT_ACTIONS,
    HA,
    Chaos,
    Condition,
    Event,
    NetworkDrop,
    SlowStorage,
    parse_conditions,
)
from overcommit.config.guests import (
    TRACE_COLUMNS,
    WORKLOAD_KINDS,
    Burst,
    BurstsWorkload,
    DurationDist,
    GuestGroup,
    GuestSpec,
    Phase,
    PhasesWorkload,
    SweepWorkload,
    TracePoint,
    TraceWorkload,
    Watermarks,
    Workload,
    ZipfWorkload,
    footprint,
    read_trace,
)
from overcommit.config.hosts import (
    BUILTIN_DEVICES,
    Costs,
    DeviceOverride,
    Hosts,
    HostSwap,
    Limits,
    RedisConfig,
    Runtime,
    SharedStorage,
    Tmem,
)
from overcommit.config.loader import (
    apply_overrides,
    load_scenario,
    load_scenario_text,
    set_path,
)
from overcommit.config.mechanisms import (
    BALLOON_DRIVERS,
    CONFLICTS,
    MECHANISMS,
    STANDARD_COMBINATIONS,
    BalloonSettings,
    CachedDiskSettings,
    CleancacheSettings,
    PageSharingSettings,
    SelfballoonSettings,
    ZramSettings,
    ZswapSettings,
    known_mechanisms,
    mechanism_conflicts,
    register_mechanism_name,
)
from overcommit.config.migration import (
    MigrationSettings,
)
from overcommit.config.scenario import (
    Scenario,
)

__all__ = [
    "BALLOON_DRIVERS",
    "BUILTIN_DEVICES",
    "EVENT_ACTIONS",
    "MAX_GUESTS",
    "MAX_HOSTS",
    "MECHANISMS",
    "WORKLOAD_KINDS",
    "BalloonSettings",
    "CleancacheSettings",
    "Bandwidth",
    "CachedDiskSettings",
    "Condition",
    "ConfigError",
    "Costs",
    "DeviceOverride",
    "Duration",
    "Event",
    "Fraction",
    "GuestGroup",
    "GuestSpec",
    "HA",
    "CHAOS_FAULTS",
    "Chaos",
    "SlowStorage",
    "MigrationSettings",
    "NetworkDrop",
    "HostSwap",
    "Hosts",
    "Limits",
    "PageSharingSettings",
    "Phase",
    "PhasesWorkload",
    "Problem",
    "Rate",
    "RedisConfig",
    "Runtime",
    "Scenario",
    "SelfballoonSettings",
    "SharedStorage",
    "Size",
    "Tmem",
    "Watermarks",
    "Workload",
    "TraceWorkload",
    "ZipfWorkload",
    "SweepWorkload",
    "BurstsWorkload",
    "Burst",
    "DurationDist",
    "ZramSettings",
    "ZswapSettings",
    "apply_overrides",
    "footprint",
    "load_scenario",
    "load_scenario_text",
    "parse_conditions",
    "set_path",
    "CONFLICTS",
    "STANDARD_COMBINATIONS",
    "known_mechanisms",
    "mechanism_conflicts",
    "register_mechanism_name",
    "MAX_PROBLEMS",
    "RESERVED_GUEST_NAME",
    "RESERVED_HOST_NAME",
    "Float",
    "Int",
    "Loc",
    "Name",
    "PositiveBandwidth",
    "PositiveDuration",
    "PositiveRate",
    "PositiveSize",
    "RedisUrl",
    "TRACE_COLUMNS",
    "TracePoint",
    "read_trace",
]
