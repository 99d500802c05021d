"""Balloon inflation timed end to end through the guest, against the published virtio figure.

REFERENCE.md (Ballooning): inflating 7 GB of an idle 8 GB guest took ~4.1 s with the legacy
virtio-balloon driver. `test_mechanisms.py` checks the driver's rate constant and the lag
counter derived from it; here the guest model runs epoch by epoch and the inflation time is read
from what the guest did: the epoch at which its allocation (frames it still owns) first reaches
the host's target, the frames the balloon holds, the swap writes and the stall it took. The
tolerance is 15% (0.6 s, six 100 ms epochs): the published figure is one measurement, and the
emulator times the epoch in which the target is reached to the epoch's end.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from test_mechanisms import OneGuest

from overcommit.nodes.host import Directives

GB = 10**9
PUBLISHED_S = 4.1  # virtio-balloon, legacy (no scatter-gather): 7 GB of an idle 8 GB guest
TOLERANCE = 0.15

GUEST_8GB = """
name: inflate
duration: 30s
epoch: 100ms
page_size: 64KiB
mechanism: balloon
balloon: {{driver: virtio, max_share: 90%}}
hosts: {{ram: 16GB}}
shared_storage: {{device: ssd}}
guests:
  - name: vm
    memory: 8GB
    swap: 8GB
    workload:
      kind: phases
      repeat: false
      phases:
        - {{duration: {warm}, working_set: {ws}, access_rate: {rate}, skew: 0, write_fraction: 0.5}}
        - {{duration: 60s, working_set: {ws}, access_rate: 100/s, skew: 0}}
"""


@dataclass
class Inflation:
    seconds: float  # from the target being set to the epoch the allocation first reached it
    freed_bytes: int  # frames the balloon took from the guest meanwhile
    swapped_out: int  # pages the guest wrote to its swap disk meanwhile
    stall: float  # guest stall meanwhile


def inflate(fleet, prefix: str, warm: str, ws: str, rate: str) -> Inflation:
    """Boot the guest, let its workload fill `ws`, then ask it down to 1 GB and time the
    inflation epoch by epoch from the guest's own state."""
    g = OneGuest(fleet, prefix, GUEST_8GB.format(warm=warm, ws=ws, rate=rate))
    ps, dt = g.sc.page_size, g.sc.epoch
    warm_epochs = round(float(g.sc.guest_specs()[0].workload.phases[0].duration) / dt)
    g.run(warm_epochs)
    m = g.model
    target = GB // ps
    balloon0, writes0, stall0 = m.balloon_n, m.counters["disk_writes"], m.stall_seconds
    slack = target // 1000  # within 0.1% of the target (watermark rounding)
    k = 0
    while m.alloc_pages > target + slack:
        if k == 300:
            pytest.fail(f"the balloon never reached its target: allocation {m.alloc_pages} pages")
        g.run(1, Directives(alloc_target=target))
        k += 1
    return Inflation(
        seconds=k * dt,
        freed_bytes=(m.balloon_n - balloon0) * ps,
        swapped_out=m.counters["disk_writes"] - writes0,
        stall=m.stall_seconds - stall0,
    )


def test_idle_guest_inflates_7gb_in_the_published_time(redis_fleet, redis_prefix):
    """An idle 8 GB guest (64 MiB in use) gives 7 GB back in 4.1 s +- 15%, with no swapping."""
    r = inflate(redis_fleet, redis_prefix, warm="1s", ws="64MiB", rate="20k/s")
    assert abs(r.seconds - PUBLISHED_S) <= TOLERANCE * PUBLISHED_S, r
    assert abs(r.freed_bytes - 7 * GB) <= 0.01 * 7 * GB, r  # the frames really left the guest
    assert r.swapped_out == 0, r  # idle: every frame the balloon takes was free


def test_guest_under_memory_pressure_inflates_no_faster_than_its_disk(redis_fleet, redis_prefix):
    """With 3 GiB of dirty anonymous memory the guest must swap about 2 GiB out to reach 1 GB:
    the inflation takes longer than the idle figure, by at least the time the swap disk needs
    to take those pages (SATA SSD, 500 MB/s), and the guest's allocation still gets there."""
    idle = inflate(redis_fleet, redis_prefix, warm="1s", ws="64MiB", rate="20k/s")
    r = inflate(redis_fleet, redis_prefix, warm="5s", ws="3GiB", rate="200k/s")
    ps = 64 * 1024
    assert r.swapped_out * ps >= 1.5 * GB, r  # reclaimed to its own swap, not just free frames
    disk_s = r.swapped_out * ps / 500e6
    assert r.seconds > idle.seconds, (r, idle)
    assert r.seconds >= 0.9 * max(PUBLISHED_S * r.freed_bytes / (7 * GB), disk_s), r
    assert abs(r.freed_bytes - idle.freed_bytes) <= 0.01 * 7 * GB, (r, idle)
