"""Live migration (inline): pre-copy against an independent model, post-copy, what each
mechanism's memory does, failures mid-migration, evacuation."""

from __future__ import annotations

import math

import pytest

from overcommit.cluster.engine import run_scenario
from overcommit.config import apply_overrides, load_scenario_text
from overcommit.stores.codec import record_len
from overcommit.stores.tmem import TmemPool

# One guest whose whole working set is resident (pinned), writing uniformly (skew 0).
PRECOPY = """
name: precopy
seed: {seed}
duration: {duration}s
epoch: 20ms
runtime: {{kind: inline}}
mechanism: none
migration: {{bandwidth: {bw}MiB/s, auto_converge: {auto}}}
hosts: {{count: 2, ram: 1GiB, reserve: 32MiB}}
shared_storage: {{device: ssd}}
guests:
  - name: vm
    memory: 528MiB
    host: host-1
    pinned: 100%
    workload: {{kind: zipf, working_set: 512MiB, access_rate: {rate}/s, write_fraction: 1.0,
               skew: 0}}
events:
  - {{at: 1s, migrate: vm, to: host-2}}
"""

PS = 4096
W = 512 * 2**20 // PS  # pages written to, uniformly
M = 528 * 2**20 // PS  # allocated frames: the rest are zero pages


def expected_precopy(D: float, B: float, auto: bool = True, limit: float = 0.3):
    """QEMU's pre-copy, computed here from the expected dirty set of uniform writes: each
    round's set is W(1 - exp(-D t / W)) pages for D writes/s over W pages during the previous
    round of length t; round 1 sends the W resident pages and M - W zero pages (16 bytes each).
    Auto-converge throttles the CPU (20%, +10% a step) after a round whose dirty set exceeds
    half of what it sent. Returns (total seconds, downtime, rounds) or None (no convergence)."""
    sent = W * PS + (M - W) * 16
    t = sent / B
    total, theta, rounds = t, 0.0, 1
    while rounds <= 30:
        nxt = W * (1 - math.exp(-D * (1 - theta) * t / W)) * PS
        if nxt / B <= limit:
            return total + nxt / B, nxt / B, rounds
        if auto and nxt > 0.5 * sent:
            theta = 0.2 if theta == 0 else min(0.99, theta + 0.1)
        rounds += 1
        t = nxt / B
        total += t
        sent = nxt
    return None


@pytest.mark.parametrize("rate", [5000, 20000, 40000, 80000])
def test_precopy_matches_the_expected_dirty_set_model(rate):
    B = 256 * 2**20
    exp = expected_precopy(rate, B)
    assert exp is not None
    text = PRECOPY.format(seed=1, duration=int(exp[0]) + 3, bw=256, auto="true", rate=rate)
    r = run_scenario(load_scenario_text(text, "precopy.yaml"))
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "completed" and m["source"] == "host-1"
    assert m["total_seconds"] == pytest.approx(exp[0], rel=0.05)
    assert m["downtime_seconds"] == pytest.approx(exp[1], rel=0.05)
    assert m["rounds"] == exp[2]
    assert m["downtime_seconds"] <= 0.3
    assert r.summary["guests"]["vm"]["host"] == "host-2"
    assert r.summary["totals"]["migrations_completed"] == 1


def test_a_high_dirty_rate_converges_only_with_auto_converge():
    B = 256 * 2**20
    rate = 80000  # pages dirtied faster than sent: no fixed point below the limit
    assert expected_precopy(rate, B, auto=False) is None  # no convergence without throttling
    text = PRECOPY.format(seed=1, duration=15, bw=256, auto="false", rate=rate)
    sc = apply_overrides(load_scenario_text(text, "p.yaml"), {"migration.max_rounds": 5})
    r = run_scenario(sc)
    (m,) = r.summary["migrations"]
    assert m["outcome"].startswith("aborted") and m["rounds"] == 5 and m["throttle"] == 0
    assert r.summary["guests"]["vm"]["host"] == "host-1"  # it stays where it was
    with_auto = run_scenario(apply_overrides(sc, {"migration.auto_converge": True}))
    (m2,) = with_auto.summary["migrations"]
    assert m2["outcome"] == "completed" and m2["throttle"] > 0


