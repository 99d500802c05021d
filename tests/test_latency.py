"""Fault latencies are modelled per fault: each device read's queue position within its epoch
and its own size, and the histogram is fine enough for percentiles to tell mechanisms apart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overcommit.nodes.kernel.epoch import queued_latencies
from overcommit.nodes.kernel.types import HIST_BINS, _hist_bins, hist_percentile
from overcommit.profiles import DeviceProfile, DeviceQueue

S = 100e-6  # service time of one read (the byte time is negligible at this bandwidth)
FIXED = 3e-6


def _device() -> DeviceQueue:
    return DeviceQueue(DeviceProfile("t", S, S, 1e9, 1e18))  # idle: no window queueing


def _hist(lat: np.ndarray) -> np.ndarray:
    return np.bincount(_hist_bins(lat), minlength=HIST_BINS)


def test_the_ith_read_of_an_epoch_waits_behind_the_ones_before_it():
    n = 8
    lat, busy = queued_latencies(_device(), np.full(n, 4096.0), FIXED)
    assert lat == pytest.approx(FIXED + S * np.arange(1, n + 1), rel=1e-6)
    assert busy == pytest.approx(n * S, rel=1e-6)
    # a later device user of the same epoch (page-cache reads) queues behind them
    more, _ = queued_latencies(_device(), np.full(2, 4096.0), FIXED, ahead=busy)
    assert more == pytest.approx(FIXED + S * np.array([n + 1, n + 2]), rel=1e-6)


def test_a_read_costs_its_own_size_not_the_average():
    dev = DeviceQueue(DeviceProfile("t", S, S, 1e9, 4096 / S))  # one page takes S on the wire
    lat, _ = queued_latencies(dev, np.array([4096.0, 8 * 4096.0]), 0.0)
    assert lat == pytest.approx([2 * S, 2 * S + 9 * S], rel=1e-6)


def test_p99_tells_apart_mechanisms_with_different_queue_depths():
    """Two guests on one device, one issuing 4 reads per epoch and one 64: p99 differs (with
    one latency per fault kind, or 20 bins a decade, both read the same)."""
    shallow = np.concatenate([queued_latencies(_device(), np.full(4, 4096.0), FIXED)[0]] * 16)
    deep = queued_latencies(_device(), np.full(64, 4096.0), FIXED)[0]
    p_shallow, p_deep = hist_percentile(_hist(shallow), 0.99), hist_percentile(_hist(deep), 0.99)
    assert p_deep > 10 * p_shallow
    near = queued_latencies(_device(), np.full(5, 4096.0), FIXED)[0]
    assert hist_percentile(_hist(near), 0.99) > p_shallow  # 4S vs 5S: 2.3% bins resolve it
    assert hist_percentile(_hist(shallow), 0.99) == pytest.approx(4 * S + FIXED, rel=0.03)


@given(
    sizes=st.lists(st.integers(1, 64).map(lambda n: n * 4096.0), min_size=1, max_size=40),
    util=st.floats(0.0, 1.0),
    backlog=st.floats(0.0, 0.5),
    device=st.sampled_from(["nvme", "ssd", "hdd", "san"]),
)
@settings(max_examples=200, deadline=None)
def test_vectorised_service_and_wait_equal_the_scalar_ones_bit_for_bit(
    sizes, util, backlog, device
):
    """`op_time` of an array of sizes and `waits` (what `queued_latencies` uses) give, element
    by element, exactly the floats `op_time` and `wait` give for one size."""
    from overcommit.profiles import BUILTIN_DEVICES

    q = DeviceQueue(BUILTIN_DEVICES[device], users=8)
    q.util, q.backlog = util, backlog
    b = np.array(sizes)
    assert q.profile.op_time(False, b).tolist() == [q.profile.op_time(False, x) for x in sizes]
    assert q.profile.op_time(True, b).tolist() == [q.profile.op_time(True, x) for x in sizes]
    assert q.waits(b).tolist() == [q.wait(x) for x in sizes]


@given(
    pages=st.sets(st.integers(0, 4000), max_size=60),
    ra=st.sampled_from([1, 2, 8, 32]),
    util=st.floats(0.0, 1.0),
    backlog=st.floats(0.0, 0.5),
    ahead=st.sampled_from([0.0, 1.5e-4]),
    device=st.sampled_from(["nvme", "ssd", "hdd", "san"]),
    extra=st.lists(st.floats(1e-10, 1e3), max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_compiled_read_latencies_and_histogram_equal_the_numpy_path(
    pages, ra, util, backlog, ahead, device, extra
):
    """An epoch's read latencies in one compiled pass (`jit.read_latencies`, what `_time` uses)
    are the numpy path's floats bit for bit, and the compiled histogram add (`jit.hist_add`)
    puts every latency in `_hist_bins`'s bin."""
    from overcommit.nodes.kernel import epoch, jit
    from overcommit.nodes.kernel.checks import GuestChecks
    from overcommit.profiles import BUILTIN_DEVICES

    q = DeviceQueue(BUILTIN_DEVICES[device], users=8)
    q.util, q.backlog = util, backlog
    p = np.array(sorted(pages), np.int64)
    hists = []
    with pytest.MonkeyPatch.context() as m:
        out = []
        for on in (True, False):
            m.setattr(jit, "ENABLED", on)
            lat, after = epoch._read_latencies(q, p, ra, 4096, FIXED, ahead)
            out.append((lat.tolist(), after))
            g = GuestChecks()
            g.hist = np.zeros(HIST_BINS, np.int64)
            g._hist_add_each(np.concatenate([lat, np.array(extra)]))
            hists.append(g.hist)
    assert out[0] == out[1]
    assert np.array_equal(hists[0], hists[1])
    assert hists[0].sum() == len(out[0][0]) + len(extra)
