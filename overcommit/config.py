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
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from overcommit.units import (
    format_duration,
    format_size,
    parse_bandwidth,
    parse_duration,
    parse_fraction,
    parse_rate,
    parse_size,
    show,
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
    "ZramSettings",
    "ZswapSettings",
    "apply_overrides",
    "footprint",
    "load_scenario",
    "load_scenario_text",
    "parse_conditions",
    "set_path",
]

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
)

#: Balloon driver profiles (see overcommit.profiles.BALLOON_DRIVERS).
BALLOON_DRIVERS: tuple[str, ...] = ("virtio", "virtio-sg", "vmw")

#: Device profiles every scenario may name without defining them under ``devices``.
BUILTIN_DEVICES: tuple[str, ...] = ("nvme", "ssd", "hdd", "san")

#: Timeline event actions and what their value names: a ``"host"`` or a (expanded) ``"guest"``.
#: Each action is also an optional field of :class:`Event` (checked at import time).
EVENT_ACTIONS: dict[str, str] = {
    "tmem_freeze": "host",
    "tmem_thaw": "host",
    "tmem_flush": "guest",
    "host_reclaim": "host",
    "host_release": "host",
    "fail_host": "host",
    "recover_host": "host",
    "tmem_backend_failure": "host",
    "stop_cooperating": "guest",
    "slow_storage": "storage",
    "migrate": "guest",
    "evacuate": "host",
    "network": "storage",
}

#: Fault kinds a chaos schedule may draw (``chaos.faults``).
CHAOS_FAULTS: tuple[str, ...] = ("fail_host", "tmem_backend_failure", "slow_storage")

#: Values of ``guests[].workload.kind``.
WORKLOAD_KINDS: tuple[str, ...] = ("zipf", "phases", "trace")

#: Upper bounds that keep a scenario within what one emulator run can hold.
MAX_HOSTS = 10_000
MAX_GUESTS = 100_000

#: At most this many problems are listed in one ConfigError (then a summary line).
MAX_PROBLEMS = 100

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
#: Names the stores use for themselves (the shared-storage server; the tmem metadata hash).
RESERVED_HOST_NAME = "shared"
RESERVED_GUEST_NAME = "meta"
_CONDITION_NAME = r"[a-z_][a-z0-9_.]*"
_CONDITION_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_CONDITION_RE = re.compile(
    rf"^\s*(?P<name>{_CONDITION_NAME})\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>{_CONDITION_NUMBER})"
    r"(?:\s+within\s+(?P<within>\S+)\s+of\s+each\s+failure)?\s*$"
)
_AND_RE = re.compile(r"\s+and\s+")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_DEFER_CROSS_CHECKS = "overcommit.config.defer_cross_checks"


# --------------------------------------------------------------------------------------------
# Problems and errors


class Problem(NamedTuple):
    """One located problem in a scenario: ``SOURCE:LINE: FIELD: MESSAGE``."""

    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.field}: {self.message}"


class ConfigError(Exception):
    """A scenario could not be loaded; ``problems`` lists every located problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.problems,))

    @classmethod
    def single(cls, source: str, field: str, message: str, line: int | None = None) -> ConfigError:
        """Build an error holding one problem."""
        return cls([Problem(source, line, field, message)])


# --------------------------------------------------------------------------------------------
# Value types


def _only_value_errors(parser: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a parser so that anything it raises reaches pydantic as a ValueError."""

    def validate(value: Any) -> Any:
        try:
            return parser(value)
        except ValueError:
            raise
        except Exception as exc:  # e.g. OverflowError on absurd input
            raise ValueError(f"invalid value {show(value)} ({exc})") from None

    validate.__name__ = getattr(parser, "__name__", "validate")
    return validate


def _reject_bool(kind: str) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected {kind}, got {show(value)}")
        return value

    return validate


def _name_input(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid name {show(value)}: use letters, digits, '_', '.' and '-' only (like web-1)"
        )
    return value


def _check_redis_url(value: str) -> str:
    if not value.startswith(_REDIS_SCHEMES):
        raise ValueError(
            "expected a Redis URL starting with redis://, rediss:// or unix:// "
            f"(like redis://127.0.0.1:6379/0), got {show(value)}"
        )
    return value


def _empty_mapping(value: Any) -> Any:
    """An empty YAML value (``runtime:``) means "all defaults"."""
    return {} if value is None else value


def _empty_list(value: Any) -> Any:
    return [] if value is None else value


def _str_to_list(value: Any) -> Any:
    """A single hypothesis string is a one-item list."""
    return [value] if isinstance(value, str) else _empty_list(value)


_EMPTY_IS_DEFAULT = BeforeValidator(_empty_mapping)
_EMPTY_LIST = BeforeValidator(_empty_list)


