"""Touch generators: the exact discrete Zipf law and the continuous power law it replaces;
the compiled touch arithmetic against the numpy path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from overcommit.workloads import generators
from overcommit.workloads.generators import (
    Phase,
    TouchStreams,
    Workload,
    _draw_ranks,
    _scatter,
    draw_zipf,
)


@pytest.mark.parametrize("ws,skew", [(1000, 1.0), (1000, 0.6), (50, 1.2), (20_000, 0.9), (7, 0.0)])
def test_zipf_draws_follow_the_discrete_law(ws: int, skew: float) -> None:
    n = 400_000
    ranks = draw_zipf(np.random.default_rng(5), n, ws, skew)
    assert ranks.min() >= 0 and ranks.max() < ws
    got = np.bincount(ranks, minlength=ws) / n
    want = np.arange(1, ws + 1, dtype=float) ** -skew
    want /= want.sum()
    # every rank expected at least 50 times within 5 binomial standard deviations; the rest
    # in log-spaced buckets of ranks; and chi-square on the top ranks
    sd = np.sqrt(want * (1 - want) / n)
    big = want * n >= 50
    assert np.all(np.abs(got - want)[big] <= 5 * sd[big])
    edges = np.unique(np.geomspace(1, ws, 12).astype(int))
    for lo, hi in zip(edges[:-1], edges[1:]):
        g, w = got[lo:hi].sum(), want[lo:hi].sum()
        assert abs(g - w) <= 5 * np.sqrt(w * (1 - w) / n) + 1e-12
    top = min(ws, 30)
    chi2 = float(np.sum((got[:top] - want[:top]) ** 2 / want[:top]) * n)
    assert chi2 < top + 6 * np.sqrt(2 * top)


def test_zipf_top_page_share_at_skew_one_over_200k_pages() -> None:
    """The figure that tells the two laws apart: at s = 1 over 200k pages the hottest page
    gets 1/H(200000) = 7.8% of touches under Zipf, 5.7% under the continuous law."""
    ws, n = 200_000, 400_000
    h = float(np.sum(1.0 / np.arange(1, ws + 1)))
    zipf_top = np.mean(draw_zipf(np.random.default_rng(1), n, ws, 1.0) == 0)
    power_top = np.mean(_draw_ranks(np.random.default_rng(1), n, ws, 1.0, "power") == 0)
    assert zipf_top == pytest.approx(1 / h, abs=0.002)
    assert 1 / h == pytest.approx(0.078, abs=0.001)
    assert power_top == pytest.approx(0.057, abs=0.002)


def test_zipf_sequence_does_not_depend_on_batch_sizes() -> None:
    """Common random numbers: drawing 10,000 ranks at once or in uneven batches from the same
    stream gives the same sequence."""
    whole = draw_zipf(np.random.default_rng(3), 10_000, 5_000, 0.9)
    rng = np.random.default_rng(3)
    parts = [draw_zipf(rng, k, 5_000, 0.9) for k in (1, 999, 3000, 6000)]
    assert np.array_equal(whole, np.concatenate(parts))


def test_zipf_draws_are_a_function_of_the_stream() -> None:
    a = draw_zipf(np.random.default_rng(9), 10_000, 5_000, 0.8)
    b = draw_zipf(np.random.default_rng(9), 10_000, 5_000, 0.8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, draw_zipf(np.random.default_rng(10), 10_000, 5_000, 0.8))


def test_scenario_distribution_reaches_the_generator() -> None:
    from overcommit.config import load_scenario_text
    from overcommit.workloads import make_workload

    text = """
name: w
duration: 1s
hosts: {ram: 1GiB}
guests:
  - {name: g, memory: 256MiB,
     workload: {kind: zipf, working_set: 64MiB, access_rate: 1k/s%s}}