def test_postcopy_switches_then_faults_and_pushes_the_rest():
    text = PRECOPY.format(seed=1, duration=8, bw=128, auto="true", rate=40000)
    sc = apply_overrides(
        load_scenario_text(text, "p.yaml"), {"migration.mode": "postcopy", "epoch": "100ms"}
    )
    r = run_scenario(sc)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["mode"] == "postcopy" and m["outcome"] == "completed"
    assert m["rounds"] == 1 and m["downtime_seconds"] == 0
    assert m["remote_faults"] > 0  # the guest touched pages still at the source
    assert r.summary["guests"]["vm"]["stall_by_source"]["migration"] > 0
    kinds = [e["kind"] for e in r.events]
    assert "migrated" in kinds


# A frontswap guest with pages in its host's pool; a host-swap guest with frames in host swap.
MECH = """
name: mech
seed: 5
duration: {duration}
epoch: 100ms
runtime: {{kind: inline}}
mechanism: {mechanism}
hosts: {{count: 2, ram: 320MiB, reserve: 32MiB, boot: lazy, swap: {{device: ssd, size: 256MiB}}}}
shared_storage: {{device: ssd}}
guests:
  - name: a
    count: 3
    host: host-1
    memory: 64MiB
    maxmem: 128MiB
    swap: 128MiB
    workload: {{kind: zipf, working_set: 120MiB, access_rate: 20k/s, write_fraction: 0.3,
               skew: 0.5}}
events:
  - {{at: 4s, migrate: a-1, to: host-2}}
{extra}
"""


def mech(mechanism: str, duration: str = "8s", extra: str = "", **over: object):
    sc = load_scenario_text(MECH.format(mechanism=mechanism, duration=duration, extra=extra), "m")
    return apply_overrides(sc, over) if over else sc


def test_frontswap_pages_move_to_the_destinations_pool():
    seen: dict = {}

    def look(epoch, runtime, fleet):
        pool = TmemPool(fleet.host("host-2").client(), "oc")
        seen.setdefault("dest", []).append((epoch, pool.guest_count("a-1")))

    r = run_scenario(mech("frontswap"), on_window=look)
    s = r.summary
    assert s["valid"], s["checks"]  # includes reading every pool page back from host-2's Redis
    (m,) = s["migrations"]
    assert m["outcome"] == "completed" and m["tmem_pages_moved"] > 0
    g = r.guests[r.guests.guest == "a-1"]
    moved_at = next(e["epoch"] for e in r.events if e["kind"] == "migrated")
    held = int(g[g.epoch == moved_at - 1].frontswap_pages.iloc[0])  # pages only in the pool
    before = int(g[g.epoch == moved_at - 1].tmem_pages.iloc[0])
    assert m["tmem_pages_moved"] == before and held <= before
    after = dict(seen["dest"])[moved_at]
    assert after == before  # the destination's Redis holds exactly those pages
    # round 1 carried them (Xen: persistent pages go during the live phase)
    assert m["pages_sent"] >= before


def test_flush_to_swap_policy_empties_the_pool_to_disk_first():
    r = run_scenario(mech("frontswap", **{"migration.tmem": "flush-to-swap"}))
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["tmem_pages_moved"] == 0 and m["tmem_pages_flushed"] > 0


def test_host_swapped_frames_are_read_back_on_the_source_first():
    r = run_scenario(mech("host-swap", **{"hosts.ram": "224MiB"}))
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    g = r.guests[r.guests.guest == "a-1"]
    moved_at = next(e["epoch"] for e in r.events if e["kind"] == "migrated")
    swapped = int(g[g.epoch == moved_at - 1].hswap_frames.iloc[0])
    assert swapped > 0 and m["host_swap_reads"] == swapped
    assert int(g[g.epoch == moved_at].hswap_frames.iloc[0]) == 0  # none left behind


