"""Touch generators: the exact discrete Zipf law and the continuous power law it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from overcommit.workloads.generators import _draw_ranks, draw_zipf


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