"""
    default = load_scenario_text(text % "", "<t>").guests[0].workload
    power = load_scenario_text(text % ", distribution: power", "<t>").guests[0].workload
    assert default.distribution == "zipf" and power.distribution == "power"
    assert make_workload(default, 4096).phases[0].distribution == "zipf"
    assert make_workload(power, 4096).phases[0].distribution == "power"


def _load_workload(text: str):
    from overcommit.config import load_scenario_text
    from overcommit.workloads import make_workload

    sc = load_scenario_text(
        "name: w\nduration: 1s\npage_size: 64KiB\nhosts: {ram: 1GiB}\nguests:\n"
        f"  - {{name: g, memory: 256MiB, workload: {text}}}\n",
        "<t>",
    )
    return make_workload(sc.guests[0].workload, 64 * 1024)


def test_sweep_writes_the_region_in_order_at_its_rate() -> None:
    """region 1MiB from 512KiB on = pages 8..23 (16 pages); 37 pages/s over 0.1 s epochs is
    3.7 a epoch, the fraction carried: after N epochs exactly floor(3.7 N) writes, in page
    order, wrapping at the region's end."""
    from overcommit.workloads import TouchStreams

    wl = _load_workload("{kind: sweep, region: 1MiB, start: 512KiB, rate: 37}")
    assert wl.footprint == 24
    streams = TouchStreams(1, "g", 0, "workload/0")
    pages, writes = [], []
    epochs = 50
    for e in range(epochs):
        p, w = wl.touches(streams, e * 0.1, 0.1)
        assert len(p) in (3, 4)
        pages.append(p)
        writes.append(w)
    allp = np.concatenate(pages)
    assert np.concatenate(writes).all()
    n = int(37 * 0.1 * epochs + 1e-9)
    assert len(allp) == n  # 185
    assert np.array_equal(allp, 8 + np.arange(n) % 16)
    assert set(allp.tolist()) == set(range(8, 24))  # every region page, nothing outside it
    # after only 4 epochs (14 writes) the first 14 pages of the region, once each
    fresh = TouchStreams(2, "g", 0, "workload/0")
    first = np.concatenate([wl.touches(fresh, e * 0.1, 0.1)[0] for e in range(4)])
    assert first.tolist() == list(range(8, 22))
    # a stall (no work) writes nothing and does not move the writer
    assert len(wl.touches(fresh, 0.4, 0.0)[0]) == 0
    assert wl.touches(fresh, 0.5, 0.1)[0][0] == 22


BURSTS = (
    "{kind: bursts, working_set: 1MiB, access_rate: 100, burst: {duration: {dist: exponential,"
    " mean: 2s}, gap: {dist: exponential, mean: 5s}, working_set: 4MiB, access_rate: 1k/s}}"
)


def test_burst_episodes_follow_the_seed() -> None:
    from overcommit.rng import stream
    from overcommit.workloads import TouchStreams

    wl = _load_workload(BURSTS)
    assert wl.footprint == 64
    eps = wl.episodes(TouchStreams(7, "g", 0, "workload/0"), 100.0)
    again = wl.episodes(TouchStreams(7, "g", 0, "workload/0"), 100.0)
    other = wl.episodes(TouchStreams(8, "g", 0, "workload/0"), 100.0)
    assert eps == again and eps != other
    assert eps[-1][1] > 100.0
    # the boundaries are the seeded gap, burst, gap, ... draws of the incarnation's own stream
    rng = stream(7, "g", 0, "workload/0/bursts")
    end = 0.0
    for start, stop in eps:
        gap, dur = rng.exponential(5.0), rng.exponential(2.0)
        assert start == pytest.approx(end + gap) and stop == pytest.approx(start + dur)
        end = stop
    # touches follow the episodes: the burst's rate and larger working set inside one
    s = TouchStreams(7, "g", 0, "workload/0")
    start, stop = wl.episodes(s, 0.0)[0]
    inside = wl.touches(s, start + 1e-6, 1.0)[0]
    outside = wl.touches(s, start / 2, 1.0)[0]
    assert len(inside) > 500 and len(outside) < 200
    assert wl.episode_at(s, start + 1e-6) == (1, 0) and wl.episode_at(s, stop + 1e-6)[0] == 0


def test_bad_burst_distribution_is_one_located_line() -> None:
    from overcommit.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        _load_workload(BURSTS.replace("mean: 2s", "min: 2s"))
    assert "burst" in str(exc.value) and "\n" not in str(exc.value).strip()


def _run(monkeypatch, jit: bool, wl: Workload, works: list[float], seed: int = 4):
    """The touches of `wl` over calls of `works` seconds of work each (epochs of 0.1 s), on
    one path, with the generators' states after."""
    monkeypatch.setattr(generators, "JIT", jit)
    streams = TouchStreams(seed, "g", 0, "workload/0")
    out = [wl.touches(streams, k * 0.1, w) for k, w in enumerate(works)]
    states = [streams.count.bit_generator.state]
    states += [g.bit_generator.state for pair in streams._pairs.values() for g in pair]
    return out, states


LAWS = [("power", s) for s in (0.0, 0.5, 0.99, 1.0, 1.2)] + [
    ("zipf", s) for s in (0.0, 0.6, 0.99, 1.2)
]