def test_ballooned_frames_are_not_sent():
    r = run_scenario(mech("balloon"))
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    g = r.guests[r.guests.guest == "a-1"]
    first = g[g.epoch == 40].iloc[0]  # the migration's first epoch
    assert first.balloon_pages > 0
    frames = 128 * 2**20 // PS
    # round 1: resident pages in full, free frames of the allocation as zero pages; the
    # balloon's frames not at all (even as zero pages)
    zero = int(first.alloc_pages) - m["pages_sent"]
    assert int(first.alloc_pages) + int(first.balloon_pages) == frames
    resent_bytes = m["bytes_sent"] - m["pages_sent"] * PS - zero * 16
    assert resent_bytes == pytest.approx(m["pages_resent"] * PS, abs=PS)


def test_source_failure_during_precopy_loses_the_guest():
    text = PRECOPY.format(seed=1, duration=8, bw=64, auto="true", rate=5000)
    sc = load_scenario_text(text + "  - {at: 3s, fail_host: host-1}\n", "p.yaml")
    r = run_scenario(sc)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "lost: the source failed"
    assert r.summary["totals"]["guests_crashed"] == 1


def test_destination_failure_during_precopy_abandons_it():
    text = PRECOPY.format(seed=1, duration=8, bw=64, auto="true", rate=5000)
    sc = load_scenario_text(text + "  - {at: 3s, fail_host: host-2}\n", "p.yaml")
    r = run_scenario(sc)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"].startswith("abandoned")
    assert r.summary["guests"]["vm"]["host"] == "host-1"
    g = r.guests[r.guests.guest == "vm"]
    assert g[g.epoch > 150].alive.all()  # it ran on
    assert r.summary["totals"]["guests_crashed"] == 0


@pytest.mark.parametrize("dies", ["host-1", "host-2"])
def test_any_failure_during_postcopy_loses_the_guest(dies):
    text = PRECOPY.format(seed=1, duration=10, bw=256, auto="true", rate=40000)
    sc = apply_overrides(  # round 1 ends at ~3.1 s, the push runs past 3.5 s
        load_scenario_text(text + f"  - {{at: 3.5s, fail_host: {dies}}}\n", "p.yaml"),
        {"migration.mode": "postcopy"},
    )
    r = run_scenario(sc)
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "lost: a host failed during post-copy"
    assert r.summary["totals"]["guests_crashed"] == 1
    crash = next(e for e in r.events if e["kind"] == "guest_crash")
    assert crash["guest"] == "vm"


EVAC = """
name: evac
seed: 2
duration: 30s
epoch: 100ms
runtime: {kind: inline}
mechanism: none
migration: {bandwidth: 64MiB/s, concurrency: 2}
placement: first-fit
hosts: {count: 3, ram: 512MiB, reserve: 32MiB}
shared_storage: {device: ssd}
guests:
  - name: v
    count: 5
    host: host-1
    memory: 64MiB
    workload: {kind: zipf, working_set: 48MiB, access_rate: 5k/s, write_fraction: 0.2}
events:
  - {at: 2s, evacuate: host-1}
"""


def test_evacuate_empties_the_host_and_respects_the_concurrency_limit():
    r = run_scenario(load_scenario_text(EVAC, "evac.yaml"))
    s = r.summary
    assert s["valid"], s["checks"]
    migs = s["migrations"]
    assert len(migs) == 5 and all(m["outcome"] == "completed" for m in migs)
    assert all(m["evacuation"] == "host-1" for m in migs)
    assert s["hosts"]["host-1"]["guests"] == []
    assert {s["guests"][f"v-{i}"]["host"] for i in range(1, 6)} <= {"host-2", "host-3"}
    # never more than 2 at once out of host-1
    spans = [(m["t"], m["t"] + m["total_seconds"]) for m in migs]
    for t0, _ in spans:
        assert sum(1 for a, b in spans if a <= t0 < b) <= 2
    assert max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans) == 2


def test_network_drop_slows_a_migration_for_its_duration():
    text = PRECOPY.format(seed=1, duration=12, bw=256, auto="true", rate=5000)
    base = load_scenario_text(text, "p.yaml")
    slow = load_scenario_text(text + "  - {at: 1s, network: {factor: 0.25, duration: 2s}}\n", "p")
    a, b = run_scenario(base), run_scenario(slow)
    (ma,), (mb,) = a.summary["migrations"], b.summary["migrations"]
    assert mb["outcome"] == "completed"
    # 2 s at a quarter of the bandwidth sent what 0.5 s would have: about 1.5 s longer
    assert mb["total_seconds"] - ma["total_seconds"] == pytest.approx(1.5, abs=0.2)
    ev = next(e for e in b.events if e["kind"] == "network")
    assert (ev["factor"], ev["duration"]) == (0.25, 2.0)


