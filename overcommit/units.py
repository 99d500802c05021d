"""Parsing and formatting of the quantities that appear in scenario files.

Every ``parse_*`` function accepts either a plain number (already in the base unit: bytes,
seconds, events per second, bytes per second, fraction) or a string with a unit, and returns
the value in the base unit. Every error is a :class:`ValueError` whose message quotes the
offending value and shows an example of a valid one, so it can be shown to a user as is.

* :func:`parse_size` -> int bytes: ``4GiB``, ``4 GiB``, ``512MB``, ``1.5GiB``, ``4096``, ``4096B``.
  ``KB/MB/GB/TB/PB`` are powers of 1000; ``KiB/MiB/GiB/TiB/PiB`` and the bare ``K/M/G/T/P``
  are powers of 1024. Unit letters are case-insensitive (``kb`` = ``KB``, ``gib`` = ``GiB``).
* :func:`parse_duration` -> float seconds: ``100ms``, ``1.5s``, ``30m``, ``2min``, ``1h``,
  ``250us``, ``250µs``, ``10ns``, ``1d`` and compounds such as ``2m30s`` or ``1h 30m``.
* :func:`parse_rate` -> float per second: ``200k/s``, ``1.5M/s``, ``20000/s``, ``20000``, ``200k``.
* :func:`parse_bandwidth` -> float bytes per second: ``128MiB/s``, ``500MB/s``, ``10Gbit/s``,
  ``1Gb/s``, ``100Mbps`` (a lower-case ``b`` or ``bit`` means bits).
* :func:`parse_fraction` -> float in [0, 1]: ``20%``, ``0.2``, ``1``.

The ``format_*`` functions produce short readable strings that the parsers accept back.
"""

from __future__ import annotations

import math
import re
import reprlib
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "MAX_SIZE",
    "format_bandwidth",
    "format_duration",
    "format_rate",
    "format_size",
    "parse_bandwidth",
    "parse_duration",
    "parse_fraction",
    "parse_rate",
    "parse_size",
    "show",
]

#: Largest size accepted (fits a signed 64-bit integer).
MAX_SIZE = 2**63 - 1

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY_RE = re.compile(rf"^\s*({_NUMBER})\s*(.*?)\s*$", re.DOTALL)

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "p": 1024**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}

_DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # micro sign U+00B5
    "μs": 1e-6,  # greek small letter mu U+03BC
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_DURATION_PART_RE = re.compile(rf"\s*({_NUMBER})\s*([A-Za-zµμ]+)")

_RATE_PREFIXES: dict[str, float] = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_PER_UNIT: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
}

_DECIMAL_PREFIXES: dict[str, float] = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BINARY_PREFIXES: dict[str, float] = {
    "ki": 1024.0,
    "mi": 1024.0**2,
    "gi": 1024.0**3,
    "ti": 1024.0**4,
}

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = 5
_repr.maxtuple = 5
_repr.maxdict = 4
_repr.maxset = 4
_repr.maxlevel = 3


def show(value: Any) -> str:
    """Return a short, single-line representation of a user-supplied value for messages."""
    try:
        text = _repr.repr(value)
    except Exception:  # a value whose repr fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return text.replace("\n", "\\n")


def _fail(kind: str, example: str, value: Any, why: str = "") -> ValueError:
    message = f"expected {kind} like {example}, got {show(value)}"
    if why:
        message += f": {why}"
    return ValueError(message)


def _split_quantity(value: str) -> tuple[str, str] | None:
    match = _QUANTITY_RE.match(value)
    if match is None:
        return None
    return match.group(1), match.group(2)