@pytest.mark.parametrize("law,skew", LAWS)
@pytest.mark.parametrize(
    "footprint,ws,wf",
    [
        (163_840, 163_840, 0.3),
        (5_000, 1_000, 0.0),
        (7, 7, 1.0),
        (1, 1, 0.5),
        ((1 << 26) + 9, 900, 0.7),
    ],
)
def test_compiled_touches_are_the_numpy_paths(monkeypatch, law, skew, footprint, ws, wf) -> None:
    """Same pages, same write flags, call by call, and the same draws (the streams end in the
    same state), over calls of uneven sizes (none, one touch, hundreds, thousands)."""
    wl = Workload(footprint, [Phase(math.inf, ws, 5000.0, wf, skew, distribution=law)], False, 0.5)
    works = [0.1, 0.0, 0.0002, 0.1, 0.7, 0.013, 0.1, 2.0, 0.05]
    got, got_states = _run(monkeypatch, True, wl, works)
    want, want_states = _run(monkeypatch, False, wl, works)
    assert sum(len(p) for p, _ in want) > 10_000
    for (p, w), (pp, ww) in zip(got, want, strict=True):
        assert p.dtype == pp.dtype == np.int64 and w.dtype == ww.dtype == bool
        assert np.array_equal(p, pp) and np.array_equal(w, ww)
    assert got_states == want_states


def test_compiled_touches_follow_phases_and_batch_splits(monkeypatch) -> None:
    """A repeating three-phase workload (both laws, a smaller working set in a larger
    footprint): the compiled path gives the numpy path's touches call by call, and within a
    phase the same sequence whatever the batch sizes (common random numbers)."""
    phases = [
        Phase(0.5, 20_000, 40_000.0, 0.3, 0.99, distribution="power"),
        Phase(0.3, 3_000, 20_000.0, 0.6, 1.1, distribution="zipf"),
        Phase(0.4, 30_000, 30_000.0, 0.1, 0.0, distribution="power"),
    ]
    wl = Workload(30_000, phases, True, 0.5)
    works = [0.1] * 30
    got, got_states = _run(monkeypatch, True, wl, works)
    want, want_states = _run(monkeypatch, False, wl, works)
    for (p, w), (pp, ww) in zip(got, want, strict=True):
        assert np.array_equal(p, pp) and np.array_equal(w, ww)
    assert got_states == want_states
    # the first phase's sequence, in calls of 0.1 s (numpy) or of 0.03 s (compiled)
    slow, _ = _run(monkeypatch, True, wl, [0.03] * 5)
    pages = np.concatenate([p for p, _ in slow])
    writes = np.concatenate([w for _, w in slow])
    first = np.concatenate([p for p, _ in want[:5]])
    assert 0 < len(pages) < len(first)
    assert np.array_equal(pages, first[: len(pages)])
    assert np.array_equal(writes, np.concatenate([w for _, w in want[:5]])[: len(pages)])


@pytest.mark.parametrize("law,skew", LAWS)
def test_compiled_laws_on_millions_of_draws(monkeypatch, law, skew) -> None:
    """Two million touches a call over working sets from 2 pages to 2**22: the ranks the
    compiled path derives (power law: truncated and clipped; Zipf: looked up through the
    bucket index) and scatters are the numpy path's, everywhere."""
    for ws in (2, 1_000, 163_840, 1 << 22):
        wl = Workload(ws, [Phase(math.inf, ws, 2e6, 0.3, skew, distribution=law)], False, 0.5)
        (got,), _ = _run(monkeypatch, True, wl, [1.0], seed=ws)
        (want,), _ = _run(monkeypatch, False, wl, [1.0], seed=ws)
        assert len(got[0]) > 1_900_000
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_scatter_is_the_remainder() -> None:
    """The division-free `(r * mult + offset) % footprint` at its limits."""
    rng = np.random.default_rng(2)
    for n in (1, 2, 3, 1000, 163_840, (1 << 26) - 1):
        mult = generators._unit_multiplier(n)
        r = np.concatenate([rng.integers(0, n, 2000), [0, n - 1]])
        for off in (0, n // 3, n - 1):
            want = (r * mult + off) % n
            got = [_scatter(int(x), mult, off, n, 1.0 / n) for x in r]
            assert got == want.tolist()


def test_compiled_uniforms_are_the_generators_bit_for_bit() -> None:
    """The kernels' draws are `Generator.random`'s, and `x * scale + shift` rounds twice as
    numpy's `x *= scale; x += shift` does (no fused multiply-add), on a million draws."""
    for scale, shift in ((1.0, 0.0), (0.1234567, 1.0), (-0.887, 1.0), (12.006, 0.0)):
        a, b = np.random.default_rng(8), np.random.default_rng(8)
        fn, state = generators._address(a)
        got = generators._uniforms(fn, state, 1_000_000, scale, shift)
        want = b.random(1_000_000)
        want *= scale
        want += shift
        assert np.array_equal(got.view(np.int64), want.view(np.int64))
        assert a.bit_generator.state == b.bit_generator.state
