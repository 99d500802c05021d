"""Tests of overcommit.config: loading, expansion, located errors, overrides, fuzzing."""

import copy
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overcommit.config import (
    CONFLICTS,
    EVENT_ACTIONS,
    MECHANISMS,
    STANDARD_COMBINATIONS,
    Condition,
    ConfigError,
    Event,
    GuestSpec,
    PhasesWorkload,
    Problem,
    Scenario,
    ZipfWorkload,
    apply_overrides,
    known_mechanisms,
    load_scenario,
    load_scenario_text,
    mechanism_conflicts,
    parse_conditions,
    register_mechanism_name,
    set_path,
)
from overcommit.config import mechanisms as config_mechanisms

GiB = 1024**3
MiB = 1024**2
DOCS = Path(__file__).resolve().parent.parent / "docs" / "config.md"
UNKNOWN_FOO = (
    f"unknown mechanism 'foo' (known: {', '.join(MECHANISMS)}; "
    f"combinations join them with '+', e.g. {', '.join(STANDARD_COMBINATIONS)})"
)

FULL = """\
name: failover-3x4
seed: 42
duration: 600s
epoch: 100ms
sync_window: 2s
page_size: 4KiB
payload: digest
mechanism: frontswap
runtime: {kind: inline, guests: actors}
hosts:
  count: 3
  ram: 16GiB
  reserve: 1GiB
  boot: lazy
  swap: {device: fast, size: 32GiB}
  tmem: {max: 8GiB, exclusive_gets: true}
shared_storage: {device: san}
devices:
  fast: {read_latency: 20us, write_latency: 30us, iops: 500k/s, bandwidth: 3GB/s}
  san: {read_latency: 2ms}
costs: {hypercall: 1us, ram_bandwidth: 10GiB/s}
placement: most-free
ha: {admission: host-failures, tolerate: 1}
guests:
  - {name: web, count: 6, memory: 2GiB, maxmem: 3GiB, swap: 4GiB, cooperative: true,
     workload: {kind: zipf, working_set: 3GiB, access_rate: 200k/s, write_fraction: 0.3}}
  - name: db
    memory: 4GiB
    host: host-2
    priority: 5
    pinned: 10%
    watermarks: {min: 0.02, low: 0.04, high: 0.06}
    workload:
      kind: phases
      phases:
        - {duration: 10s, working_set: 1GiB, access_rate: 10k/s}
        - {duration: 20s, working_set: 3GiB, access_rate: 50k/s, skew: 0}
events:
  - {at: 120s, tmem_freeze: host-1}
  - {at: 130s, tmem_thaw: host-1}
  - {at: 140s, tmem_flush: web-3}
hypothesis:
  - restart_failures == 0
  - progress >= 0.8 and oom_kills == 0
limits: {store_memory: 2GiB}
"""

# A small valid scenario; the bad-config tests each change one thing in it.
BASE = """\
name: t
duration: 60s
hosts:
  count: 2
  ram: 16GiB
  reserve: 1GiB
guests:
  - name: web
    count: 2
    memory: 4GiB
    workload:
      kind: zipf
      working_set: 3GiB
      access_rate: 200k/s
events:
  - {at: 10s, tmem_freeze: host-1}
hypothesis:
  - restart_failures == 0
"""