Size = Annotated[int, BeforeValidator(_only_value_errors(parse_size))]
"""Bytes; accepts ``4GiB``, ``512MB``, ``4096``."""
Duration = Annotated[float, BeforeValidator(_only_value_errors(parse_duration))]
"""Seconds; accepts ``100ms``, ``1.5s``, ``30m``."""
Rate = Annotated[float, BeforeValidator(_only_value_errors(parse_rate))]
"""Events per second; accepts ``200k/s``, ``20000``."""
Bandwidth = Annotated[float, BeforeValidator(_only_value_errors(parse_bandwidth))]
"""Bytes per second; accepts ``128MiB/s``, ``10Gbit/s``."""
Fraction = Annotated[float, BeforeValidator(_only_value_errors(parse_fraction))]
"""A number in [0, 1]; accepts ``20%``, ``0.2``."""

PositiveSize = Annotated[int, BeforeValidator(_only_value_errors(parse_size)), Field(gt=0)]
PositiveDuration = Annotated[
    float, BeforeValidator(_only_value_errors(parse_duration)), Field(gt=0)
]
PositiveRate = Annotated[float, BeforeValidator(_only_value_errors(parse_rate)), Field(gt=0)]
PositiveBandwidth = Annotated[
    float, BeforeValidator(_only_value_errors(parse_bandwidth)), Field(gt=0)
]
Int = Annotated[int, BeforeValidator(_reject_bool("an integer"))]
Float = Annotated[float, BeforeValidator(_reject_bool("a number"))]
Name = Annotated[str, BeforeValidator(_name_input), AfterValidator(_check_name)]
RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _default(model: type[_Model]) -> Any:
    """Field default for a sub-model, built fresh for each instance."""
    return Field(default_factory=model)


# --------------------------------------------------------------------------------------------
# Models


class Runtime(_Model):
    """Where the emulation runs: `ray` (hosts as Ray actors; guests as actors of their own or
    packed inside their host's actor) or `inline` (one process)."""

    kind: Literal["inline", "ray"] = "ray"
    guests: Literal["actors", "packed"] = "actors"
    address: str | None = None
    pin: Literal["spread", "resource"] = "spread"


class HostSwap(_Model):
    """Host swap device (used by host-level swapping mechanisms)."""

    device: Name = "ssd"
    size: Size = 0
    policy: Literal["random", "lru"] = "random"


class Tmem(_Model):
    """Host transcendent-memory pool settings."""

    max: Size | None = None
    exclusive_gets: bool = False
    compress: bool = False
    dedup: bool = False


