"""Tests of overcommit.units: every accepted form, every rejected form, formatting round trips."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overcommit.units import (
    format_bandwidth,
    format_duration,
    format_rate,
    format_size,
    parse_bandwidth,
    parse_duration,
    parse_fraction,
    parse_rate,
    parse_size,
)

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4096, 4096),
        (0, 0),
        ("4096", 4096),
        ("4096B", 4096),
        ("4096 B", 4096),
        ("4GiB", 4 * GiB),
        ("4 GiB", 4 * GiB),
        ("4gib", 4 * GiB),
        ("512MB", 512_000_000),
        ("512mb", 512_000_000),
        ("100KiB", 100 * KiB),
        ("100KB", 100_000),
        ("100kb", 100_000),
        ("1.5GiB", 3 * GiB // 2),
        ("2TiB", 2 * TiB),
        ("3TB", 3 * 10**12),
        ("4K", 4 * KiB),
        ("4M", 4 * MiB),
        ("4G", 4 * GiB),
        ("1T", TiB),
        (" 7 MiB ", 7 * MiB),
        ("1e3B", 1000),
        ("0.5B", 0),  # rounds to nearest (half to even)
        ("1.6B", 2),
        (1.4, 1),
        ("0GiB", 0),
    ],
)
def test_parse_size_accepts(value, expected):
    result = parse_size(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    ["-1GiB", -1, -0.5, "garbage", "4XB", "4 GiBs", "GiB", "", "1e400GiB", "nan", "inf", "4GiB4"],
)
def test_parse_size_rejects(value):
    with pytest.raises(ValueError) as info:
        parse_size(value)
    message = str(info.value)
    assert "expected a size like 4GiB" in message
    assert repr(value) in message or str(value) in message


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, float("nan"), float("inf"), 2**70])
def test_parse_size_rejects_other_types(value):
    with pytest.raises(ValueError, match="expected a size like 4GiB"):
        parse_size(value)


def test_parse_size_negative_message_is_readable():
    with pytest.raises(ValueError) as info:
        parse_size("-1GiB")
    assert str(info.value).startswith("expected a size like 4GiB, got '-1GiB'")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5.0),
        (0, 0.0),
        (1.5, 1.5),
        ("100ms", 0.1),
        ("1.5s", 1.5),
        ("30m", 1800.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("250μs", 250e-6),
        ("10ns", 10e-9),
        ("1d", 86400.0),
        ("2m30s", 150.0),
        ("1h 30m", 5400.0),
        ("42", 42.0),
        (" 3 s ", 3.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration_accepts(value, expected):
    assert parse_duration(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value", ["-1s", -1, "ten seconds", "5 parsecs", "", "s", "1e999s", "5s-3s", True, None, [1]]
)
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match="expected a duration like 100ms"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("200k/s", 200e3),
        ("200K/s", 200e3),
        ("1.5M/s", 1.5e6),
        ("20000/s", 20000.0),
        ("20000", 20000.0),
        (20000, 20000.0),
        ("3G/s", 3e9),
        ("200k", 200e3),
        ("60/min", 1.0),
        ("0", 0.0),
    ],
)
def test_parse_rate_accepts(value, expected):
    assert parse_rate(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["-5/s", "5x/s", "5k/fortnight", "fast", "", True, None])
def test_parse_rate_rejects(value):
    with pytest.raises(ValueError, match="expected a rate like 200k/s"):
        parse_rate(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("128MiB/s", 128 * MiB),
        ("500MB/s", 500e6),
        ("10Gbit/s", 10e9 / 8),
        ("1Gb/s", 1e9 / 8),
        ("100Mbps", 100e6 / 8),
        ("128M/s", 128 * MiB),
        ("1000", 1000.0),
        (1000, 1000.0),
        ("8b/s", 1.0),
    ],
)
def test_parse_bandwidth_accepts(value, expected):
    assert parse_bandwidth(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["-1MB/s", "1XB/s", "1MB/week", "quick", "5ps", True, None])
def test_parse_bandwidth_rejects(value):
    with pytest.raises(ValueError, match="expected a bandwidth like 128MiB/s"):
        parse_bandwidth(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20%", 0.2), ("0.2", 0.2), ("1", 1.0), (1, 1.0), (0, 0.0), (0.75, 0.75), ("100 %", 1.0)],
)
def test_parse_fraction_accepts(value, expected):
    assert parse_fraction(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["150%", 1.5, -0.1, "-5%", "half", "", "nan", True, None])
def test_parse_fraction_rejects(value):
    with pytest.raises(ValueError, match="expected a fraction like 0.2 or 20%"):
        parse_fraction(value)


def test_error_messages_are_single_line():
    with pytest.raises(ValueError) as info:
        parse_size("4\nbogus")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0B"), (512, "512B"), (4096, "4KiB"), (3 * MiB // 2, "1.5MiB"), (4 * GiB, "4GiB")],
)
def test_format_size(value, expected):
    assert format_size(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0s"),
        (10e-9, "10ns"),
        (250e-6, "250us"),
        (0.1, "100ms"),
        (1.5, "1.5s"),
        (150, "2m30s"),
        (120, "2m"),
        (3600, "1h"),
        (5400, "1h30m"),
        (59.999, "1m"),
    ],
)
def test_format_duration(value, expected):
    assert format_duration(value) == expected


def test_format_rate_and_bandwidth():
    assert format_rate(200e3) == "200k/s"
    assert format_rate(1.5e6) == "1.5M/s"
    assert format_bandwidth(128 * MiB) == "128MiB/s"
    assert parse_rate(format_rate(1.5e6)) == pytest.approx(1.5e6)
    assert parse_bandwidth(format_bandwidth(128 * MiB)) == pytest.approx(128 * MiB)


@given(st.integers(min_value=0, max_value=2**50))
def test_format_size_round_trips_within_rounding(size):
    parsed = parse_size(format_size(size))
    assert math.isclose(parsed, size, rel_tol=0.01, abs_tol=1)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_format_duration_round_trips_within_rounding(seconds):
    parsed = parse_duration(format_duration(seconds))
    assert math.isclose(parsed, seconds, rel_tol=0.02, abs_tol=1e-11)


@given(st.text(max_size=30))
def test_parsers_raise_only_value_error(text):
    for parser in (parse_size, parse_duration, parse_rate, parse_bandwidth, parse_fraction):
        try:
            parser(text)
        except ValueError as exc:
            assert "\n" not in str(exc)