def line_of(text: str, fragment: str) -> int:
    """1-based number of the only line of text containing fragment."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(lines) == 1, (fragment, lines)
    return lines[0]


def one_problem(text: str) -> Problem:
    with pytest.raises(ConfigError) as info:
        load_scenario_text(text, "s.yaml")
    problems = info.value.problems
    assert len(problems) == 1, str(info.value)
    assert problems[0].source == "s.yaml"
    return problems[0]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# --------------------------------------------------------------------------------------------
# Valid scenarios


def test_full_scenario_loads_and_expands():
    s = load_scenario_text(FULL)
    assert s.name == "failover-3x4"
    assert s.duration == 600.0 and s.epoch == pytest.approx(0.1) and s.sync_window == 2.0
    assert s.page_size == 4096
    assert s.hosts.ram == 16 * GiB and s.hosts.reserve == GiB and s.hosts.boot == "lazy"
    assert s.hosts.tmem.max == 8 * GiB and s.hosts.tmem.exclusive_gets is True
    assert s.devices["fast"].iops == 500e3 and s.devices["fast"].bandwidth == 3e9
    assert s.devices["san"].read_latency == pytest.approx(2e-3)
    assert s.costs.hypercall == pytest.approx(1e-6) and s.costs.tmem_put is None
    assert s.host_names() == ["host-1", "host-2", "host-3"]

    specs = s.guest_specs()
    assert all(isinstance(spec, GuestSpec) for spec in specs)
    assert [spec.name for spec in specs] == [f"web-{i}" for i in range(1, 7)] + ["db"]
    assert [spec.group for spec in specs] == [0] * 6 + [1]
    web, db = specs[0], specs[-1]
    assert (web.memory, web.maxmem, web.swap) == (2 * GiB, 3 * GiB, 4 * GiB)
    assert isinstance(web.workload, ZipfWorkload) and web.workload.access_rate == 200e3
    # defaults resolved: maxmem = memory, swap = memory
    assert (db.memory, db.maxmem, db.swap) == (4 * GiB, 4 * GiB, 4 * GiB)
    assert db.host == "host-2" and db.priority == 5 and db.pinned == pytest.approx(0.1)
    assert isinstance(db.workload, PhasesWorkload) and db.workload.repeat is True
    assert db.footprint == 3 * GiB == Scenario.footprint(db.workload) == s.footprint(db.workload)
    assert web.readahead == 8 and web.lru == "clock" and web.oom_restart == 5.0
    assert web.watermarks.min == 0.01 and db.watermarks.high == 0.06

    assert [(e.at, e.action, e.target) for e in s.events] == [
        (120.0, "tmem_freeze", "host-1"),
        (130.0, "tmem_thaw", "host-1"),
        (140.0, "tmem_flush", "web-3"),
    ]
    assert s.conditions() == [
        Condition("restart_failures", "==", 0.0),
        Condition("progress", ">=", 0.8),
        Condition("oom_kills", "==", 0.0),
    ]
    assert s.limits.store_memory == 2 * GiB


def test_minimal_scenario_defaults():
    s = load_scenario_text(BASE)
    assert s.seed == 0 and s.epoch == 0.1 and s.sync_window == 1.0 and s.page_size == 4096
    assert s.payload == "digest" and s.mechanism == "none" and s.mechanism_parts() == ["none"]
    assert s.runtime.kind == "ray" and s.runtime.guests == "actors" and s.runtime.address is None
    assert s.runtime.pin == "spread"
    assert s.hosts.swap.device == "ssd" and s.hosts.swap.size == 0 and s.hosts.tmem.max is None
    assert s.shared_storage.device == "san" and s.devices == {}
    assert s.redis.hosts is None and s.redis.socket == "unix" and s.redis.prefix == "oc"
    assert s.placement == "first-fit"
    assert s.ha.admission == "none" and s.ha.tolerate == 1 and s.ha.percentage == 0.25
    assert s.limits.store_memory is None
    group = s.guests[0]
    assert group.maxmem is None and group.swap is None and group.cooperative is True
    assert group.workload.write_fraction == 0.3 and group.workload.skew == 0.99
    assert [g.name for g in s.guest_specs()] == ["web-1", "web-2"]


def test_host_names_given():
    text = replace_once(BASE, "  count: 2\n  ram", "  names: [alpha, beta]\n  ram")
    text = replace_once(text, "tmem_freeze: host-1", "tmem_freeze: beta")
    s = load_scenario_text(text)
    assert s.hosts.count == 2  # inferred from names
    assert s.host_names() == ["alpha", "beta"]


def test_single_guest_keeps_group_name_and_empty_values_mean_defaults():
    text = replace_once(BASE, "    count: 2\n", "")
    text = replace_once(text, "tmem_freeze: host-1", "tmem_flush: web")
    s = load_scenario_text(text + "runtime:\nha:\nlimits:\n")
    assert [g.name for g in s.guest_specs()] == ["web"]
    assert s.runtime.kind == "ray" and s.ha.admission == "none"


def test_mechanism_is_normalised():
    s = load_scenario_text(BASE + "mechanism: ' frontswap '\n")
    assert s.mechanism == "frontswap"
    s = load_scenario_text(BASE + "mechanism: frontswap + balloon\n")
    assert s.mechanism == "frontswap+balloon"
    assert s.mechanism_parts() == ["frontswap", "balloon"]


@pytest.fixture
def registry(monkeypatch):
    """A mechanism registry holding only the built-ins, restored after the test."""
    monkeypatch.setattr(config_mechanisms, "_REGISTERED", {})
    monkeypatch.setattr(config_mechanisms, "_REGISTERED_CONFLICTS", {})


def test_registered_mechanism_validates_alone_and_combined(registry):
    with pytest.raises(ConfigError, match="unknown mechanism 'far-swap'"):
        load_scenario_text(BASE + "mechanism: far-swap\n")
    register_mechanism_name("far-swap")
    assert known_mechanisms() == (*MECHANISMS, "far-swap")
    assert load_scenario_text(BASE + "mechanism: far-swap\n").mechanism == "far-swap"
    s = load_scenario_text(BASE + "mechanism: balloon + far-swap\n")
    assert s.mechanism_parts() == ["balloon", "far-swap"]
    register_mechanism_name("far-swap")  # the same registration again is a no-op
    assert known_mechanisms() == (*MECHANISMS, "far-swap")


def test_registered_conflict_is_refused_with_its_reason(registry):
    register_mechanism_name("far-swap", {"host-swap": "both page guest frames out"})
    assert mechanism_conflicts()[frozenset({"far-swap", "host-swap"})] == (
        "both page guest frames out"
    )
    p = one_problem(BASE + "mechanism: host-swap+far-swap\n")
    assert p.field == "mechanism"
    assert p.message == "'host-swap' and 'far-swap' cannot be combined: both page guest frames out"
    assert load_scenario_text(BASE + "mechanism: balloon+far-swap\n").mechanism == (
        "balloon+far-swap"
    )


def test_builtin_conflict_is_refused_with_its_reason():
    p = one_problem(BASE + "mechanism: zswap+zram\n")
    assert p.message == (
        "'zswap' and 'zram' cannot be combined: zswap in front of a zram device compresses twice"
    )


def test_validate_command_names_known_mechanisms_and_combinations(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(BASE + "mechanism: foo\n")
    proc = subprocess.run(
        [sys.executable, "-m", "overcommit", "validate", str(f)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = f"{f}:{line_of(BASE + 'mechanism: foo', 'mechanism')}: mechanism: {UNKNOWN_FOO}"
    assert proc.stderr.strip() == line


@pytest.mark.parametrize(
    ("name", "conflicts", "message"),
    [
        ("Far", None, "invalid mechanism name 'Far'"),
        ("far_swap", None, "invalid mechanism name 'far_swap'"),
        ("-far", None, "invalid mechanism name '-far'"),
        ("a+b", None, "invalid mechanism name 'a+b'"),
        ("", None, "invalid mechanism name"),
        ("balloon", {"zswap": "no"}, "mechanism 'balloon' is built-in with other conflicts"),
        ("zswap", None, "mechanism 'zswap' is built-in with other conflicts"),
        ("far", {"nope": "x"}, "conflicts with unknown mechanism 'nope'"),
        ("far", {"far": "x"}, "cannot conflict with itself"),
        ("far", {"zram": " "}, "needs a reason"),
    ],
)
def test_register_mechanism_name_refuses(registry, name, conflicts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        register_mechanism_name(name, conflicts)
    assert known_mechanisms() == MECHANISMS


def test_register_builtin_with_its_own_conflicts_is_a_no_op(registry):
    register_mechanism_name("none")
    register_mechanism_name(
        "balloon", {"selfballoon": CONFLICTS[frozenset({"balloon", "selfballoon"})]}
    )
    assert known_mechanisms() == MECHANISMS
    register_mechanism_name("far")
    with pytest.raises(ValueError, match="'far' is already registered with other conflicts"):
        register_mechanism_name("far", {"zram": "two RAM swaps"})


def test_standard_combinations_validate_and_are_compares_defaults():
    from overcommit.compare import DEFAULT_MECHANISMS

    assert (*MECHANISMS, *STANDARD_COMBINATIONS) == DEFAULT_MECHANISMS
    for name in STANDARD_COMBINATIONS:
        assert load_scenario_text(BASE + f"mechanism: {name}\n").mechanism == name


def test_to_json_is_json_and_loads_back():
    import json

    s = load_scenario_text(FULL)
    data = s.to_json()
    assert json.loads(json.dumps(data)) == data
    assert list(data)[:3] == ["name", "seed", "duration"]
    assert data["hosts"]["ram"] == 16 * GiB and data["epoch"] == pytest.approx(0.1)
    assert data["hosts"]["names"] == ["host-1", "host-2", "host-3"]
    assert data["guests"][1]["maxmem"] == 4 * GiB and data["guests"][1]["swap"] == 4 * GiB
    assert data["events"][0] == {"at": 120.0, "tmem_freeze": "host-1"}
    again = load_scenario_text(yaml.safe_dump(data, sort_keys=False))
    assert again.to_json() == data
    assert again.guest_specs() == s.guest_specs()


def test_scenario_pickles_and_compares_by_value():
    s = load_scenario_text(BASE, "a.yaml")
    t = load_scenario_text(BASE + "\n# comment\n", "b.yaml")
    assert s == t
    assert pickle.loads(pickle.dumps(s)) == s


def test_direct_construction_runs_cross_checks():
    data = load_scenario_text(BASE).to_json()
    data["guests"][0]["host"] = "nowhere"
    with pytest.raises(ValueError, match="unknown host 'nowhere'"):
        Scenario.model_validate(data)


def test_event_actions_match_event_fields():
    assert set(EVENT_ACTIONS) == set(Event.model_fields) - {"at", "to", "mode"}
    assert set(EVENT_ACTIONS.values()) <= {"host", "guest", "storage"}


def test_parse_conditions():
    assert parse_conditions("a.b_c != -1.5e3") == [Condition("a.b_c", "!=", -1500.0)]
    assert [str(c) for c in parse_conditions("x<1 and y>2")] == ["x < 1", "y > 2"]
    assert Condition("x", ">=", 1).holds(1) and not Condition("x", "<", 1).holds(1)
    for bad in ["x", "X == 1", "x == y", "x === 1", "x == 1 and", "1x == 1", "x == 1 or y == 2"]:
        with pytest.raises(ValueError, match="expected NAME OP NUMBER"):
            parse_conditions(bad)


# --------------------------------------------------------------------------------------------
# Located errors: each yields exactly one problem with the right line and field


def test_unknown_top_level_key():
    text = BASE + "bogus: 1\n"
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "bogus"), "bogus")
    assert "unknown key 'bogus'" in p.message


def test_unknown_nested_key_with_suggestion():
    text = replace_once(BASE, "      access_rate: 200k/s\n", "      access_rate: 1\n      skw: 1\n")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "skw"), "guests[0].workload.skw")
    assert "unknown key 'skw'" in p.message and "did you mean 'skew'" in p.message


def test_unknown_key_in_hosts():
    text = replace_once(BASE, "  reserve: 1GiB\n", "  reserve: 1GiB\n  cpus: 4\n")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "cpus"), "hosts.cpus")


def test_negative_size():
    text = replace_once(BASE, "memory: 4GiB", "memory: -4GiB")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "memory:"), "guests[0].memory")
    assert p.message == "expected a size like 4GiB, got '-4GiB': must not be negative"


def test_malformed_duration():
    text = replace_once(BASE, "duration: 60s", "duration: 60 parsecs")
    p = one_problem(text)
    assert (p.line, p.field) == (2, "duration")
    assert "expected a duration like 100ms" in p.message and "'60 parsecs'" in p.message


def test_guest_larger_than_every_host():
    text = replace_once(BASE, "memory: 4GiB", "memory: 20GiB")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "memory:"), "guests[0].memory")
    assert p.message == "guest memory 20GiB exceeds every host's RAM above reserve (15GiB)"


def test_maxmem_below_memory():
    text = replace_once(BASE, "    memory: 4GiB\n", "    memory: 4GiB\n    maxmem: 2GiB\n")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "maxmem"), "guests[0].maxmem")
    assert "maxmem 2GiB is below memory 4GiB" in p.message


def test_yaml_syntax_error():
    text = replace_once(BASE, "  count: 2\n  ram", "  count: [2\n  ram")
    p = one_problem(text)
    assert p.line == line_of(text, "ram: 16GiB")
    assert p.field == "(yaml)" and p.message.startswith("invalid YAML: ")
    assert "\n" not in p.message


def test_unknown_mechanism():
    text = BASE + "mechanism: foo\n"
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "mechanism"), "mechanism")
    assert p.message == UNKNOWN_FOO
    assert "e.g. balloon+host-swap, frontswap+selfballoon, frontswap+cleancache, " in p.message


def test_unknown_mechanisms_are_all_named():
    p = one_problem(BASE + "mechanism: foo+balloon+bar\n")
    assert p.message.startswith("unknown mechanisms 'foo', 'bar' (known: none, frontswap, ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("none+frontswap", "'none' cannot be combined"),
        ("frontswap+frontswap", "given twice"),
        ("frontswap+", "empty name"),
        ("[frontswap]", "expected a mechanism name"),
    ],
)
def test_bad_mechanism_combinations(value, message):
    p = one_problem(BASE + f"mechanism: {value}\n")
    assert p.field == "mechanism" and message in p.message


def test_event_naming_missing_host():
    text = replace_once(BASE, "tmem_freeze: host-1", "tmem_freeze: host-9")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "host-9"), "events[0].tmem_freeze")
    assert p.message == "unknown host 'host-9' (hosts: host-1, host-2)"


def test_event_naming_missing_guest_uses_expanded_names():
    text = replace_once(BASE, "tmem_freeze: host-1", "tmem_flush: web")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "tmem_flush"), "events[0].tmem_flush")
    assert p.message == "unknown guest 'web' (guests: web-1, web-2)"


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        ("{at: 10s}", "events[0]", "event needs one action key"),
        ("{at: 10s, tmem_freeze: host-1, tmem_thaw: host-1}", "events[0]", "2 actions"),
        ("{at: 10s, kill_host: host-1}", "events[0].kill_host", "unknown key 'kill_host'"),
        ("{at: 10s, fail_host: host-9}", "events[0].fail_host", "unknown host 'host-9'"),
        ("{at: 10s, stop_cooperating: nobody}", "events[0].stop_cooperating", "unknown guest"),
        (
            "{at: 10s, slow_storage: {factor: 0, duration: 1s}}",
            "events[0].slow_storage.factor",
            "must be greater than 0.0",
        ),
        (
            "{at: 10s, slow_storage: {factor: 2, duration: 1s}}",
            "events[0].slow_storage.factor",
            "must be at most 1.0",
        ),
        ("{tmem_freeze: host-1}", "events[0].at", "required key is missing"),
        ("{at: 60s, tmem_freeze: host-1}", "events[0].at", "not before the end of the run"),
    ],
)
def test_bad_events(event, field, message):
    text = replace_once(BASE, "{at: 10s, tmem_freeze: host-1}", event)
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "  - {"), field)
    assert message in p.message


def test_hypothesis_syntax_error():
    text = replace_once(BASE, "restart_failures == 0", "restart_failures = 0")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "restart_failures"), "hypothesis[0]")
    assert "expected NAME OP NUMBER" in p.message and "'restart_failures = 0'" in p.message


def test_missing_field_points_at_parent():
    text = replace_once(BASE, "  ram: 16GiB\n", "")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "hosts:"), "hosts.ram")
    assert p.message == "required key is missing"


def test_missing_nested_field_in_workload():
    text = replace_once(BASE, "      working_set: 3GiB\n", "")
    p = one_problem(text)
    assert (p.line, p.field) == (line_of(text, "workload:"), "guests[0].workload.working_set")


def test_phase_error_path_has_no_union_tag():
    text = replace_once(
        BASE,
        "      kind: zipf\n      working_set: 3GiB\n      access_rate: 200k/s\n",
        "      kind: phases\n      phases:\n        - {duration: 1s, working_set: 1GiB}\n",
    )
    p = one_problem(text)
    assert p.field == "guests[0].workload.phases[0].access_rate"
    assert p.line == line_of(text, "duration: 1s")


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("kind: zipf", "kind: zipff", "guests[0].workload", "unknown workload kind 'zipff'"),
        ("      kind: zipf\n", "", "guests[0].workload", "missing 'kind'"),
        ("reserve: 1GiB", "reserve: 16GiB", "hosts.reserve", "must be less than ram"),
        ("  count: 2\n  ram", "  count: 0\n  ram", "hosts.count", "must be at least 1"),
        (
            "count: 2\n    memory",
            "count: two\n    memory",
            "guests[0].count",
            "expected an integer",
        ),
        (
            "count: 2\n    memory",
            "count: true\n    memory",
            "guests[0].count",
            "expected an integer",
        ),
        ("name: t", "name: 'bad name'", "name", "invalid name 'bad name'"),
        ("duration: 60s", "duration: 0s", "duration", "must be greater than 0"),
        ("access_rate: 200k/s", "access_rate: 0", "guests[0].workload.access_rate", "greater"),
        ("name: web", "name: web\n    host: host-7", "guests[0].host", "unknown host 'host-7'"),
        ("memory: 4GiB", "memory: 2GiB\n    pinned: 1.0", "guests[0].pinned", "does not fit"),
        ("name: web", "name: web\n    readahead: 0", "guests[0].readahead", "at least 1"),
        ("name: web", "name: web\n    lru: fifo", "guests[0].lru", "expected 'clock' or 'lru'"),
        ("name: web", "name: web\n    pinned: 120%", "guests[0].pinned", "between 0 and 1"),
        (
            "name: web",
            "name: web\n    watermarks: {min: 0.05}",
            "guests[0].watermarks.low",
            "must be greater than min",
        ),
    ],
)
def test_more_located_problems(old, new, field, message):
    text = replace_once(BASE, old, new)
    p = one_problem(text)
    assert p.field == field
    assert message in p.message, p.message
    assert p.line is not None and 1 <= p.line <= len(text.splitlines())


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("epoch: 2min\n", "epoch", "longer than duration"),
        ("sync_window: 10ms\n", "sync_window", "shorter than epoch"),
        ("page_size: 3000\n", "page_size", "power of two"),
        ("payload: all\n", "payload", "expected 'digest' or 'full'"),
        ("seed: -1\n", "seed", "at least 0"),
        ("runtime: {kind: ray, guests: many}\n", "runtime.guests", "'actors' or 'packed'"),
        (
            "runtime: {kind: ray, guests: actors, hosts_per_actor: 2}\n",
            "runtime.hosts_per_actor",
            "needs guests: packed",
        ),
        (
            "runtime: {guests: packed, pin: resource, hosts_per_actor: 4}\n",
            "runtime.hosts_per_actor",
            "cannot go with pin: resource",
        ),
        (
            "runtime: {guests: packed, hosts_per_actor: 0}\n",
            "runtime.hosts_per_actor",
            "at least 1",
        ),
        (
            "runtime: {guests: packed, hosts_per_actor: lots}\n",
            "runtime.hosts_per_actor",
            "expected an integer at least 1 or 'auto', got 'lots'",
        ),
        ("shared_storage: {device: floppy}\n", "shared_storage.device", "unknown device 'floppy'"),
        (
            "shared_storage: {device: fast}\ndevices: {fast: {iops: 100}}\n",
            "shared_storage.device",
            "must set read_latency, write_latency, bandwidth",
        ),
        ("devices: {ssd: {iops: -1}}\n", "devices.ssd.iops", "must not be negative"),
        ("redis: {shared: 'redis://x'}\n", "redis", "give both or neither"),
        (
            "redis: {hosts: {host-1: 'redis://a', host-2: 'redis://b'}, shared: 'http://x'}\n",
            "redis.shared",
            "expected a Redis URL",
        ),
        (
            "redis: {hosts: {host-1: 'redis://a'}, shared: 'unix:///s'}\n",
            "redis.hosts",
            "no Redis URL for host host-2",
        ),
        ("ha: {admission: everything}\n", "ha.admission", "expected"),
        ("limits: {store_memory: 0}\n", "limits.store_memory", "greater than 0"),
        ("hypothesis: 'x >= 1 and'\n", "hypothesis[0]", "expected NAME OP NUMBER"),
        ("seed: 1\nseed: 2\n", "seed", "key given twice"),
        ("costs: {hypercall: soon}\n", "costs.hypercall", "expected a duration"),
    ],
)
def test_top_level_problems(extra, field, message):
    text = replace_once(BASE, "hypothesis:\n  - restart_failures == 0\n", "") + extra
    p = one_problem(text)
    assert p.field == field
    assert message in p.message, p.message


def test_duplicate_expanded_guest_names():
    text = replace_once(
        BASE,
        "guests:\n",
        "guests:\n  - {name: web-2, memory: 1GiB,"
        " workload: {kind: zipf, working_set: 1GiB, access_rate: 10}}\n",
    )
    p = one_problem(text)
    assert p.field == "guests[1].name" and "also used by guests[0]" in p.message
    assert p.line == line_of(text, "  - name: web")


def test_several_problems_are_reported_together():
    text = BASE.replace("memory: 4GiB", "memory: -1").replace("duration: 60s", "duration: x")
    with pytest.raises(ConfigError) as info:
        load_scenario_text(text + "bogus: 1\n", "s.yaml")
    fields = [p.field for p in info.value.problems]
    assert fields == ["duration", "guests[0].memory", "bogus"]
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert lines[0] == "s.yaml:2: duration: expected a duration like 100ms or 1.5s, got 'x'"


def test_alias_and_merge_keys_are_located():
    text = replace_once(
        BASE,
        "guests:\n",
        "guests:\n  - &db {name: db, memory: 4GiB,"
        " workload: {kind: zipf, working_set: 1GiB, access_rate: 1}}\n"
        "  - <<: *db\n    name: db2\n    memory: -1\n",
    )
    p = one_problem(text)
    assert (p.field, p.line) == ("guests[1].memory", line_of(text, "memory: -1"))
    text = text.replace("name: db2", "name: db2\n    x-extra: 1").replace("memory: -1", "swap: 0")
    p = one_problem(text)
    assert (p.field, p.line) == ("guests[1].x-extra", 11)


def test_unknown_key_at_top_level_next_to_anchor():
    text = BASE + "x-common: &common {memory: 4GiB}\n"
    p = one_problem(text)
    assert (p.field, p.line) == ("x-common", line_of(text, "x-common"))


@pytest.mark.parametrize(
    ("text", "field", "line", "message"),
    [
        ("", "(top level)", None, "the file is empty"),
        ("# only a comment\n", "(top level)", None, "the file is empty"),
        ("- a\n- b\n", "(top level)", 1, "got a list"),
        ("hello\n", "(top level)", 1, "got the text 'hello'"),
        ("a: 1\n---\nb: 2\n", "(yaml)", 2, "expected a single document"),
        ("name: x\n\tduration: 1s\n", "(yaml)", 2, "invalid YAML"),
        ("name: t\nseed: 2001-13-01\n", "(yaml)", 2, "month must be in 1..12"),
        ("name: !!python/object:os.system x\n", "(yaml)", 1, "invalid YAML"),
        ("a: [\n", "(yaml)", 1, "invalid YAML"),
    ],
)
def test_document_level_problems(text, field, line, message):
    with pytest.raises(ConfigError) as info:
        load_scenario_text(text, "d.yaml")
    (p,) = info.value.problems
    assert (p.source, p.field, p.line) == ("d.yaml", field, line)
    assert message in p.message


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_scenario(tmp_path / "missing.yaml")
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}: (file): file not found"
    with pytest.raises(ConfigError, match="is a directory"):
        load_scenario(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_scenario(binary)
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert load_scenario(good).name == "t"
    assert load_scenario(str(good)).name == "t"
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "bogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    assert str(info.value).startswith(f"{bad}:19: bogus: unknown key 'bogus'")


def test_problem_and_error_formatting():
    assert str(Problem("f.yaml", 3, "hosts.ram", "bad")) == "f.yaml:3: hosts.ram: bad"
    assert str(Problem("command line", None, "seed", "bad")) == "command line: seed: bad"
    error = ConfigError([Problem("a", 1, "x", "m1"), Problem("a", None, "y", "m2")])
    assert str(error) == "a:1: x: m1\na: y: m2"
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and str(again) == str(error)


def test_messages_have_no_pydantic_noise():
    text = BASE.replace("memory: 4GiB", "memory: [1]").replace(
        "count: 2\n    memory", "count: x\n    memory"
    )
    with pytest.raises(ConfigError) as info:
        load_scenario_text(text + "runtime: {kind: fast}\nha: 7\n")
    out = str(info.value)
    assert len(info.value.problems) == 4
    for noise in ("Value error", "pydantic", "https://", "Input should", "type="):
        assert noise not in out


# --------------------------------------------------------------------------------------------
# Overrides


def test_apply_overrides_success():
    s = load_scenario_text(FULL, "full.yaml")
    t = apply_overrides(
        s,
        {
            "seed": "7",
            "mechanism": "none",
            "duration": "20min",
            "hosts.count": 4,
            "guests.0.count": 3,
            "guests[1].memory": "2GiB",
            "hosts.swap.size": 0,
        },
    )
    assert (t.seed, t.mechanism, t.duration, t.hosts.count) == (7, "none", 1200.0, 4)
    assert [g.name for g in t.guest_specs()] == ["web-1", "web-2", "web-3", "db"]
    assert t.guests[1].memory == 2 * GiB and t.hosts.swap.size == 0
    assert s.seed == 42 and s.guests[0].count == 6  # the original is unchanged
    # overrides accumulate
    u = apply_overrides(t, {"seed": 9})
    assert (u.seed, u.guests[0].count) == (9, 3)
    assert apply_overrides(s, {}) is s


def test_apply_overrides_yaml_values_and_unknown_event_guest():
    s = load_scenario_text(BASE)
    t = apply_overrides(s, {"hosts.names": "[a, b]", "events": "[]"})
    assert t.host_names() == ["a", "b"] and t.events == []


def test_apply_overrides_on_directly_built_scenario():
    s = Scenario.model_validate(yaml.safe_load(BASE))
    t = apply_overrides(s, {"guests.0.memory": "8GiB"})
    assert t.guests[0].memory == 8 * GiB


def test_apply_overrides_located_failure():
    s = load_scenario_text(BASE, "s.yaml")
    with pytest.raises(ConfigError) as info:
        apply_overrides(s, {"mechanism": "foo"})
    assert str(info.value) == f"command line: mechanism: {UNKNOWN_FOO}"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"guests.0.count": "many"}, "command line: guests.0.count: expected an integer"),
        ({"guests.3.count": 1}, "command line: guests.3.count: cannot set guests.3.count: index 3"),
        (
            {"duration.deep": 1},
            "command line: duration.deep: cannot set duration.deep: duration is",
        ),
        ({"hosts.cpus": 4}, "command line: hosts.cpus: unknown key 'cpus'"),
        ({"hosts.ram": "-1"}, "command line: hosts.ram: expected a size like 4GiB, got '-1'"),
        (
            {"guests.0.workload": "{kind: zipf, working_set: 1GiB}"},
            "command line: guests.0.workload.access_rate: required",
        ),
        ({"hosts.names": "[a, b"}, "command line: hosts.names: cannot parse '[a, b' as YAML"),
        ({"": 1}, "command line: (empty path): empty override path"),
        ({"guests..count": 1}, "command line: guests..count: malformed path"),
    ],
)
def test_apply_overrides_failures(overrides, expected):
    s = load_scenario_text(BASE, "s.yaml")
    with pytest.raises(ConfigError) as info:
        apply_overrides(s, overrides)
    assert len(info.value.problems) == 1
    assert str(info.value).startswith(expected), str(info.value)


def test_override_breaking_another_field_keeps_file_location():
    s = load_scenario_text(BASE, "s.yaml")
    with pytest.raises(ConfigError) as info:
        apply_overrides(s, {"hosts.ram": "1GiB"})
    (p,) = info.value.problems
    assert (p.source, p.line, p.field) == ("s.yaml", line_of(BASE, "reserve"), "hosts.reserve")
    assert p.message.endswith("(after command-line overrides)")


def test_set_path():
    data = {"a": {"b": 1}, "l": [{"x": 1}, {"x": 2}]}
    shared = data["l"][1]
    assert set_path(data, "a.b", 2) == ("a", "b")
    assert set_path(data, "l.1.x", 5) == ("l", 1, "x")
    assert set_path(data, "l[0].x", 4) == ("l", 0, "x")
    assert set_path(data, "new.deep.key", "v") == ("new", "deep", "key")
    assert data == {
        "a": {"b": 2},
        "l": [{"x": 4}, {"x": 5}],
        "new": {"deep": {"key": "v"}},
    }
    assert shared == {"x": 2}  # containers on the path are copied, not changed in place
    for path in ["l.x", "l.5.x", "a.b.c", "", "a..b"]:
        with pytest.raises(ValueError):
            set_path(copy.deepcopy(data), path, 1)


# --------------------------------------------------------------------------------------------
# Documentation examples


def yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown, flags=re.DOTALL)


def test_docs_yaml_examples_load():
    blocks = yaml_blocks(DOCS.read_text())
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        load_scenario_text(block, f"docs/config.md block {index}")


# --------------------------------------------------------------------------------------------
# Fuzzing: bad input only ever gives ConfigError, with sane locations


def check_outcome(text: str) -> None:
    try:
        result = load_scenario_text(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems
        line_count = max(1, len(text.splitlines()))
        for problem in exc.problems:
            assert problem.field
            assert problem.source == "fuzz.yaml"
            assert problem.message and "\n" not in problem.message
            if problem.line is not None:
                assert 1 <= problem.line <= line_count, (problem, line_count)
        str(exc)
    else:
        assert isinstance(result, Scenario)
        result.guest_specs()
        result.to_json()


YAMLISH = st.lists(
    st.sampled_from(
        list(":-[]{},#&*!|>'\"\n\t %@`?<=.0123456789abkGiBms")
        + ["name", "guests", "hosts", "ram", "duration", "\n  ", ": ", "- ", "<<: ", "&a ", "*a"]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), YAMLISH))
def test_fuzz_arbitrary_text(text):
    check_outcome(text)


def all_paths(data, prefix=()):
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            paths += all_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths += all_paths(value, (*prefix, index))
    return paths


FULL_DATA = yaml.safe_load(FULL)
PATHS = all_paths(FULL_DATA)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["4GiB", "-1GiB", "100ms", "200k/s", "20%", "host-1", "web-3", "zipf"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=6), scalars, max_size=2),
)
mutations = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("replace"), st.sampled_from(PATHS), values),
    st.tuples(
        st.just("add"), st.sampled_from([(), *PATHS]), st.tuples(st.text(max_size=8), values)
    ),
)


def mutate(data, mutation):
    action, path, value = mutation
    parent = data
    for step in path[:-1] if action != "add" else path:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return
    if action == "add":
        if isinstance(parent, dict):
            parent[value[0]] = value[1]
        elif isinstance(parent, list):
            parent.append(value[1])
        return
    try:
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutations, min_size=1, max_size=3))
def test_fuzz_mutated_scenarios(mutation_list):
    data = copy.deepcopy(FULL_DATA)
    for mutation in mutation_list:
        mutate(data, mutation)
    text = yaml.safe_dump(data, sort_keys=False)
    check_outcome(text)


def test_store_reserved_names_are_refused():
    text = """name: x