class Hosts(_Model):
    """All hosts share one specification; ``count`` of them are created."""

    count: Int = Field(1, ge=1, le=MAX_HOSTS)
    names: list[Name] | None = None
    ram: PositiveSize
    reserve: Size = 0
    boot: Literal["eager", "lazy"] = "eager"
    swap: Annotated[HostSwap, _EMPTY_IS_DEFAULT] = _default(HostSwap)
    tmem: Annotated[Tmem, _EMPTY_IS_DEFAULT] = _default(Tmem)

    @model_validator(mode="before")
    @classmethod
    def _count_from_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "count" not in data and isinstance(data.get("names"), list):
            data = {**data, "count": len(data["names"])}
        return data

    @field_validator("names")
    @classmethod
    def _check_names(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if names is None:
            return names
        count = info.data.get("count")
        if count is not None and len(names) != count:
            raise ValueError(f"{len(names)} names given for {count} hosts (hosts.count)")
        duplicate = _first_duplicate(names)
        if duplicate is not None:
            raise ValueError(f"host name {duplicate!r} is given twice")
        return names

    @field_validator("reserve")
    @classmethod
    def _check_reserve(cls, reserve: int, info: ValidationInfo) -> int:
        ram = info.data.get("ram")
        if ram is not None and reserve >= ram:
            raise ValueError(
                f"reserve {format_size(reserve)} must be less than ram {format_size(ram)}"
            )
        return reserve


class SharedStorage(_Model):
    """Storage that survives host death (holds the guests' swap disks)."""

    device: Name = "san"


class DeviceOverride(_Model):
    """Overrides of a built-in device profile, or a full definition of a new device."""

    read_latency: Duration | None = None
    write_latency: Duration | None = None
    iops: PositiveRate | None = None
    bandwidth: PositiveBandwidth | None = None

    def missing(self) -> list[str]:
        """Names of the fields left unset (a new device must set all of them)."""
        return [name for name in type(self).model_fields if getattr(self, name) is None]


class Costs(_Model):
    """Overrides of per-operation costs charged in emulated time (None = built-in default)."""

    hypercall: Duration | None = None
    tmem_put: Duration | None = None
    tmem_get: Duration | None = None
    tmem_flush: Duration | None = None
    minor_fault: Duration | None = None
    major_fault: Duration | None = None
    host_page_alloc: Duration | None = None
    ram_bandwidth: PositiveBandwidth | None = None
    io_exit: Duration | None = None
    compress_bandwidth: PositiveBandwidth | None = None
    decompress_bandwidth: PositiveBandwidth | None = None
    tmem_compress_factor: Float | None = Field(None, ge=1)


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


class RedisConfig(_Model):
    """External Redis servers (default: the emulator starts its own)."""

    hosts: dict[Name, RedisUrl] | None = None
    shared: RedisUrl | None = None
    socket: Literal["unix", "tcp"] = "unix"
    prefix: str = "oc"
    # how long a store may leave a request unanswered before the run fails (a hung server)
    timeout: PositiveDuration = 30.0

    @model_validator(mode="after")
    def _both_or_neither(self) -> RedisConfig:
        if (self.hosts is None) != (self.shared is None):
            given, absent = ("hosts", "shared") if self.shared is None else ("shared", "hosts")
            raise ValueError(
                f"redis.{given} is given but redis.{absent} is not; give both or neither"
            )
        return self


class HA(_Model):
    """High-availability admission control and the restart controller."""

    admission: Literal["none", "host-failures", "percentage"] = "none"
    tolerate: Int = Field(1, ge=0)
    percentage: Fraction = 0.25
    count_tmem: bool = False
    detection: Duration = 5.0
    restart_deadline: PositiveDuration = 120.0
    boot_time: Duration = 0.0


class MigrationSettings(_Model):
    """Live migration (QEMU's defaults where it has them)."""

    mode: Literal["precopy", "postcopy"] = "precopy"
    postcopy_after: Int = Field(1, ge=1)
    downtime_limit: PositiveDuration = 0.3
    bandwidth: PositiveBandwidth = 128 * 2**20
    nic: PositiveBandwidth = 10e9 / 8
    max_rounds: Int = Field(30, ge=1)
    auto_converge: bool = True
    throttle_initial: Fraction = 0.2
    throttle_step: Fraction = 0.1
    throttle_max: Fraction = 0.99
    tmem: Literal["xen", "flush-to-swap"] = "xen"
    concurrency: Int = Field(2, ge=1)
    fault_latency: Duration = 200e-6
    zero_page_bytes: Size = 16
    deadline: PositiveDuration = 120.0


class SlowStorage(_Model):
    """A `slow_storage` event: shared storage runs at `factor` of its IOPS and bandwidth."""

    factor: Annotated[float, Field(gt=0.0, le=1.0)]
    duration: PositiveDuration


class NetworkDrop(_Model):
    """A `network` event: bandwidth between hosts (every NIC, every migration's limit) drops
    to `factor` for a while."""

    factor: Annotated[float, Field(gt=0.0, le=1.0)]
    duration: PositiveDuration


class Chaos(_Model):
    """Seeded random faults: per target host, failures every `mtbf` on average (exponential),
    each repaired after `mttr` on average."""

    mtbf: PositiveDuration
    mttr: PositiveDuration = 300.0
    targets: list[Name] | None = None
    faults: list[Literal["fail_host", "tmem_backend_failure", "slow_storage"]] = Field(
        default_factory=lambda: ["fail_host"], min_length=1
    )
    start: Duration = 0.0
    slow_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    seed: Int | None = Field(None, ge=0)


class Watermarks(_Model):
    """Guest free-memory watermarks as fractions of guest memory."""

    min: Fraction = 0.01
    low: Fraction = Field(0.02, validate_default=True)
    high: Fraction = Field(0.03, validate_default=True)

    @field_validator("low")
    @classmethod
    def _check_low(cls, low: float, info: ValidationInfo) -> float:
        lowest = info.data.get("min")
        if lowest is not None and not low > lowest:
            raise ValueError(f"low ({low:g}) must be greater than min ({lowest:g})")
        return low

    @field_validator("high")
    @classmethod
    def _check_high(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if low is not None and not high > low:
            raise ValueError(f"high ({high:g}) must be greater than low ({low:g})")
        if not high < 1:
            raise ValueError(f"high ({high:g}) must be less than 1")
        return high


class ZipfWorkload(_Model):
    """Page touches drawn from a Zipf distribution over a fixed working set."""

    kind: Literal["zipf"]
    working_set: PositiveSize
    access_rate: PositiveRate
    write_fraction: Fraction = 0.3
    skew: Float = Field(0.99, ge=0)
    compressibility: Fraction = 0.5
    duplicates: Fraction = 0.0
    file_cache: Fraction = 0.0

    @property
    def footprint(self) -> int:
        """Bytes the workload can touch."""
        return self.working_set


class Phase(_Model):
    """One phase of a phased workload."""

    duration: PositiveDuration
    working_set: Size
    access_rate: Rate
    write_fraction: Fraction = 0.3
    skew: Float = Field(0.99, ge=0)
    pinned: Fraction = 0.0


class PhasesWorkload(_Model):
    """A sequence of Zipf phases, optionally repeated."""

    kind: Literal["phases"]
    phases: list[Phase] = Field(min_length=1)
    repeat: bool = True
    compressibility: Fraction = 0.5
    duplicates: Fraction = 0.0
    file_cache: Fraction = 0.0

    @property
    def footprint(self) -> int:
        """Bytes the workload can touch (the largest phase working set)."""
        return max(phase.working_set for phase in self.phases)


class TracePoint(NamedTuple):
    """One row of a trace: from `time` on, this working set, touch rate and write fraction."""

    time: float
    working_set: int
    touch_rate: float
    write_fraction: float


TRACE_COLUMNS = ("time", "working_set", "touch_rate", "write_fraction")
_BASE_DIR = "overcommit.config.base_dir"


def read_trace(path: str) -> tuple[TracePoint, ...]:
    """Rows of a trace CSV (header `time,working_set,touch_rate,write_fraction`; values with
    units like the scenario's: `30s`, `512MiB`, `20k/s`, `30%`; `#` starts a comment line).
    Raises ValueError, naming the row, for anything else."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ValueError(f"cannot read trace {path!r}: {exc.strerror or exc}") from None
    rows = [r for r in rows if r and not r[0].lstrip().startswith("#")]
    if not rows or [c.strip() for c in rows[0]] != list(TRACE_COLUMNS):
        raise ValueError(f"trace {path!r} must start with the header {','.join(TRACE_COLUMNS)}")
    points: list[TracePoint] = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 4:
            raise ValueError(f"trace {path!r} row {n}: expected 4 values, got {len(row)}")
        try:
            p = TracePoint(
                parse_duration(row[0].strip()),
                parse_size(row[1].strip()),
                parse_rate(row[2].strip()),
                parse_fraction(row[3].strip()),
            )
        except ValueError as exc:
            raise ValueError(f"trace {path!r} row {n}: {exc}") from None
        if points and p.time <= points[-1].time:
            raise ValueError(f"trace {path!r} row {n}: times must increase")
        if p.working_set <= 0:
            raise ValueError(f"trace {path!r} row {n}: working_set must be > 0")
        points.append(p)
    if not points:
        raise ValueError(f"trace {path!r} has no rows")
    if points[0].time != 0:
        raise ValueError(f"trace {path!r}: the first row must be at time 0")
    return tuple(points)


class TraceWorkload(_Model):
    """Replay of a CSV trace of (time, working set, touch rate, write fraction)."""

    kind: Literal["trace"]
    file: str
    skew: Float = Field(0.99, ge=0)
    compressibility: Fraction = 0.5
    duplicates: Fraction = 0.0
    file_cache: Fraction = 0.0
    _points: tuple[TracePoint, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> TraceWorkload:
        base = (info.context or {}).get(_BASE_DIR) or "."
        path = self.file if os.path.isabs(self.file) else os.path.join(base, self.file)
        self._points = read_trace(path)
        return self

    @property
    def points(self) -> tuple[TracePoint, ...]:
        """The trace's rows, read when the scenario was loaded."""
        return self._points

    @property
    def footprint(self) -> int:
        """Bytes the workload can touch (the largest working set of the trace)."""
        return max(p.working_set for p in self._points)


Workload = Annotated[
    Union[ZipfWorkload, PhasesWorkload, TraceWorkload],  # noqa: UP007
    Field(discriminator="kind"),
]


def footprint(workload: ZipfWorkload | PhasesWorkload | TraceWorkload) -> int:
    """Bytes a workload can touch: its working set, or the largest phase working set."""
    return workload.footprint


class GuestGroup(_Model):
    """``count`` identical guests (one entry of ``guests``)."""

    name: Name
    count: Int = Field(1, ge=1, le=MAX_GUESTS)
    memory: PositiveSize
    maxmem: Size | None = None
    swap: Size | None = None
    cooperative: bool = True
    cooperation: Fraction = 1.0
    host: Name | None = None
    priority: Int = 0
    pinned: Fraction = 0.0
    readahead: Int = Field(8, ge=1, le=256)
    lru: Literal["clock", "lru"] = "clock"
    watermarks: Annotated[Watermarks, _EMPTY_IS_DEFAULT] = _default(Watermarks)
    oom_restart: Duration = 5.0
    workload: Workload

    @field_validator("maxmem")
    @classmethod
    def _check_maxmem(cls, maxmem: int | None, info: ValidationInfo) -> int | None:
        memory = info.data.get("memory")
        if maxmem is not None and memory is not None and maxmem < memory:
            raise ValueError(
                f"maxmem {format_size(maxmem)} is below memory {format_size(memory)}; "
                "maxmem must be at least memory (leave it out to use memory)"
            )
        return maxmem


class Event(_Model):
    """A timeline event: ``at`` plus exactly one action key (see EVENT_ACTIONS)."""

    at: Duration
    tmem_freeze: Name | None = None
    tmem_thaw: Name | None = None
    tmem_flush: Name | None = None
    host_reclaim: Name | None = None
    host_release: Name | None = None
    fail_host: Name | None = None
    recover_host: Name | None = None
    tmem_backend_failure: Name | None = None
    stop_cooperating: Name | None = None
    slow_storage: SlowStorage | None = None
    migrate: Name | None = None
    evacuate: Name | None = None
    network: NetworkDrop | None = None
    to: Name | None = None  # migrate: the destination host
    mode: Literal["precopy", "postcopy"] | None = None  # migrate: overrides migration.mode
    _chaos: bool = PrivateAttr(default=False)  # drawn by the scenario's chaos schedule

    @model_validator(mode="after")
    def _one_action(self) -> Event:
        if self.migrate is None and (self.to is not None or self.mode is not None):
            key = "to" if self.to is not None else "mode"
            raise ValueError(f"'{key}' belongs to a migrate event")
        if self.migrate is not None and self.to is None:
            raise ValueError("a migrate event needs 'to: HOST', the destination")
        given = [name for name in EVENT_ACTIONS if getattr(self, name) is not None]
        if not given:
            raise ValueError(f"event needs one action key: {_or_list(list(EVENT_ACTIONS))}")
        if len(given) > 1:
            raise ValueError(
                f"event has {len(given)} actions ({', '.join(given)}); give one per event"
            )
        return self

    @property
    def action(self) -> str:
        """The action key, e.g. ``tmem_freeze``."""
        return next(name for name in EVENT_ACTIONS if getattr(self, name) is not None)

    @property
    def target(self) -> Any:
        """The host or guest name the action applies to (a `SlowStorage` for slow_storage)."""
        return getattr(self, self.action)

    def file_form(self) -> dict[str, Any]:
        """The event as written in a scenario file (``{"at": 12.0, "fail_host": "host-1"}``)."""
        target = self.target
        if isinstance(target, BaseModel):
            target = target.model_dump(mode="json")
        out = {"at": self.at, self.action: target}
        if self.to is not None:
            out["to"] = self.to
        if self.mode is not None:
            out["mode"] = self.mode
        return out


if set(EVENT_ACTIONS) != set(Event.model_fields) - {
    "at",
    "to",
    "mode",
}:  # pragma: no cover - import guard
    raise RuntimeError("EVENT_ACTIONS and the fields of Event disagree")


class Limits(_Model):
    """Resource budgets checked before a run."""

    store_memory: PositiveSize | None = None


class Condition(NamedTuple):
    """One steady-state hypothesis clause: ``name op value``, optionally ``within D of each
    failure`` (the figure measured over the 10 s from D after each host failure)."""

    name: str
    op: str
    value: float
    within: float | None = None

    def holds(self, actual: float) -> bool:
        """Whether ``actual`` satisfies this condition."""
        return {
            "==": actual == self.value,
            "!=": actual != self.value,
            ">=": actual >= self.value,
            "<=": actual <= self.value,
            ">": actual > self.value,
            "<": actual < self.value,
        }[self.op]

    def __str__(self) -> str:
        text = f"{self.name} {self.op} {self.value:g}"
        if self.within is not None:
            text += f" within {format_duration(self.within)} of each failure"
        return text


def parse_conditions(text: str) -> list[Condition]:
    """Parse ``NAME OP NUMBER [and NAME OP NUMBER ...]``; raises ValueError on bad syntax."""
    if not isinstance(text, str):
        raise ValueError(f"expected a condition like 'restart_failures == 0', got {show(text)}")
    conditions = []
    for clause in _AND_RE.split(text.strip()):
        match = _CONDITION_RE.match(clause)
        value = float(match.group("value")) if match else math.nan
        if match is None or not math.isfinite(value):
            raise ValueError(
                "expected NAME OP NUMBER like 'restart_failures == 0' or "
                f"'progress >= 0.8 and oom_kills == 0' (OP one of == != >= <= > <; optionally "
                "'within DURATION of each failure'), "
                f"got {show(clause)}"
            )
        within = None
        if match.group("within") is not None:
            try:
                within = parse_duration(match.group("within"))
            except ValueError as exc:
                raise ValueError(f"in {show(clause)}: {exc}") from None
        conditions.append(Condition(match.group("name"), match.group("op"), value, within))
    return conditions


def _check_hypothesis(text: str) -> str:
    parse_conditions(text)
    return text


@dataclass(frozen=True)
class GuestSpec:
    """One expanded guest, with maxmem and swap resolved."""

    name: str
    group: int
    memory: int
    maxmem: int
    swap: int
    cooperative: bool
    cooperation: float
    host: str | None
    priority: int
    pinned: float
    readahead: int
    lru: str
    watermarks: Watermarks
    oom_restart: float
    workload: ZipfWorkload | PhasesWorkload | TraceWorkload

    @property
    def footprint(self) -> int:
        """Bytes the workload can touch."""
        return self.workload.footprint


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
        if not isinstance(value, str):
            raise ValueError(f"expected a mechanism name like 'frontswap', got {show(value)}")
        normalized = "".join(value.split())
        parts = normalized.split("+")
        if "" in parts:
            raise ValueError(
                f"empty name in mechanism {show(value)}; join names with '+' "
                "like 'frontswap+balloon'"
            )
        unknown = [part for part in parts if part not in MECHANISMS]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            names = ", ".join(repr(name) for name in unknown)
            raise ValueError(f"unknown mechanism{plural} {names} (known: {', '.join(MECHANISMS)})")
        if "none" in parts and len(parts) > 1:
            raise ValueError("'none' cannot be combined with other mechanisms")
        duplicate = _first_duplicate(parts)
        if duplicate is not None:
            raise ValueError(f"mechanism {duplicate!r} is given twice")
        from overcommit.nodes.mechanism import CONFLICTS

        for i, a in enumerate(parts):
            for b in parts[i + 1 :]:
                why = CONFLICTS.get(frozenset({a, b}))
                if why is not None:
                    raise ValueError(f"'{a}' and '{b}' cannot be combined: {why}")
        return normalized

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
                    )
                )
        return specs

    def guest_names(self) -> list[str]:
        """Expanded guest names in declaration order."""
        return [name for group in self.guests for name in _group_guest_names(group)]

    @staticmethod
    def footprint(workload: ZipfWorkload | PhasesWorkload | TraceWorkload) -> int:
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

