"""Pure-model pieces: placement and admission, demand splits, workload generators, seeding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from overcommit.cluster.engine import run_scenario
from overcommit.cluster.placement import HostRoom, PlacementError, place
from overcommit.config import load_scenario_text
from overcommit.nodes.frontswap import fill_by_demand
from overcommit.nodes.host import split_by_demand
from overcommit.rng import stable_hash, stream
from overcommit.workloads.generators import Phase, TouchStreams, Workload

GiB = 2**30


def guest(name: str, memory: int, host: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(name=name, memory=memory, host=host)


def rooms(*caps: int) -> list[HostRoom]:
    return [HostRoom(f"h{i + 1}", c) for i, c in enumerate(caps)]


NO_HA = SimpleNamespace(admission="none", tolerate=1, percentage=0.25)


def test_first_fit_fills_hosts_in_order():
    gs = [guest(f"g{i}", 3 * GiB) for i in range(4)]
    assert place(gs, rooms(8 * GiB, 8 * GiB), "first-fit", NO_HA) == {
        "g0": "h1",
        "g1": "h1",
        "g2": "h2",
        "g3": "h2",
    }


def test_most_free_and_balanced_spread():
    gs = [guest(f"g{i}", 2 * GiB) for i in range(3)]
    assert place(gs, rooms(8 * GiB, 8 * GiB), "most-free", NO_HA) == {
        "g0": "h1",
        "g1": "h2",
        "g2": "h1",
    }
    # balanced looks at the reserved share, not absolute free: the small host fills too
    got = place(gs, rooms(16 * GiB, 4 * GiB), "balanced", NO_HA)
    assert got == {"g0": "h1", "g1": "h2", "g2": "h1"}
    assert place(gs, rooms(16 * GiB, 4 * GiB), "most-free", NO_HA) == {
        "g0": "h1",
        "g1": "h1",
        "g2": "h1",
    }


def test_named_host_and_no_room():
    gs = [guest("a", 3 * GiB, host="h2"), guest("b", 3 * GiB)]
    assert place(gs, rooms(4 * GiB, 4 * GiB), "first-fit", NO_HA) == {"a": "h2", "b": "h1"}
    with pytest.raises(PlacementError, match="fits on no host"):
        place([guest("a", 3 * GiB), guest("b", 3 * GiB)], rooms(4 * GiB), "first-fit", NO_HA)


def test_admission_host_failures_and_percentage():
    gs = [guest(f"g{i}", 4 * GiB) for i in range(4)]  # 16 GiB of reservations
    ha1 = SimpleNamespace(admission="host-failures", tolerate=1, percentage=0.0)
    place(gs, rooms(8 * GiB, 8 * GiB, 8 * GiB), "first-fit", ha1)  # 24 - 8 = 16: admitted
    with pytest.raises(PlacementError, match="host-failures"):
        place(gs + [guest("x", 1 * GiB)], rooms(8 * GiB, 8 * GiB, 8 * GiB), "first-fit", ha1)
    pct = SimpleNamespace(admission="percentage", tolerate=0, percentage=0.5)
    with pytest.raises(PlacementError, match="percentage"):
        place(gs, rooms(8 * GiB, 8 * GiB, 8 * GiB), "first-fit", pct)  # 16 > 12


@given(
    st.integers(0, 10_000),
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=12),
)
def test_split_by_demand_is_exact_and_proportional(total, demand):
    got = split_by_demand(total, demand)
    assert sum(got) == total and min(got) >= 0
    assert got == split_by_demand(total, demand)
    d = np.asarray(demand)
    if d.sum() > 0:
        exact = total * d / d.sum()
        assert np.all(np.abs(np.asarray(got) - exact) < 1.0 + 1e-9)


def test_stable_hash_and_streams_are_reproducible():
    assert stable_hash("web-1", 0) == stable_hash("web-1", 0) != stable_hash("web-2", 0)
    a = stream(42, "web-1").random(5)
    assert np.array_equal(a, stream(42, "web-1").random(5))
    assert not np.array_equal(a, stream(42, "web-1", incarnation=1).random(5))
    assert not np.array_equal(a, stream(43, "web-1").random(5))


def streams(seed: int = 1) -> TouchStreams:
    return TouchStreams(seed, "w", 0, "workload/0")


def test_uniform_and_skewed_touches():
    n = 10_000
    uni = Workload(n, [Phase(np.inf, n, 1e6, 0.25, 0.0)], False, 0.5)
    pages, writes = uni.touches(streams(), 0.0, 1.0)
    assert abs(len(pages) - 1e6) < 5_000
    counts = np.bincount(pages, minlength=n)
    assert counts.max() < 2.0 * counts.mean()
    assert abs(writes.mean() - 0.25) < 0.01
    hot = Workload(n, [Phase(np.inf, n, 1e6, 0.25, 1.2)], False, 0.5)
    pages, _ = hot.touches(streams(), 0.0, 1.0)
    top = np.sort(np.bincount(pages, minlength=n))[::-1]
    assert top[:100].sum() > 0.5 * len(pages)  # a few pages take most touches


def test_touch_sequence_is_the_same_whatever_the_pace():
    w = Workload(5_000, [Phase(np.inf, 5_000, 1e5, 0.3, 0.9)], False, 0.5)
    a, b = streams(), streams()
    fast = [w.touches(a, 0.0, 0.1) for _ in range(4)]
    slow = [w.touches(b, 0.0, 0.05) for _ in range(8)]
    pf = np.concatenate([p for p, _ in fast])
    ps = np.concatenate([p for p, _ in slow])
    k = min(len(pf), len(ps))
    assert k > 30_000 and np.array_equal(pf[:k], ps[:k])


def test_each_phase_occurrence_has_its_own_sequence():
    w = Workload(
        5_000, [Phase(1.0, 5_000, 1e4, 0.3, 0.9), Phase(1.0, 2_000, 1e4, 0.3, 0.9)], True, 0.5
    )
    assert w.phase_at(0.5) == (0, 0) and w.phase_at(1.5) == (1, 0) and w.phase_at(2.2) == (0, 1)
    a, b = streams(), streams()
    a_first = w.touches(a, 0.0, 0.02)[0]
    # a slower guest: fewer touches in phase 0, yet phase 1 starts the same sequence
    w.touches(b, 0.0, 0.01)
    pa, pb = w.touches(a, 1.0, 0.05)[0], w.touches(b, 1.0, 0.05)[0]
    k = min(len(pa), len(pb))
    assert k > 100 and np.array_equal(pa[:k], pb[:k])
    assert not np.array_equal(a_first[:k], pa[:k])


def test_phases_follow_their_schedule_in_a_run():
    text = """
