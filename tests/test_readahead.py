"""Swap readahead as Linux does it (nodes/kernel/readahead.py): pages read ahead are reclaimed
first until touched, under `clock` and `lru` alike, and the window adapts to its hits."""

from __future__ import annotations

import functools

import pytest

from overcommit.cluster.engine import run_scenario
from overcommit.config import load_scenario_text

SCENARIO = """
name: ra
seed: 5
duration: 10s
epoch: 100ms
sync_window: 1s
runtime: {{kind: inline}}
mechanism: none
hosts: {{ram: 1GiB}}
shared_storage: {{device: ssd}}
guests:
  - name: g
    memory: 64MiB
    swap: 256MiB
    readahead: {ra}
    lru: {lru}
    workload: {{kind: zipf, working_set: {ws}, access_rate: 20k/s, write_fraction: 0.2,
               skew: {skew}}}
"""


@functools.cache
def totals(ra: int, lru: str, skew: float = 0.8, ws: str = "128MiB") -> dict:
    text = SCENARIO.format(ra=ra, lru=lru, skew=skew, ws=ws)
    r = run_scenario(load_scenario_text(text, "ra.yaml"))
    assert r.valid
    return r.summary["totals"]


def miss_ratio(t: dict) -> float:
    """Touches that found their page on the swap disk."""
    return (t["faults"] - t["first_touches"]) / t["touches"]


@pytest.mark.parametrize("lru", ["clock", "lru"])
def test_readahead_on_a_zipf_stream_misses_no_more_than_without_and_reads_in_fewer_ops(lru):
    one, eight = totals(1, lru), totals(8, lru)
    assert miss_ratio(one) > 0.05  # the stream does swap
    assert miss_ratio(eight) == pytest.approx(miss_ratio(one), rel=0.03)
    assert eight["disk_read_ops"] < one["disk_read_ops"]
    assert eight["readahead_pages"] > 0 and one["readahead_pages"] == 0
    # every page read ahead was touched, evicted untouched, or is still resident untouched
    assert eight["readahead_hits"] + eight["readahead_misses"] <= eight["readahead_pages"]


def test_clock_and_lru_miss_alike_with_readahead():
    """Unused readahead pages no longer wait for the clock hand: they go first under both."""
    assert miss_ratio(totals(8, "clock")) == pytest.approx(miss_ratio(totals(8, "lru")), rel=0.05)


def test_the_window_shrinks_on_a_uniform_stream_over_a_large_footprint():
    t = totals(8, "clock", skew=0.0, ws="192MiB")
    # a fixed window of 8 reads up to 7 pages ahead per disk fault; almost none are used, so
    # the window falls toward 1 (halving at most each time): about one page ahead per fault
    assert t["readahead_hits"] < 0.05 * t["readahead_pages"]
    assert t["readahead_pages"] < 1.5 * t["disk_read_ops"]
