"""Background reclaim costs CPU: kswapd's frontswap puts (refused ones too) and its batches
into a host disk cache are charged to the guest's vCPU (`background_cpu`), derived by hand here
from the configured costs; hypercalls and I/O exits are counted."""

from __future__ import annotations

import functools

import pytest

from overcommit.cluster.engine import run_scenario
from overcommit.config import load_scenario_text

H, P, X = 1e-3, 250e-6, 2e-3  # hypercall, tmem put, I/O exit (seconds)
RAM_BW = 10e9  # bytes/s of a page copy (the default)
B = 8  # pages per write batch (swap_cluster)

# every other cost is zero; kswapd keeps far ahead (wide watermarks): no direct reclaim
SCENARIO = """
name: bg
seed: 3
duration: 6s
epoch: 100ms
sync_window: 1s
runtime: {{kind: inline}}
mechanism: {mechanism}
costs: {{hypercall: 1ms, tmem_put: 250us, io_exit: 2ms, minor_fault: 0s, major_fault: 0s,
        tmem_get: 0s, tmem_flush: 0s, host_page_alloc: 0s}}
hosts: {{ram: 256MiB, reserve: 16MiB, tmem: {{max: 4MiB}}}}
shared_storage: {{device: ssd}}
guests:
  - name: g
    memory: 16MiB
    maxmem: 64MiB
    swap: 64MiB
    readahead: 1
    swap_cluster: 8
    watermarks: {{min: 0.01, low: 0.2, high: 0.3}}
    workload: {{kind: zipf, working_set: 40MiB, access_rate: 2k/s, write_fraction: 0.5,
               skew: 0.3}}
"""


@functools.cache
def run(mechanism: str):
    sc = load_scenario_text(SCENARIO.format(mechanism=mechanism), "bg.yaml")
    r = run_scenario(sc)
    assert r.valid
    return r.summary["totals"], sc.page_size


def test_background_frontswap_puts_cost_a_hypercall_a_put_and_a_copy_each():
    t, ps = run("frontswap")
    assert t["direct_reclaims"] == 0 and t["stall_by_source"]["reclaim_put"] == 0.0
    n_ok, n_fail = t["frontswap_puts"], t["frontswap_put_failures"]
    assert n_ok > 500 and n_fail > 50  # both kinds happen (the pool is small)
    by_hand = n_ok * (H + P + ps / RAM_BW) + n_fail * (H + P)  # a refused put copies nothing
    assert t["stall_by_source"]["background_cpu"] == pytest.approx(by_hand, rel=1e-9)
    # every put, get and flush is a hypercall; no disk cache: no I/O exit
    assert t["hypercalls"] == n_ok + n_fail + t["frontswap_gets"] + t["frontswap_flushes"]
    assert t["io_exits"] == 0
    # it is time the vCPU did no work
    assert t["stall_seconds"] >= t["stall_by_source"]["background_cpu"]


def test_background_writes_into_a_disk_cache_cost_an_exit_per_batch_and_the_copy():
    t, ps = run("cached-disk")
    assert t["direct_reclaims"] == 0 and t["stall_by_source"]["reclaim_write"] == 0.0
    n = t["cache_writes"]
    assert n > 500
    # readahead 1: each cache hit is a read cluster the cache served, one exit each; the rest
    # are kswapd's batches of at most B pages (at least n / B of them, one short per epoch)
    batches = t["io_exits"] - t["cache_hits"]
    epochs = 60
    assert -(-n // B) <= batches <= n // B + epochs
    by_hand = batches * X + n * ps / RAM_BW
    assert t["stall_by_source"]["background_cpu"] == pytest.approx(by_hand, rel=1e-9)
    assert t["hypercalls"] == 0


def test_swap_cluster_is_a_guest_knob_with_the_linux_default():
    sc = load_scenario_text(SCENARIO.format(mechanism="none"), "bg.yaml")
    assert sc.guest_specs()[0].swap_cluster == B
    plain = SCENARIO.format(mechanism="none").replace("    swap_cluster: 8\n", "")
    assert load_scenario_text(plain, "bg.yaml").guest_specs()[0].swap_cluster == 32