Loc = tuple[Any, ...]


def _group_guest_names(group: GuestGroup) -> list[str]:
    if group.count == 1:
        return [group.name]
    return [f"{group.name}-{index}" for index in range(1, group.count + 1)]


def _first_duplicate(items: Iterable[Any]) -> Any:
    seen: set[Any] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def _or_list(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def _some(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


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


# --------------------------------------------------------------------------------------------
# YAML with locations


class _Document:
    """Parsed YAML: the Python data plus the node graph for finding the line of a path."""

    def __init__(self, data: Any, root: yaml.Node) -> None:
        self.data = data
        self.root = root
        self._constructor = yaml.constructor.SafeConstructor()

    def _key(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception:
            return node.value

    def line(self, loc: Loc) -> int:
        """1-based line of the deepest node that exists on ``loc``.

        Stepping into a mapping uses the line of the key; into a sequence, the item's line.
        """
        node = self.root
        line = node.start_mark.line + 1
        for item in loc:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in reversed(node.value):
                    key = self._key(key_node)
                    if type(key) is type(item) and key == item:
                        line = key_node.start_mark.line + 1
                        node = value_node
                        break
                else:
                    break
            elif (
                isinstance(node, yaml.SequenceNode)
                and type(item) is int
                and 0 <= item < len(node.value)
            ):
                node = node.value[item]
                line = node.start_mark.line + 1
            else:
                break
        return line


def _yaml_problem(exc: Exception, source: str, text: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = None
    if mark is not None:
        line_count = max(1, len(text.splitlines()))
        line = min(mark.line + 1, line_count)
    if isinstance(exc, yaml.MarkedYAMLError):
        problem, context = exc.problem or "", exc.context or ""
        if problem.startswith("but ") or not problem:
            problem, context = f"{context} {problem}".strip(), ""
        message = problem
        if exc.problem_mark is not None:
            message += f" at column {exc.problem_mark.column + 1}"
        if context:
            start = exc.context_mark
            where = f" started on line {start.line + 1}" if start is not None else ""
            message += f" ({context}{where})"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(0, exc.position)) + 1
        message = str(exc).splitlines()[0]
    elif isinstance(exc, yaml.YAMLError):
        message = str(exc)
    elif isinstance(exc, RecursionError):
        message = "the document is nested too deeply"
    else:
        message = f"cannot read the YAML: {exc}"
    message = " ".join(message.split()) or type(exc).__name__
    return Problem(source, line, "(yaml)", f"invalid YAML: {message}")


def _duplicate_keys(root: yaml.Node, document_key: Callable[[yaml.Node], Any]) -> list[Loc]:
    """Paths of keys given twice in one mapping (before merge keys are expanded)."""
    found: list[Loc] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                key = document_key(key_node)
                if (
                    isinstance(key_node, yaml.ScalarNode)
                    and key_node.tag != "tag:yaml.org,2002:merge"
                ):
                    ident = (key_node.tag, key_node.value)
                    if ident in keys:
                        found.append((*path, key))
                    keys.add(ident)
                stack.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, (*path, index)))
    return found


class _Loader(yaml.SafeLoader):
    """SafeLoader whose value errors (a bad date, a huge number) carry the node's position."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {show(node.value)}: {exc}", node.start_mark
            ) from None


def _parse_yaml(text: str, source: str) -> tuple[_Document | None, list[Problem]]:
    """Parse text; return the document (None when unusable) and any problems found."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is None:
            return None, [
                Problem(
                    source,
                    None,
                    "(top level)",
                    "the file is empty; expected a scenario (name, duration, hosts, guests, ...)",
                )
            ]
        document = _Document(None, root)
        duplicates = _duplicate_keys(root, document._key)
        document.data = loader.construct_document(root)
    except Exception as exc:  # YAMLError, and e.g. ValueError from a bad timestamp
        return None, [_yaml_problem(exc, source, text)]
    finally:
        if loader is not None:
            loader.dispose()
    problems = [
        Problem(source, document.line(loc), _field(loc), "key given twice (the last one counts)")
        for loc in duplicates
    ]
    if not isinstance(document.data, dict):
        kind = _kind_of(document.data)
        problems.append(
            Problem(
                source,
                root.start_mark.line + 1,
                "(top level)",
                f"expected a mapping of scenario keys (name, duration, hosts, guests, ...), "
                f"got {kind}",
            )
        )
        return None, problems
    return document, problems


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {show(value)}"
    if value is None:
        return "nothing"
    return show(value)


# --------------------------------------------------------------------------------------------
# Turning pydantic errors into problems

_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _field(loc: Loc) -> str:
    """Dotted path with list indices: ``guests[0].workload.working_set``."""
    text = ""
    for item in loc:
        if type(item) is int:
            text += f"[{item}]"
        elif isinstance(item, str) and _SIMPLE_KEY.fullmatch(item):
            text += f".{item}" if text else item
        else:
            text += f"[{show(item)}]"
    return text or "(top level)"


def _clean_loc(loc: Loc) -> Loc:
    """Drop pydantic's synthetic loc parts: union tags and ``[key]`` markers."""
    cleaned: list[Any] = []
    for index, item in enumerate(loc):
        if item == "[key]":
            continue
        if index and loc[index - 1] == "workload" and item in WORKLOAD_KINDS:
            continue
        cleaned.append(item)
    return tuple(cleaned)


def _strip_type(tp: Any, data: Any) -> Any:
    """Unwrap Annotated / Optional / discriminated unions down to one type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
            kind = data.get("kind") if isinstance(data, dict) else None
            for member in members:
                field = getattr(member, "model_fields", {}).get("kind")
                if field is not None and kind in get_args(field.annotation):
                    return member
            return None
        else:
            return tp


def _model_at(loc: Loc, data: Any) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (None if not a model)."""
    tp: Any = Scenario
    for item in loc:
        tp = _strip_type(tp, data)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
        try:
            data = data[item]
        except Exception:
            data = None
    tp = _strip_type(tp, data)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unknown_key_message(loc: Loc, data: Any) -> str:
    key = loc[-1] if loc else None
    message = f"unknown key {show(key)}"
    model = _model_at(loc[:-1], data)
    if model is None:
        return message
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message} (allowed: {', '.join(allowed)})"