duration: 1s
hosts: {count: 1, names: [shared], ram: 1GiB}
guests:
  - {name: meta, memory: 256MiB, workload: {kind: zipf, working_set: 128MiB, access_rate: 1k/s}}
"""
    with pytest.raises(ConfigError) as info:
        load_scenario_text(text, "t.yaml")
    fields = [(p.line, p.field) for p in info.value.problems]
    assert fields == [(3, "hosts.names"), (5, "guests[0].name")]


@pytest.mark.parametrize(
    ("runtime", "hosts", "cpus", "expected"),
    [
        ({"guests": "packed"}, 16, 2, 8),  # auto, the default: as many processes as CPUs
        ({"guests": "packed"}, 4, 2, 2),
        ({"guests": "packed"}, 5, 2, 3),  # 3 and 2: two processes
        ({"guests": "packed"}, 16, 64, 1),  # CPUs enough for one host each
        ({"guests": "packed"}, 3, 0, 3),  # no CPU reported: one process
        ({"guests": "packed", "hosts_per_actor": 1}, 16, 2, 1),  # a number is kept
        ({"guests": "packed", "hosts_per_actor": 3}, 16, 64, 3),
        ({"guests": "actors"}, 16, 2, 1),  # guests as actors: one host per actor
        ({"guests": "packed", "pin": "resource"}, 16, 2, 1),  # a host per node
        ({"kind": "inline", "guests": "packed"}, 16, 2, 1),
    ],
)
def test_hosts_per_actor_auto_spreads_hosts_over_the_cpus(runtime, hosts, cpus, expected):
    from overcommit.config.hosts import Runtime

    rt = Runtime(**runtime)
    assert rt.per_actor(hosts, cpus) == expected
    processes = -(-hosts // expected)
    if rt.hosts_per_actor == "auto" and expected > 1:
        assert processes <= max(1, cpus) < -(-hosts // (expected - 1))