# Regressions: a destination's memory is never promised twice; crashed guests stop migrating;
# evacuated hosts take no new guests; refusals replay.
EVAC_FULL = """
name: evacfs
seed: 3
duration: 20s
epoch: 100ms
runtime: {kind: inline}
mechanism: frontswap
migration: {bandwidth: 256MiB/s, concurrency: 1, tmem: TMEM}
placement: first-fit
hosts: {count: 2, ram: 320MiB, reserve: 32MiB, boot: lazy, swap: {device: ssd, size: 256MiB}}
shared_storage: {device: ssd}
guests:
  - {name: a, count: 2, host: host-1, memory: 64MiB, maxmem: 160MiB, swap: 160MiB,
     workload: {kind: zipf, working_set: 150MiB, access_rate: 30k/s, write_fraction: 0, skew: 0.3}}
  - {name: b, count: 2, host: host-2, memory: 64MiB, maxmem: 160MiB, swap: 160MiB,
     workload: {kind: zipf, working_set: 150MiB, access_rate: 30k/s, write_fraction: 0, skew: 0.3}}
events:
  - {at: 4s, evacuate: host-1}
"""


@pytest.mark.parametrize("policy", ["flush-to-swap", "xen"])
def test_evacuating_into_a_host_whose_ram_is_lent_never_overdraws_it(policy):
    r = run_scenario(load_scenario_text(EVAC_FULL.replace("TMEM", policy), "e.yaml"))
    s = r.summary
    assert s["valid"], s["checks"]  # RAM conservation on host-2 held every epoch
    assert (r.hosts.free_pages >= 0).all()
    reclaims = [e for e in r.events if e["kind"] == "reclaim" and e["host"] == "host-2"]
    assert reclaims  # host-2 had to take its lent RAM back first
    if policy == "flush-to-swap":
        assert [m["outcome"] for m in s["migrations"]] == ["completed", "completed"]


def test_restart_and_migration_decided_together_share_the_destination():
    from test_failover import failover

    sc = apply_overrides(
        failover(duration="20s", deadline="15s"),
        {
            "events": [
                {"at": 4.0, "fail_host": "host-1"},
                {"at": 4.0, "migrate": "g-2", "to": "host-3"},
            ],
            "migration.tmem": "flush-to-swap",
        },
    )
    r = run_scenario(sc)
    assert r.summary["valid"], r.summary["checks"]
    assert (r.hosts.free_pages >= 0).all()


def test_a_guest_that_crashes_mid_migration_stops_migrating():
    r = run_scenario(mech("frontswap", extra="  - {at: 4.3s, tmem_backend_failure: host-1}"))
    s = r.summary
    assert s["valid"], s["checks"]
    (m,) = s["migrations"]
    assert m["outcome"] == "failed: the guest crashed"
    assert s["guests"]["a-1"]["host"] == "host-1" and s["guests"]["a-1"]["incarnation"] == 1
    assert not any(e["kind"] == "migrated" for e in r.events)


def test_an_evacuated_host_takes_no_restarts():
    from test_failover import failover

    sc = apply_overrides(
        failover(mechanism="none", duration="20s", deadline="10s"),
        {
            "hosts.ram": "640MiB",
            "events": [
                {"at": 4.0, "fail_host": "host-1"},
                {"at": 4.5, "evacuate": "host-2"},
            ],
        },
    )
    r = run_scenario(sc)
    s = r.summary
    assert s["valid"], s["checks"]
    assert s["hosts"]["host-2"]["guests"] == []
    assert all(e["host"] == "host-3" for e in r.events if e["kind"] == "ha_restart")


