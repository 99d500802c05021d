"""A reclaiming host under host swap takes back what it lent: every frame above each guest's
boot memory, paged out at the host swap device's pace (configs/pinned-memory.yaml)."""

from __future__ import annotations

from overcommit.cluster.engine import run_scenario
from overcommit.config import apply_overrides, load_scenario
from overcommit.profiles import device_profiles


def test_host_reclaim_under_host_swap_frees_the_frames_above_the_guests_memory():
    sc = load_scenario("configs/pinned-memory.yaml")
    sc = apply_overrides(sc, {"mechanism": "host-swap", "duration": "36s"})
    r = run_scenario(sc)
    assert r.valid
    ps = sc.page_size
    memory = {g.name: g.memory // ps for g in sc.guest_specs()}
    h, g = r.hosts, r.guests
    at = 30.0  # the host_reclaim event
    before = g[g["t"] == at - sc.epoch]
    above = sum(max(0, int(row.host_frames) - memory[row.guest]) for row in before.itertuples())
    assert above > 100_000  # the host lent a lot above the reservations
    free0 = int(h[h["t"] == at - sc.epoch]["free_pages"].iloc[0])
    # the host swap device writes 32-page clusters: its pace bounds how fast frames leave
    ssd = device_profiles(None)["ssd"]
    rate = min(ssd.iops * 32, ssd.bandwidth / ps)  # pages per second
    due = at + above / rate + 1.0  # a window to start, then the device's pace
    assert due < 36.0
    after = h[h["t"] >= due]
    gain = after["free_pages"].min() - free0
    assert gain >= 0.95 * above, (gain, above)  # (guests keep faulting a little meanwhile)
    # not faster than the device: half-way through, no more than the device could write
    mid = h[(h["t"] > at) & (h["t"] <= at + 0.5)]
    assert (mid["free_pages"] - free0).max() <= rate * 0.6 + 2000
    # every guest ends at or below its boot memory
    last = g[g["t"] == g["t"].max()]
    for row in last.itertuples():
        assert row.host_frames <= memory[row.guest], row