_SIMPLE_MESSAGES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "invalid_key": "mapping keys must be strings",
}


def _describe(error: Mapping[str, Any], loc: Loc, data: Any) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc, data)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {show(value)}"
    if kind == "union_tag_invalid":
        return f"unknown workload kind {show(ctx.get('tag'))} (known: {', '.join(WORKLOAD_KINDS)})"
    if kind == "union_tag_not_found":
        return f"missing 'kind' (one of: {', '.join(WORKLOAD_KINDS)})"
    if kind in _SIMPLE_MESSAGES:
        return f"{_SIMPLE_MESSAGES[kind]}, got {show(value)}"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}, got {show(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {show(value)}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}, got {show(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {show(value)}"
    if kind == "too_short":
        least = ctx.get("min_length")
        return f"needs at least {least} entr{'y' if least == 1 else 'ies'}"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} entries"
    if kind == "recursion_loop":
        return "refers to itself (YAML alias loop)"
    message = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "invalid value"


# --------------------------------------------------------------------------------------------
# Loading


def _build(
    *,
    text: str | None,
    base: Any,
    source: str,
    overrides: Sequence[tuple[str, Any, str]],
) -> Scenario:
    """Parse (if text), apply overrides, validate, cross-check; raise ConfigError on problems."""
    document: _Document | None = None
    problems: list[Problem] = []
    if text is not None:
        document, problems = _parse_yaml(text, source)
        if document is None:
            raise ConfigError(problems)
        data = document.data
    else:
        data = copy.deepcopy(base)

    applied: list[tuple[Loc, str, str]] = []
    for path, value, override_source in overrides:
        try:
            applied.append((set_path(data, path, value), path, override_source))
        except ValueError as exc:
            problems.append(Problem(override_source, None, path or "(empty path)", str(exc)))
    if problems:
        raise ConfigError(problems)

    def locate(loc: Loc, message: str) -> Problem:
        for steps, path, override_source in reversed(applied):
            if loc[: len(steps)] == steps:
                rest = _field(loc[len(steps) :]) if len(loc) > len(steps) else ""
                field = path + ("" if not rest else ("" if rest.startswith("[") else ".") + rest)
                return Problem(override_source, None, field, _one_line(message))
            if steps[: len(loc)] == loc:
                return Problem(override_source, None, path, _one_line(message))
        if applied:
            message += " (after command-line overrides)"
        line = document.line(loc) if document is not None else None
        return Problem(source, line, _field(loc), _one_line(message))

    try:
        base_dir = os.path.dirname(os.path.abspath(source)) if os.path.exists(source) else "."
        scenario = Scenario.model_validate(
            data, context={_DEFER_CROSS_CHECKS: True, _BASE_DIR: base_dir}
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = _clean_loc(tuple(error.get("loc", ())))
            problems.append(locate(loc, _describe(error, loc, data)))
        raise ConfigError(_limit(_sorted(problems))) from None
    for loc, message in _cross_problems(scenario):
        problems.append(locate(loc, message))
    if problems:
        raise ConfigError(_limit(_sorted(problems)))
    scenario._source = source
    scenario._text = text
    scenario._base = base if text is None else None
    scenario._overrides = tuple(overrides)
    return scenario


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _limit(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    last = problems[MAX_PROBLEMS]
    return [
        *problems[:MAX_PROBLEMS],
        Problem(last.source, None, "(more)", f"{rest} more problems not shown"),
    ]


def _guard(source: str, build: Callable[[], Scenario]) -> Scenario:
    try:
        return build()
    except ConfigError:
        raise
    except Exception as exc:  # last line of defence: bad input must never give a traceback
        message = _one_line(f"cannot load the scenario: {type(exc).__name__}: {exc}")
        raise ConfigError.single(source, "(top level)", message) from exc


def load_scenario_text(text: str, source: str = "<string>") -> Scenario:
    """Load a scenario from YAML text; raise ConfigError (only) for bad input."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError.single(
                source, "(file)", f"not UTF-8 text (bad byte at offset {exc.start})"
            ) from None
    if not isinstance(text, str):
        raise ConfigError.single(source, "(file)", f"expected YAML text, got {show(text)}")
    return _guard(source, lambda: _build(text=text, base=None, source=source, overrides=()))


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Load a scenario file; raise ConfigError (only) for a missing, unreadable or bad file."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError.single(source, "(file)", "file not found") from None
    except IsADirectoryError:
        raise ConfigError.single(source, "(file)", "is a directory, not a scenario file") from None
    except PermissionError:
        raise ConfigError.single(source, "(file)", "permission denied") from None
    except OSError as exc:
        raise ConfigError.single(
            source, "(file)", f"cannot read the file: {exc.strerror or exc}"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError.single(
            source, "(file)", f"not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    return load_scenario_text(text, source)


# --------------------------------------------------------------------------------------------
# Overrides


def _path_steps(path: str) -> list[str | int]:
    if not isinstance(path, str) or not path.strip():
        raise ValueError(
            "empty override path; use a dotted path like hosts.count or guests.0.count"
        )
    normalized = re.sub(r"\[(\d+)\]", r".\1", path.strip())
    steps: list[str | int] = []
    for part in normalized.split("."):
        if part == "":
            raise ValueError(f"malformed path {path!r}; use a dotted path like guests.0.count")
        steps.append(int(part) if part.isdigit() else part)
    return steps


def set_path(data: dict[str, Any], path: str, value: Any) -> Loc:
    """Set ``value`` at a dotted ``path`` (``hosts.count``, ``guests.0.count``) inside ``data``.

    Numeric parts index lists (``guests[0]`` is accepted too); missing mappings along the path
    are created. Containers along the path are copied before they are changed, so data shared
    through YAML aliases is not changed elsewhere. Returns the path as a tuple of keys and
    indices. Raises ValueError with a readable message when the path cannot be followed.
    """
    steps = _path_steps(path)
    if not isinstance(data, dict):
        raise ValueError(f"cannot set {path}: the scenario is not a mapping")
    node: Any = data
    for depth, step in enumerate(steps[:-1]):
        where = ".".join(str(s) for s in steps[: depth + 1])
        if isinstance(node, dict):
            child = node.get(step)
            if child is None:
                child = {}
            elif isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise ValueError(f"cannot set {path}: {where} is {show(child)}, not a mapping")
            node[step] = child
        elif isinstance(node, list):
            if not isinstance(step, int):
                raise ValueError(f"cannot set {path}: {where} needs a list index like 0")
            if not 0 <= step < len(node):
                raise ValueError(
                    f"cannot set {path}: index {step} is out of range "
                    f"(there are {len(node)} entries)"
                )
            child = node[step]
            if isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise ValueError(f"cannot set {path}: {where} is {show(child)}, not a mapping")
            node[step] = child
        node = child
    last = steps[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list):
        if not isinstance(last, int):
            raise ValueError(f"cannot set {path}: the last part must be a list index like 0")
        if not 0 <= last < len(node):
            raise ValueError(
                f"cannot set {path}: index {last} is out of range (there are {len(node)} entries)"
            )
        node[last] = value
    return tuple(steps)


def _override_value(value: Any) -> Any:
    """Strings that look like YAML flow collections (``[a, b]``, ``{k: v}``) are parsed."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(value)
        except Exception as exc:
            why = getattr(exc, "problem", None) or exc
            raise ValueError(f"cannot parse {show(value)} as YAML: {_one_line(str(why))}") from None
    return value


def apply_overrides(
    scenario: Scenario,
    overrides: Mapping[str, str | int | float],
    source: str = "command line",
) -> Scenario:
    """Apply ``path -> value`` overrides to the scenario's raw input and validate again.

    Values are used as given (the model parses ``"8GiB"`` or ``"42"``); a string starting with
    ``[`` or ``{`` is read as YAML. Problems inside an overridden path are reported as
    ``command line: PATH: MESSAGE``; others keep their file location.
    """
    added: list[tuple[str, Any, str]] = []
    problems: list[Problem] = []
    for path, value in overrides.items():
        try:
            added.append((path, _override_value(value), source))
        except ValueError as exc:
            problems.append(Problem(source, None, str(path), str(exc)))
    if problems:
        raise ConfigError(problems)
    if not added:
        return scenario
    text = scenario._text
    base = scenario._base
    if text is None and base is None:
        base = scenario.model_dump(mode="json", exclude_unset=True)
    origin = scenario._source
    return _guard(
        source,
        lambda: _build(
            text=text, base=base, source=origin, overrides=(*scenario._overrides, *added)
        ),
    )
