"""The host RAM disk (`ramdisk`) against real redis-server processes, and the exits-per-page
acceptance test: the stall of N synchronous page-at-a-time tmem puts and of the same N pages
written in batches of B, derived by hand from the configured costs and checked against the
model driven epoch by epoch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from overcommit.cluster.engine import run_scenario
from overcommit.config import ConfigError, apply_overrides, load_scenario_text
from overcommit.nodes.host import Directives
from overcommit.nodes.kernel.types import SWAP
from overcommit.stores.diskcache import dcache_dirty_key, dcache_key
from tests.test_mechanisms import OneGuest, invalid

MiB = 2**20

RD = """
name: rd
seed: 5
duration: 6s
epoch: 100ms
sync_window: 500ms
runtime: {kind: inline}
mechanism: ramdisk
hosts: {ram: 256MiB, reserve: 16MiB}
shared_storage: {device: ssd}
guests:
  - name: g
    count: 2
    memory: 32MiB
    maxmem: 48MiB
    swap: 96MiB
    workload: {kind: zipf, working_set: 72MiB, access_rate: 20k/s, write_fraction: 0.4,
               skew: 0.4}
"""


@pytest.fixture(scope="module")
def rd_run():
    held: list[tuple[int, dict[str, int], dict[str, int]]] = []

    def look(epoch, runtime, fleet):  # what the host's Redis holds for each RAM disk
        client = fleet.host("host-1").client()
        pages = {g.name: client.hlen(dcache_key("oc", g.disk, "ramdisk")) for g in runtime.models()}
        in_cache = {g.name: client.hlen(dcache_key("oc", g.disk)) for g in runtime.models()}
        held.append((epoch, pages, in_cache))

    r = run_scenario(load_scenario_text(RD, "rd.yaml"), on_window=look)
    return r, held


def test_ramdisk_runs_valid_and_its_pages_are_host_ram_in_redis(rd_run):
    r, held = rd_run
    assert r.valid, invalid(r)
    t = r.summary["totals"]
    # swap-outs went to the RAM disk, swap-ins came back from it: block I/O, no hypercall
    assert t["cache_writes"] > 1000 and t["cache_hits"] > 1000
    assert t["hypercalls"] == 0 and t["frontswap_puts"] == t["frontswap_put_failures"] == 0
    assert t["io_exits"] > 0
    # each RAM disk is 16 MiB (maxmem - memory): once full, swap-outs go to the swap disk
    size = (48 - 32) * MiB // r.summary["scenario"]["page_size"]
    g = r.guests
    assert g.groupby("guest")["cache_pages"].max().tolist() == [size, size]
    assert t["cache_write_through"] > 0 and t["disk_writes"] == t["cache_write_through"]
    # the pages are in the host's Redis under the RAM disk's keys, none in a cache's
    last = {name: int(g[g["guest"] == name]["cache_pages"].iloc[-1]) for name in ("g-1", "g-2")}
    assert held[-1][1] == last and held[-1][2] == {"g-1": 0, "g-2": 0}
    # nothing is ever written back, nothing dropped: the RAM disk is the only copy
    assert t["cache_writebacks"] == t["cache_dropped"] == 0


def test_host_ram_accounting_counts_the_ramdisk_pages(rd_run):
    r, _ = rd_run
    h = r.hosts
    guests = r.guests.groupby("epoch")["cache_pages"].sum()
    assert (h["cache_pages"].to_numpy() == guests.to_numpy()).all()
    free = h["ram_pages"] - h["reserve_pages"] - h["guest_frames"] - h["cache_pages"]
    assert (h["free_pages"] == free).all() and h["cache_pages"].max() > 0
    assert (h["free_pages"] >= 0).all()


def test_ramdisk_is_deterministic():
    sc = apply_overrides(load_scenario_text(RD, "rd.yaml"), {"duration": "3s"})
    a, b = run_scenario(sc), run_scenario(sc)
    assert a.valid, invalid(a)
    assert {k: v for k, v in a.summary.items() if k != "run"} == {
        k: v for k, v in b.summary.items() if k != "run"
    }
    pd.testing.assert_frame_equal(a.guests, b.guests)


def test_the_host_cannot_take_ramdisk_pages_back():
    """A `host_reclaim` takes a cached disk's pages back (written back, dropped); a RAM disk
    cannot shrink: what it holds after the reclaim only falls by the guest's discards."""
    text = (
        RD.replace("duration: 6s", "duration: 5s") + "events:\n  - {at: 3s, host_reclaim: host-1}\n"
    )
    r = run_scenario(load_scenario_text(text, "rd.yaml"))
    assert r.valid, invalid(r)
    held = r.hosts.set_index("epoch")["cache_pages"]
    assert held.loc[29] > 0
    assert held.loc[30:].min() > 0.8 * held.loc[29]
    cd = run_scenario(
        apply_overrides(load_scenario_text(text, "rd.yaml"), {"mechanism": "cached-disk"})
    )
    assert cd.valid, invalid(cd)
    assert (
        cd.hosts.set_index("epoch")["cache_pages"].iloc[-1]
        < 0.2 * cd.hosts.set_index("epoch")["cache_pages"].loc[29]
    )


