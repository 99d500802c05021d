"""Shared pieces of the scenario schema: the frozen `_Model` base, value types (sizes,
durations, rates, names, Redis URLs) and their validators, `Problem`/`ConfigError`, limits and
reserved names, context keys, and small helpers for located messages (`Loc`, `_field`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from overcommit.units import (
    parse_bandwidth,
    parse_duration,
    parse_fraction,
    parse_rate,
    parse_size,
    show,
)

#: Upper bounds that keep a scenario within what one emulator run can hold.
MAX_HOSTS = 10_000
MAX_GUESTS = 100_000

#: At most this many problems are listed in one ConfigError (then a summary line).
MAX_PROBLEMS = 100

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
#: Names the stores use for themselves (the shared-storage server; the tmem metadata hash).
RESERVED_HOST_NAME = "shared"
RESERVED_GUEST_NAME = "meta"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

# Keys of the validation context the loader passes to pydantic: skip the cross-field checks
# (the loader runs them itself, to locate each problem), and the directory trace files are
# read relative to.
_DEFER_CROSS_CHECKS = "overcommit.config.defer_cross_checks"
_BASE_DIR = "overcommit.config.base_dir"


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
# Located messages

#: Where a value sits in a scenario: keys and list indices from the top.
Loc = tuple[Any, ...]


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