def _plain_number(value: Any, kind: str, example: str) -> float | None:
    """Return value as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool):
        raise _fail(kind, example, value)
    if isinstance(value, int):
        return float(value) if abs(value) < 2**1000 else math.copysign(math.inf, value)
    if isinstance(value, float):
        return value
    return None


def _check_non_negative(number: float, kind: str, example: str, value: Any) -> float:
    if math.isnan(number) or math.isinf(number):
        raise _fail(kind, example, value, "not a finite number")
    if number < 0:
        raise _fail(kind, example, value, "must not be negative")
    return number


def parse_size(value: Any) -> int:
    """Parse a size (``4GiB``, ``512MB``, ``4096``) into an integer number of bytes."""
    kind, example = "a size", "4GiB"
    if isinstance(value, bool):
        raise _fail(kind, example, value)
    if isinstance(value, int):
        if value < 0:
            raise _fail(kind, example, value, "must not be negative")
        if value > MAX_SIZE:
            raise _fail(kind, example, value, "too large")
        return value
    if isinstance(value, float):
        _check_non_negative(value, kind, example, value)
        if value > MAX_SIZE:
            raise _fail(kind, example, value, "too large")
        return int(round(value))
    if not isinstance(value, str):
        raise _fail(kind, example, value)
    parts = _split_quantity(value)
    if parts is None:
        raise _fail(kind, example, value)
    number_text, unit = parts
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        raise _fail(
            kind, example, value, f"unknown unit {unit!r} (use B, KiB, MiB, GiB, TiB, KB, MB, ...)"
        )
    try:
        number = float(number_text)
    except ValueError:  # pragma: no cover - the regex only admits float syntax
        raise _fail(kind, example, value) from None
    _check_non_negative(number, kind, example, value)
    if number * multiplier > MAX_SIZE:
        raise _fail(kind, example, value, "too large")
    try:
        exact = Decimal(number_text) * multiplier
        result = int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))
    except (InvalidOperation, OverflowError, ValueError):  # pragma: no cover - defensive
        raise _fail(kind, example, value) from None
    return result


def parse_duration(value: Any) -> float:
    """Parse a duration (``100ms``, ``1.5s``, ``30m``, ``2m30s``, ``5``) into seconds (>= 0)."""
    kind, example = "a duration", "100ms or 1.5s"
    number = _plain_number(value, kind, example)
    if number is not None:
        return _check_non_negative(number, kind, example, value)
    if not isinstance(value, str):
        raise _fail(kind, example, value)
    parts = _split_quantity(value)
    if parts is not None and parts[1] == "":
        return _check_non_negative(float(parts[0]), kind, example, value)
    text = value.strip()
    total = 0.0
    position = 0
    negative = False
    while position < len(text):
        match = _DURATION_PART_RE.match(text, position)
        if match is None:
            raise _fail(kind, example, value)
        number_text, unit = match.groups()
        scale = _DURATION_UNITS.get(unit) or _DURATION_UNITS.get(unit.lower())
        if scale is None:
            raise _fail(kind, example, value, f"unknown unit {unit!r} (use ns, us, ms, s, m, h, d)")
        part = float(number_text)
        negative = negative or part < 0
        total += part * scale
        position = match.end()
    if position == 0:
        raise _fail(kind, example, value)
    if negative:
        raise _fail(kind, example, value, "must not be negative")
    return _check_non_negative(total, kind, example, value)


def _split_per(unit: str) -> tuple[str, float] | None:
    """Split ``k/s`` into (``k``, 1.0); a unit without ``/...`` means per second."""
    if "/" not in unit:
        return unit, 1.0
    head, _, per = unit.partition("/")
    scale = _PER_UNIT.get(per.strip().lower())
    if scale is None:
        return None
    return head.strip(), scale


def parse_rate(value: Any) -> float:
    """Parse an event rate (``200k/s``, ``1.5M/s``, ``20000``) into events per second."""
    kind, example = "a rate", "200k/s"
    number = _plain_number(value, kind, example)
    if number is not None:
        return _check_non_negative(number, kind, example, value)
    if not isinstance(value, str):
        raise _fail(kind, example, value)
    parts = _split_quantity(value)
    if parts is None:
        raise _fail(kind, example, value)
    number_text, unit = parts
    split = _split_per(unit)
    if split is None:
        raise _fail(kind, example, value, "unknown time unit after '/' (use /s, /min, /h)")
    prefix, per = split
    multiplier = _RATE_PREFIXES.get(prefix.lower())
    if multiplier is None:
        raise _fail(kind, example, value, f"unknown multiplier {prefix!r} (use k, M, G, T)")
    number = _check_non_negative(float(number_text), kind, example, value)
    return _check_non_negative(number * multiplier / per, kind, example, value)


def _bandwidth_unit(unit: str) -> float | None:
    """Bytes per unit for a bandwidth unit (``MiB``, ``MB``, ``Gbit``, ``Gb``, ``Mbps``)."""
    if unit.endswith("ps"):  # Mbps, MBps, Gbps
        unit = unit[:-2]
        if not unit or unit[-1] not in "bB":
            return None
    if unit.endswith("bit") or unit.endswith("bits"):
        prefix, bits = unit[: unit.rfind("bit")], True
    elif unit.endswith("b"):
        prefix, bits = unit[:-1], True
    elif unit.endswith("B"):
        prefix, bits = unit[:-1], False
    else:  # bare prefix: K, M, G mean KiB, MiB, GiB as in sizes
        bare = _SIZE_UNITS.get(unit.lower())
        return float(bare) if bare is not None else None
    key = prefix.lower()
    scale = _BINARY_PREFIXES.get(key, _DECIMAL_PREFIXES.get(key))
    if scale is None:
        return None
    return scale / 8.0 if bits else scale


def parse_bandwidth(value: Any) -> float:
    """Parse a bandwidth (``128MiB/s``, ``500MB/s``, ``10Gbit/s``) into bytes per second."""
    kind, example = "a bandwidth", "128MiB/s or 10Gbit/s"
    number = _plain_number(value, kind, example)
    if number is not None:
        return _check_non_negative(number, kind, example, value)
    if not isinstance(value, str):
        raise _fail(kind, example, value)
    parts = _split_quantity(value)
    if parts is None:
        raise _fail(kind, example, value)
    number_text, unit = parts
    split = _split_per(unit)
    if split is None:
        raise _fail(kind, example, value, "unknown time unit after '/' (use /s)")
    unit_text, per = split
    scale = _bandwidth_unit(unit_text)
    if scale is None:
        raise _fail(kind, example, value, f"unknown unit {unit_text!r} (use MiB/s, MB/s, Gbit/s)")
    number = _check_non_negative(float(number_text), kind, example, value)
    return _check_non_negative(number * scale / per, kind, example, value)


def parse_fraction(value: Any) -> float:
    """Parse a fraction (``20%``, ``0.2``, ``1``) into a float in [0, 1]."""
    kind, example = "a fraction", "0.2 or 20%"
    number = _plain_number(value, kind, example)
    if number is None:
        if not isinstance(value, str):
            raise _fail(kind, example, value)
        parts = _split_quantity(value)
        if parts is None or parts[1] not in ("", "%"):
            raise _fail(kind, example, value)
        number = float(parts[0]) / (100.0 if parts[1] == "%" else 1.0)
    if math.isnan(number) or math.isinf(number):
        raise _fail(kind, example, value, "not a finite number")
    if not 0.0 <= number <= 1.0:
        raise _fail(kind, example, value, "must be between 0 and 1 (0% and 100%)")
    return number


def _trim(number: float, digits: int = 2) -> str:
    text = f"{number:.{digits}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def format_size(size: int | float) -> str:
    """Format bytes with the largest binary unit that keeps the value >= 1: ``4GiB``, ``512B``."""
    sign = "-" if size < 0 else ""
    magnitude = abs(size)
    for unit, scale in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if magnitude >= scale:
            return f"{sign}{_trim(magnitude / scale)}{unit}"
    if magnitude >= 1024:
        return f"{sign}{_trim(magnitude / 1024)}KiB"
    return f"{sign}{_trim(magnitude)}B"


def format_duration(seconds: float) -> str:
    """Format seconds readably: ``250us``, ``100ms``, ``1.5s``, ``2m30s``, ``1h5m``."""
    if math.isnan(seconds) or math.isinf(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1e-6:
        return f"{_trim(seconds * 1e9)}ns"
    if seconds < 1e-3:
        return f"{_trim(seconds * 1e6)}us"
    if seconds < 1:
        return f"{_trim(seconds * 1e3)}ms"
    seconds = round(seconds, 2)
    if seconds < 60:
        return f"{_trim(seconds)}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}m" + (f"{_trim(rest)}s" if rest >= 0.005 else "")
    minutes = int(round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h" + (f"{minutes}m" if minutes else "")


def format_rate(rate: float) -> str:
    """Format events per second: ``200k/s``, ``1.5M/s``, ``20/s``."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(rate) >= scale:
            return f"{_trim(rate / scale)}{suffix}/s"
    return f"{_trim(rate)}/s"


def format_bandwidth(rate: float) -> str:
    """Format bytes per second with binary units: ``128MiB/s``."""
    return f"{format_size(rate)}/s"