def test_a_page_deleted_from_the_ramdisk_is_caught():
    done = []

    def tamper(epoch, runtime, fleet):
        if done or epoch < 20:
            return
        g = runtime.models()[0]
        client = fleet.host(g.host).client()
        fields = sorted(client.hkeys(dcache_dirty_key("oc", g.disk, "ramdisk")))
        held = [f for f in fields if g.loc[int.from_bytes(f, "big")] == SWAP]
        if not held:
            return
        client.hdel(dcache_key("oc", g.disk, "ramdisk"), held[0])
        client.hdel(dcache_dirty_key("oc", g.disk, "ramdisk"), held[0])
        done.append(held[0])

    r = run_scenario(load_scenario_text(RD, "rd.yaml"), on_window=tamper)
    assert done and not r.valid
    assert (
        not r.summary["checks"]["integrity"]["ok"]
        or not r.summary["checks"]["no_missing_pages"]["ok"]
    )


@pytest.mark.parametrize("other", ["frontswap", "cached-disk"])
def test_ramdisk_does_not_combine_with_another_ram_backed_swap(other):
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_scenario_text(
            RD.replace("mechanism: ramdisk", f"mechanism: ramdisk+{other}"), "x.yaml"
        )


# ---------------------------------------------------------------------------------------------
# exits per page: N synchronous puts against the same N pages in batches of B

H, P, X = 1.0e-6, 0.5e-6, 5.0e-6  # hypercall, tmem put, I/O exit (the defaults), seconds
RAM_BW = 10e9
PS = 4096

ONE = """
name: exits
duration: 1s
epoch: 100ms
runtime: {{kind: inline}}
mechanism: {mechanism}
costs: {{hypercall: 1us, tmem_put: 500ns, io_exit: 5us, minor_fault: 0s, major_fault: 0s,
        tmem_get: 0s, tmem_flush: 0s, host_page_alloc: 0s}}
hosts: {{ram: 256MiB}}
guests:
  - name: g
    memory: 8MiB
    maxmem: 32MiB
    swap: 32MiB
    swap_cluster: {batch}
    watermarks: {{min: 0.02, low: 0.05, high: 0.06}}
    workload: {{kind: zipf, working_set: 24MiB, access_rate: 1k/s}}
"""


def scripted(og: OneGuest, touches: list[np.ndarray]) -> None:
    """The guest's workload touches (reads) exactly these pages, one array per epoch."""
    left = list(touches)

    def next_touches(rng, t, work):
        pages = left.pop(0).astype(np.int64)
        return pages, np.zeros(len(pages), bool)

    og.model.workload.touches = next_touches


def three_epochs(fleet, prefix: str, mechanism: str, batch: int, n_sync: int):
    """Fill RAM to the low watermark, then make direct reclaim evict exactly `n_sync` dirty
    pages, then let kswapd alone evict up to the high watermark; returns the model's stall by
    source and counters after each of the last two epochs, and the kswapd page count."""
    og = OneGuest(fleet, prefix, ONE.format(mechanism=mechanism, batch=batch))
    g = og.model
    m, lo, mn, hi = g.memory_pages, g.wm_low, g.wm_min, g.wm_high
    fill = m - lo  # no reclaim: free ends at the low watermark
    new = n_sync + lo - mn  # need - free + min = n_sync victims, all by direct reclaim
    scripted(og, [np.arange(fill), np.arange(fill, fill + new), np.arange(0)])
    d = Directives(tmem_quota=10**6, tmem_capacity=10**6, cache_budget=10**6)
    out = []
    for _ in range(3):
        og.run(1, d)
        out.append((dict(g.stall_by_source), dict(g.counters)))
    assert g.free_top == hi  # kswapd freed up to the high watermark, nothing more
    return out[1:], hi - mn


