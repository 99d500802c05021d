"""Host failure, HA restarts, reclaim under pressure, backend failures and chaos (inline).

Every run here talks to real redis-server processes the engine starts; faults are injected
where they happen (a killed server, a guest's ledger corrupted in its model).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from overcommit.cluster.chaos import chaos_events
from overcommit.cluster.engine import FREEING_COUNTERS, run_scenario
from overcommit.config import apply_overrides, load_scenario_text
from overcommit.nodes.guest import RAM
from overcommit.profiles import device_profiles

# Three hosts, two guests each (balanced): each host lends the RAM its guests do not reserve
# (160 MiB) to frontswap and the guests, whose working sets exceed their memory by 86 MiB,
# fill it. host-1 dies at 4 s; each survivor must find 64 MiB for one restarted guest.
# Reads only (write_fraction 0): pool pages leave the pool only when guests move them out.
FAILOVER = """
name: failover
seed: 11
duration: {duration}
epoch: 100ms
sync_window: 200ms
runtime: {{kind: inline}}
mechanism: {mechanism}
placement: balanced
hosts: {{count: 3, ram: 320MiB, reserve: 32MiB, boot: lazy, swap: {{device: ssd, size: 256MiB}}}}
shared_storage: {{device: hdd}}
ha: {{admission: host-failures, tolerate: 1, detection: 1s, restart_deadline: {deadline}}}
guests:
  - name: g
    count: 6
    memory: 64MiB
    maxmem: 160MiB
    swap: 160MiB
    cooperative: {cooperative}
    workload: {{kind: zipf, distribution: power, working_set: 150MiB, access_rate: 30k/s,
               write_fraction: 0.0, skew: 0.3}}