def test_refused_migrations_are_logged_and_replay():
    from overcommit.drill import with_replay

    with pytest.raises(Exception, match=r"events\[2\]\.to: unknown host 'nohost'"):
        mech(
            "frontswap",
            extra="  - {at: 5s, migrate: a-2, to: host-1}\n  - {at: 5s, migrate: a-3, to: nohost}",
        )
    sc = mech("frontswap", extra="  - {at: 5s, migrate: a-2, to: host-1}")
    r = run_scenario(sc)
    outcomes = [m["outcome"] for m in r.summary["migrations"]]
    assert outcomes == ["completed", "refused: the guest already runs on host-1"]
    again = run_scenario(with_replay(sc, r.events))
    assert [m["outcome"] for m in again.summary["migrations"]] == outcomes


def test_migrating_to_a_failed_host_is_refused_at_once():
    r = run_scenario(mech("none", extra="  - {at: 2s, fail_host: host-2}", **{"events.0.at": "5s"}))
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "refused: the destination host-2 is down"
    assert r.summary["run"]["windows"] < 20  # no epoch-long windows waiting for a deadline


def test_cached_disk_dirty_pages_are_written_back_before_the_move():
    r = run_scenario(mech("cached-disk"))
    assert r.summary["valid"], r.summary["checks"]
    (m,) = r.summary["migrations"]
    assert m["outcome"] == "completed" and m["cache_writebacks"] > 0
    g = r.guests[r.guests.guest == "a-1"]
    moved_at = next(e["epoch"] for e in r.events if e["kind"] == "migrated")
    assert int(g[g.epoch == moved_at - 1].cache_dirty.iloc[0]) == m["cache_writebacks"]


def test_a_thrashing_guests_readahead_pages_reach_the_destination():
    # a-1 thrashes: swap-ins read ahead whole clusters, pages it never touched that epoch
    sc = mech("none", **{"migration.bandwidth": "64MiB/s"})
    r = run_scenario(sc)
    s = r.summary
    (m,) = s["migrations"]
    assert m["outcome"] == "completed"
    assert s["guests"]["a-1"]["counters"]["readahead_pages"] > 0
    # at switch-over every page the destination holds carries the version the source has
    # (an integrity violation otherwise)
    assert s["valid"], s["checks"]
    assert s["checks"]["integrity"]["violations"] == 0


@pytest.mark.parametrize("mechanism", ["zswap", "zram"])
def test_a_compressed_pool_is_sent_as_its_stored_bytes(mechanism):
    r = run_scenario(mech(mechanism))
    s = r.summary
    assert s["valid"], s["checks"]
    (m,) = s["migrations"]
    assert m["outcome"] == "completed"
    g = r.guests[r.guests.guest == "a-1"]
    before = g[g.epoch == 39].iloc[0]  # the epoch before the migration starts
    assert before.zpool_frames > 0 and before.zpool_bytes > 0
    round1 = next(e for e in r.events if e["kind"] == "migration_round" and e["round"] == 1)
    # resident pages whole, the pool's frames as the compressed bytes it stores, the other
    # free frames of the allocation as zero pages (16 bytes)
    zero = int(before.alloc_pages - before.resident_pages - before.zpool_frames)
    expect = int(before.resident_pages) * PS + int(before.zpool_bytes) + zero * 16
    assert round1["bytes"] == expect
    assert round1["pages"] >= int(before.resident_pages + before.zpool_pages)


def test_each_round_is_logged_with_the_bytes_of_the_pages_it_sent():
    sc = mech("none", **{"migration.bandwidth": "64MiB/s"})
    digest = run_scenario(sc)
    full = run_scenario(apply_overrides(sc, {"payload": "full"}))
    for r, page_bytes in ((digest, PS), (full, record_len("a-1", "full", PS))):
        (m,) = r.summary["migrations"]
        rounds = [e for e in r.events if e["kind"] == "migration_round"]
        assert [e["round"] for e in rounds] == list(range(1, len(rounds) + 1))
        assert len(rounds) == m["rounds"] + 1  # the rounds, then the stop-and-copy
        assert sum(e["bytes"] for e in rounds) == pytest.approx(m["bytes_sent"], abs=2)
        for e in rounds[1:]:  # every later round: resident pages, each its full record
            assert e["bytes"] == e["pages"] * page_bytes
        assert rounds[-1]["seconds"] == pytest.approx(m["downtime_seconds"], abs=1e-6)
    assert full.events != digest.events