@pytest.mark.parametrize("batch", [1, 3, 4, 8, 32])
def test_exits_per_page_stall_matches_the_costs_by_hand(redis_fleet, redis_prefix, batch):
    n = 100
    copy = PS / RAM_BW
    (fs_sync, fs_async), n_bg = three_epochs(redis_fleet, redis_prefix + "f", "frontswap", batch, n)
    (rd_sync, rd_async), n_bg2 = three_epochs(redis_fleet, redis_prefix + "r", "ramdisk", batch, n)
    assert n_bg == n_bg2 > 0
    s, c = fs_sync
    # frontswap: one hypercall per page, on the faulting path (the guest waits)
    assert c["frontswap_puts"] == n and c["frontswap_put_failures"] == 0
    assert c["hypercalls"] == n and c["io_exits"] == 0
    assert s["reclaim_put"] == pytest.approx(n * (H + P + copy), rel=1e-12)
    assert s["background_cpu"] == 0.0
    s2, c2 = fs_async  # kswapd's puts: the same CPU, none of it waited for
    assert s2["reclaim_put"] == s["reclaim_put"]
    assert s2["background_cpu"] == pytest.approx(n_bg * (H + P + copy), rel=1e-12)
    assert c2["hypercalls"] == n + n_bg
    # the RAM disk: one I/O exit per batch of B pages and the copy, no hypercall
    r, k = rd_sync
    exits = math.ceil(n / batch)
    assert k["cache_writes"] == n and k["io_exits"] == exits and k["hypercalls"] == 0
    assert r["reclaim_write"] == pytest.approx(exits * X + n * copy, rel=1e-12)
    assert r["background_cpu"] == 0.0
    r2, k2 = rd_async
    assert r2["reclaim_write"] == r["reclaim_write"]
    bg_exits = math.ceil(n_bg / batch)
    assert r2["background_cpu"] == pytest.approx(bg_exits * X + n_bg * copy, rel=1e-12)
    assert k2["io_exits"] == exits + bg_exits
    # the break-even of the write path: batching wins once X / B < H + P (B > 3.33 here)
    assert (r["reclaim_write"] < s["reclaim_put"]) == (batch > X / (H + P))


MIGRATE = """
name: rd-mig
seed: 2
duration: 8s
page_size: 64KiB
runtime: {kind: inline}
mechanism: ramdisk
hosts: {count: 2, ram: 512MiB, reserve: 32MiB}
shared_storage: {device: ssd}
guests:
  - name: vm
    host: host-1
    memory: 64MiB
    maxmem: 96MiB
    swap: 128MiB
    workload: {kind: zipf, working_set: 110MiB, access_rate: 20k/s, write_fraction: 0.3,
               skew: 0.5}
events:
  - {at: 3s, migrate: vm, to: host-2}
"""


def test_a_migrating_guest_writes_its_ramdisk_to_shared_storage_and_gets_a_new_one():
    r = run_scenario(load_scenario_text(MIGRATE, "mig.yaml"))
    assert r.valid, invalid(r)
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "completed"
    size = 32 * MiB // (64 * 1024)  # maxmem - memory
    held = r.hosts.pivot(index="epoch", columns="host", values="cache_pages")
    before = held.loc[29]
    assert before["host-1"] == size and before["host-2"] == 0
    # at the switch the source's RAM disk went to the guest's swap disk (shared storage)
    assert m["cache_writebacks"] == size
    # the destination committed a RAM disk of its own, which the guest fills again
    end = held.iloc[-1]
    assert end["host-1"] == 0 and 0 < end["host-2"] <= size


def test_a_committed_ramdisk_is_room_no_one_else_gets():
    """What a RAM disk has not written yet stays promised to it: the host's room for guest
    allocations (restarts, arriving guests) and its lending leave it out; what it holds is
    counted once, in the pools."""
    from overcommit.nodes.host import GuestState, HostModel
    from overcommit.nodes.ramdisk import RamDisk

    ps = 64 * 1024
    h = HostModel("h", 1024 * MiB, 64 * MiB, ps, "eager", None, False)
    g = GuestState("g", alloc_pages=1024, maxmem_pages=1536, memory_pages=1024, swap_pages=4096)
    h.guests = [g]
    room = h.guest_room()
    RamDisk().plan_window(h)
    assert h.committed == {"g": 512} and g.plan.cache_budget == 512
    assert h.guest_room() == room - 512
    g.cache_pages = 200  # written: now in the pools, the rest still promised
    h.refresh()
    assert h.guest_room() == room - 512
    assert h.lendable() == room - 512 - 1024
    RamDisk().plan_window(h)  # a fixed size: no second commitment
    assert h.committed == {"g": 512} and h.guest_room() == room - 512