events:
  - {{at: 4s, fail_host: host-1}}
{extra}
"""


def failover(
    mechanism: str = "frontswap",
    cooperative: bool = True,
    duration: str = "30s",
    deadline: str = "20s",
    extra: str = "",
    **overrides: object,
):
    text = FAILOVER.format(
        mechanism=mechanism,
        cooperative=str(cooperative).lower(),
        duration=duration,
        deadline=deadline,
        extra=extra,
    )
    sc = load_scenario_text(text, "failover.yaml")
    return apply_overrides(sc, overrides) if overrides else sc


@pytest.fixture(scope="module")
def coop():
    return run_scenario(failover())


@pytest.fixture(scope="module")
def uncoop():
    return run_scenario(failover(cooperative=False))


def test_host_failure_crashes_its_guests_and_loses_their_tmem(coop):
    s = coop.summary
    assert s["valid"], s["checks"]
    crashes = [e for e in coop.events if e["kind"] == "guest_crash"]
    assert sorted(e["guest"] for e in crashes) == ["g-1", "g-4"]  # balanced: host-1's guests
    fail = next(e for e in coop.events if e["kind"] == "fail_host")
    assert fail["host"] == "host-1" and fail["t"] == 4.0
    assert fail["tmem_pages_lost"] > 0  # they had pages only in host-1's pool
    assert s["totals"]["tmem_pages_lost"] == fail["tmem_pages_lost"]
    assert s["totals"]["host_failures"] == 1 and s["totals"]["guests_crashed"] == 2
    assert s["hosts"]["host-1"]["alive"] is False
    # the dead host's rows are zero from the failure on; its guests ran nowhere meanwhile
    h1 = coop.hosts[coop.hosts.host == "host-1"]
    assert (h1[h1.epoch >= 40].up == 0).all() and (h1[h1.epoch < 40].up == 1).all()


def test_cooperative_guests_give_up_tmem_and_restarts_succeed(coop):
    s = coop.summary
    ep = s["failover"]["episodes"][0]
    assert ep["restart_failures"] == 0 and set(ep["restarted"]) == {"g-1", "g-4"}
    assert set(ep["restarted"].values()) == {"host-2", "host-3"}
    assert ep["recovery_seconds"] is not None and ep["recovery_seconds"] > 1.0
    assert s["totals"]["tmem_shrink_pages"] > 0 and s["totals"]["ha_restarts"] == 2
    restarts = [e for e in coop.events if e["kind"] == "ha_restart"]
    assert {e["incarnation"] for e in restarts} == {1}
    assert s["guests"]["g-1"]["incarnation"] == 1 and s["guests"]["g-1"]["host"] != "host-1"
    # the restarted guest's downtime is the time it had no host
    for e in restarts:
        assert e["downtime_seconds"] == pytest.approx(e["t"] - 4.0)


def test_reclaim_time_is_the_bytes_over_the_swap_disks_write_bandwidth(coop):
    """Each survivor lacked `need` bytes; its two cooperative guests wrote pool pages to the
    shared HDD, each at its equal share of the device (6 guests share it): the reclaim must
    take need / (2 x share) seconds, within 10%."""
    sc = failover()
    ep = coop.summary["failover"]["episodes"][0]
    reclaims = [e for e in coop.events if e["kind"] == "reclaim"]
    assert {e["host"] for e in reclaims} == {"host-2", "host-3"}
    hdd = device_profiles(sc.devices)["hdd"]
    per_page = max(1.0 / (32 * hdd.iops), sc.page_size / hdd.bandwidth)  # 32-page writes
    share = 1.0 / len(sc.guest_specs()) / per_page * sc.page_size  # bytes/s per guest
    need = max(e["pages"] for e in reclaims) * sc.page_size
    expected = need / (2 * share)
    assert expected > 3.0  # long enough that 200 ms windows do not decide the answer
    assert ep["reclaim_seconds"] == pytest.approx(expected, rel=0.10)
    # and the disk really took those writes: the survivors' disk writes in the reclaim
    g = coop.guests
    start = reclaims[0]["epoch"]
    end = start + round(ep["reclaim_seconds"] / sc.epoch)
    during = g[(g.epoch >= start) & (g.epoch < end) & g.guest.isin(["g-2", "g-3", "g-5", "g-6"])]
    written = during.disk_writes.sum() * sc.page_size
    assert written >= 2 * need * 0.9


def test_uncooperative_guests_keep_their_tmem_and_restarts_fail_at_the_deadline(uncoop):
    s = uncoop.summary
    assert s["valid"], s["checks"]
    ep = s["failover"]["episodes"][0]
    assert ep["restart_failures"] == 2 and ep["restarted"] == {}
    assert ep["recovery_seconds"] is None and s["failover"]["recovery_seconds"] is None
    assert s["totals"]["tmem_shrink_pages"] == 0
    for f in ep["failures"]:
        assert f["t"] == pytest.approx(4.0 + 20.0)  # the deadline
        assert "still lacked" in f["reason"] and "uncooperative" in f["reason"]
    failed = [e for e in uncoop.events if e["kind"] == "restart_failed"]
    assert sorted(e["guest"] for e in failed) == ["g-1", "g-4"]
    # down from the failure to the end
    assert s["guests"]["g-1"]["host"] is None
    assert s["guests"]["g-1"]["downtime_seconds"] == pytest.approx(26.0)
    assert uncoop.exit_code == 0  # no hypothesis declared


def test_stop_cooperating_event_makes_a_guest_ignore_shrink_requests():
    r = run_scenario(
        failover(extra="  - {at: 1s, stop_cooperating: g-2}\n  - {at: 1s, stop_cooperating: g-3}")
    )
    assert r.summary["valid"]
    ep = r.summary["failover"]["episodes"][0]
    # host-2 (g-2, g-5) still reclaims through g-5; g-2 and g-3 never move a page
    assert r.summary["guests"]["g-2"]["counters"]["tmem_shrink_pages"] == 0
    assert r.summary["guests"]["g-3"]["counters"]["tmem_shrink_pages"] == 0
    assert r.summary["guests"]["g-5"]["counters"]["tmem_shrink_pages"] > 0
    assert any(e["kind"] == "stop_cooperating" for e in r.events)
    assert ep["restart_failures"] + len(ep["restarted"]) == 2


def test_host_swap_restarts_succeed_and_survivors_slow_down():
    r = run_scenario(failover(mechanism="host-swap", duration="24s"))
    s = r.summary
    assert s["valid"], s["checks"]
    ep = s["failover"]["episodes"][0]
    assert ep["restart_failures"] == 0 and len(ep["restarted"]) == 2
    g = r.guests[r.guests.guest.isin(["g-2", "g-3", "g-5", "g-6"])]
    before = g[g.epoch < 40]
    after = g[g.epoch >= 140]
    prog_before = before.work_s.sum() / before.alive.sum() / 0.1
    prog_after = after.work_s.sum() / after.alive.sum() / 0.1
    assert prog_after < prog_before
    assert s["totals"]["host_swap_outs"] > 0


def test_recovered_host_takes_the_guests_that_failed_to_restart():
    r = run_scenario(
        failover(cooperative=False, deadline="5s", extra="  - {at: 12s, recover_host: host-1}")
    )
    s = r.summary
    assert s["valid"], s["checks"]
    ep = s["failover"]["episodes"][0]
    assert ep["restart_failures"] == 2  # at 4 + 5 s
    assert ep["restarted"] == {"g-1": "host-1", "g-4": "host-1"}  # retried when it came back
    assert ep["recovery_seconds"] == pytest.approx(8.0)
    assert s["hosts"]["host-1"]["alive"] is True
    assert s["totals"]["host_recoveries"] == 1


def test_tmem_backend_failure_crashes_guests_whose_pages_were_only_there():
    sc = failover(duration="10s")
    sc = apply_overrides(sc, {"events": [{"at": 6.0, "tmem_backend_failure": "host-2"}]})
    r = run_scenario(sc)
    s = r.summary
    assert s["valid"], s["checks"]
    ev = next(e for e in r.events if e["kind"] == "tmem_backend_failure")
    assert ev["guests_crashed"] == ["g-2", "g-5"]  # both had pages only in host-2's pool
    crashes = [e for e in r.events if e["kind"] == "guest_crash"]
    assert all(e["reason"] == "tmem backend failed" and e["tmem_pages_lost"] > 0 for e in crashes)
    assert s["totals"]["backend_failures"] == 1
    assert s["totals"]["tmem_pages_lost"] == sum(e["tmem_pages_lost"] for e in crashes)
    # they reboot in place as new incarnations, and run again
    assert s["guests"]["g-2"]["incarnation"] == 1 and s["guests"]["g-2"]["host"] == "host-2"
    g2 = r.guests[r.guests.guest == "g-2"]
    assert g2[g2.epoch > 70].alive.all()
    assert s["guests"]["g-3"]["incarnation"] == 0  # another host's guest is untouched


def test_slow_storage_slows_disk_reads_for_its_duration():
    # guest disks on an SSD: on the HDD the guests' first swap-ins (one cluster read each, the
    # readahead window shrunk to its hits) leave them stalled past the slowdown, reading nothing
    base = failover(duration="10s")
    base = apply_overrides(base, {"events": [], "shared_storage.device": "ssd"})
    slow = apply_overrides(
        base, {"events": [{"at": 3.0, "slow_storage": {"factor": 0.05, "duration": 4.0}}]}
    )
    a, b = run_scenario(base), run_scenario(slow)
    assert a.summary["valid"] and b.summary["valid"]

    def stall(r, lo, hi):
        g = r.guests
        return g[(g.epoch >= lo) & (g.epoch < hi)].stall_s.sum()

    assert stall(a, 0, 30) == pytest.approx(stall(b, 0, 30))  # identical before
    assert stall(b, 30, 70) > 2 * stall(a, 30, 70)
    ev = next(e for e in b.events if e["kind"] == "slow_storage")
    assert (ev["factor"], ev["duration"]) == (0.05, 4.0)


def test_conservation_error_injected_in_a_guest_is_caught():
    def corrupt(epoch, runtime, fleet):
        if epoch == 10:
            runtime.models()[1].census[RAM] += 1  # a page counted twice

    r = run_scenario(failover(duration="5s"), on_window=corrupt)
    assert not r.summary["valid"]
    assert r.summary["checks"]["conservation"]["ok"] is False
    assert r.exit_code == 3


CHAOS = """
chaos: {{mtbf: 20s, mttr: 6s, faults: [fail_host, tmem_backend_failure, slow_storage]{seed}}}
"""


def chaos_scenario(seed: str = "", duration: str = "30s"):
    text = FAILOVER.format(
        mechanism="frontswap", cooperative="true", duration=duration, deadline="20s", extra=""
    ).replace("events:\n  - {at: 4s, fail_host: host-1}\n", "") + CHAOS.format(seed=seed)
    sc = load_scenario_text(text, "chaos.yaml")
    return sc


def test_chaos_schedule_is_drawn_from_the_seed():
    a = [e.file_form() for e in chaos_events(chaos_scenario())]
    b = [e.file_form() for e in chaos_events(chaos_scenario())]
    c = [e.file_form() for e in chaos_events(chaos_scenario(", seed: 99"))]
    assert a and a == b
    assert [e["at"] for e in a] != [e["at"] for e in c]
    # each failure is followed by its repair on the same host
    for i, e in enumerate(a):
        if "fail_host" in e:
            later = [x for x in a[i + 1 :] if x.get("recover_host") == e["fail_host"]]
            assert not later or later[0]["at"] > e["at"]


def test_chaos_run_is_reproducible_and_replayable():
    sc = chaos_scenario(", seed: 3", duration="20s")
    drawn = chaos_events(sc)
    assert any("fail_host" in e.file_form() for e in drawn)
    a, b = run_scenario(sc), run_scenario(sc)
    assert a.summary["valid"], a.summary["checks"]
    strip = lambda s: {k: v for k, v in s.items() if k != "run"}  # noqa: E731
    assert strip(a.summary) == strip(b.summary)
    faults = [e for e in a.events if e.get("chaos")]
    assert [e["epoch"] for e in faults] == [math.ceil(e.at / 0.1 - 1e-9) for e in drawn]
    assert a.summary["totals"]["host_failures"] == 2
    assert a.summary["totals"]["backend_failures"] == 3
    # the same faults written as plain events reproduce the run
    replay = apply_overrides(sc, {"chaos": None, "events": [e.file_form() for e in drawn]})
    c = run_scenario(replay)
    sa, sc_ = strip(a.summary), strip(c.summary)
    sa.pop("scenario"), sc_.pop("scenario")
    for ev in sa["events"]:
        ev.pop("chaos", None)
    assert sa == sc_
    assert np.array_equal(a.guests.work_s.to_numpy(), c.guests.work_s.to_numpy())


def test_failover_doc_example_runs_as_described():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "failover.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    r = run_scenario(load_scenario_text(block, "docs/failover.md"))
    assert r.summary["valid"] and r.exit_code == 0
    # two 64MiB guests to restart, less the little the survivor already had free
    ep = r.summary["failover"]["episodes"][0]
    assert 120 * 2**20 <= ep["reclaim_needed_bytes"] <= 2 * 64 * 2**20
    assert ep["reclaimed_bytes"] >= ep["reclaim_needed_bytes"]  # the pool shrank for all of it
    uncoop = load_scenario_text(block.replace("cooperative: true", "cooperative: false"), "x")
    r2 = run_scenario(uncoop)
    assert r2.summary["totals"]["restart_failures"] == 2 and r2.exit_code == 1


def test_node_death_reports_what_was_freed_apart_from_what_was_needed():
    """`reclaimed_bytes` counts the pages the survivors' mechanisms freed (here pool pages
    shrunk to swap disks), `reclaim_needed_bytes` the deficit; they differ."""
    from overcommit.config import load_scenario

    sc = load_scenario(str(Path(__file__).resolve().parents[1] / "configs" / "node-death.yaml"))
    r = run_scenario(apply_overrides(sc, {"mechanism": "frontswap", "runtime": {"kind": "inline"}}))
    (ep,) = r.summary["failover"]["episodes"]
    assert ep["reclaim_needed_bytes"] > 0 and ep["reclaimed_bytes"] > 0
    assert ep["reclaimed_bytes"] != ep["reclaim_needed_bytes"]
    t = r.summary["totals"]
    assert t["tmem_shrink_pages"] > 0
    freeing = sum(t.get(k, 0) for k in FREEING_COUNTERS) * sc.page_size
    assert ep["reclaimed_bytes"] <= freeing
    f = r.summary["failover"]
    assert f["reclaimed_bytes"] == ep["reclaimed_bytes"]
    assert f["reclaim_needed_bytes"] == ep["reclaim_needed_bytes"]
