"""Timeline events and fault injection: `EVENT_ACTIONS`, `Event` with `SlowStorage` and
`NetworkDrop`, `Chaos` and `CHAOS_FAULTS`, `HA`, and the steady-state hypothesis (`Condition`,
`parse_conditions`)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from overcommit.config.common import (
    Duration,
    Fraction,
    Int,
    Name,
    PositiveDuration,
    _Model,
    _or_list,
)
from overcommit.units import format_duration, parse_duration, show

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


_CONDITION_NAME = r"[a-z_][a-z0-9_.]*"
_CONDITION_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_CONDITION_RE = re.compile(
    rf"^\s*(?P<name>{_CONDITION_NAME})\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>{_CONDITION_NUMBER})"
    r"(?:\s+within\s+(?P<within>\S+)\s+of\s+each\s+failure)?\s*$"
)
_AND_RE = re.compile(r"\s+and\s+")


class HA(_Model):
    """High-availability admission control and the restart controller."""

    admission: Literal["none", "host-failures", "percentage"] = "none"
    tolerate: Int = Field(1, ge=0)
    percentage: Fraction = 0.25
    count_tmem: bool = False
    detection: Duration = 5.0
    restart_deadline: PositiveDuration = 120.0
    boot_time: Duration = 0.0


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
