"""The guest side of a scenario: `GuestGroup`, `Watermarks`, the workloads (`ZipfWorkload`,
`PhasesWorkload` of `Phase`s, `TraceWorkload` with `read_trace`, `SweepWorkload`,
`BurstsWorkload` with `Burst` and `DurationDist`), `footprint`, and the expanded
`GuestSpec`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple, Union

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from overcommit.config.common import (
    _BASE_DIR,
    _EMPTY_IS_DEFAULT,
    MAX_GUESTS,
    Duration,
    Float,
    Fraction,
    Int,
    Name,
    PositiveDuration,
    PositiveRate,
    PositiveSize,
    Rate,
    Size,
    _default,
    _Model,
)
from overcommit.units import format_size, parse_duration, parse_fraction, parse_rate, parse_size

#: Values of ``guests[].workload.kind``.
WORKLOAD_KINDS: tuple[str, ...] = ("zipf", "phases", "trace", "sweep", "bursts")


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


#: Popularity laws over a working set's ranks (see overcommit.workloads.generators).
DISTRIBUTIONS = ("zipf", "power")
Distribution = Literal["zipf", "power"]


class ZipfWorkload(_Model):
    """Page touches drawn from a Zipf distribution over a fixed working set."""

    kind: Literal["zipf"]
    working_set: PositiveSize
    access_rate: PositiveRate
    write_fraction: Fraction = 0.3
    skew: Float = Field(0.99, ge=0)
    distribution: Distribution = "zipf"
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
    distribution: Distribution = "zipf"
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
    distribution: Distribution = "zipf"
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


class SweepWorkload(_Model):
    """A sequential writer: writes `region` bytes from offset `start` in page order, looping,
    at `rate` pages per second of work."""

    kind: Literal["sweep"]
    region: PositiveSize
    rate: PositiveRate
    start: Size = 0
    compressibility: Fraction = 0.5
    duplicates: Fraction = 0.0
    file_cache: Fraction = 0.0

    @property
    def footprint(self) -> int:
        """Bytes the workload can touch (the region and the untouched pages before it)."""
        return self.start + self.region


class DurationDist(_Model):
    """A random duration: `{dist: exponential, mean: 60s}`, `{dist: uniform, min: 10s, max:
    1m}` or `{dist: fixed, value: 30s}`."""

    dist: Literal["exponential", "uniform", "fixed"]
    mean: PositiveDuration | None = None
    min: PositiveDuration | None = None
    max: PositiveDuration | None = None
    value: PositiveDuration | None = None

    @model_validator(mode="after")
    def _check(self) -> DurationDist:
        need = {"exponential": ("mean",), "uniform": ("min", "max"), "fixed": ("value",)}
        want = need[self.dist]
        for name in ("mean", "min", "max", "value"):
            given = getattr(self, name) is not None
            if given != (name in want):
                verb = "needs" if name in want else "does not take"
                raise ValueError(f"dist {self.dist} {verb} '{name}'")
        if self.dist == "uniform" and not self.max > self.min:  # type: ignore[operator]
            raise ValueError("uniform: max must be greater than min")
        return self

    def as_dict(self) -> dict:
        """The fields that are set, in seconds (for the generator)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Burst(_Model):
    """The overload episodes of a `bursts` workload."""

    duration: DurationDist
    gap: DurationDist
    working_set: PositiveSize
    access_rate: PositiveRate
    write_fraction: Fraction | None = None


class BurstsWorkload(_Model):
    """A base Zipf setting, and bursts of a larger working set and rate whose durations and
    gaps are drawn (seeded, per guest) from the given distributions."""

    kind: Literal["bursts"]
    working_set: PositiveSize
    access_rate: PositiveRate
    write_fraction: Fraction = 0.3
    skew: Float = Field(0.99, ge=0)
    distribution: Distribution = "zipf"
    burst: Burst
    compressibility: Fraction = 0.5
    duplicates: Fraction = 0.0
    file_cache: Fraction = 0.0

    @property
    def footprint(self) -> int:
        """Bytes the workload can touch (the larger of the two working sets)."""
        return max(self.working_set, self.burst.working_set)


AnyWorkload = ZipfWorkload | PhasesWorkload | TraceWorkload | SweepWorkload | BurstsWorkload

Workload = Annotated[
    Union[ZipfWorkload, PhasesWorkload, TraceWorkload, SweepWorkload, BurstsWorkload],  # noqa: UP007
    Field(discriminator="kind"),
]


def footprint(workload: AnyWorkload) -> int:
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
    swap_cluster: Int = Field(32, ge=1, le=1024)
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
    workload: AnyWorkload
    swap_cluster: int = 32

    @property
    def footprint(self) -> int:
        """Bytes the workload can touch."""
        return self.workload.footprint


def _group_guest_names(group: GuestGroup) -> list[str]:
    if group.count == 1:
        return [group.name]
    return [f"{group.name}-{index}" for index in range(1, group.count + 1)]