name: phases
duration: 12s
mechanism: none
runtime: {kind: inline}
hosts: {ram: 512MiB}
guests:
  - name: p
    memory: 128MiB
    workload:
      kind: phases
      repeat: true
      phases:
        - {duration: 3s, working_set: 32MiB, access_rate: 2k/s}
        - {duration: 3s, working_set: 64MiB, access_rate: 20k/s}
"""
    r = run_scenario(load_scenario_text(text, "phases.yaml"))
    g = r.guests
    rate = g.groupby((g["t"] // 3).astype(int))["touches"].sum() / 3.0
    assert list(rate.index) == [0, 1, 2, 3]
    assert rate[0] < 3_000 and rate[2] < 3_000
    assert rate[1] > 15_000 and rate[3] > 15_000
    # the first phase never touches beyond its 32 MiB working set
    first = g[g["t"] < 3.0]
    assert (first["resident_pages"] <= 32 * 256).all()
    assert r.valid


@given(
    st.integers(0, 5_000),
    st.lists(st.tuples(st.floats(0, 1e4, allow_nan=False), st.integers(0, 3_000)), max_size=8),
)
def test_fill_by_demand_respects_caps_and_uses_the_room(total, pairs):
    demand = [d for d, _ in pairs]
    cap = [c for _, c in pairs]
    got = fill_by_demand(total, demand, cap)
    assert all(0 <= g <= c for g, c in zip(got, cap))
    assert sum(got) == min(total, sum(cap))  # no room is lost while someone could use it
    assert got == fill_by_demand(total, demand, cap)
