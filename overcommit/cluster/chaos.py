"""The nemesis: a scenario's seeded chaos schedule, expanded into ordinary timeline events.

`chaos: {mtbf, mttr, targets, faults}` draws, for each target host on a random stream of its
own (derived from the chaos seed, by default the run's seed), fault times with exponential gaps
of mean `mtbf` starting at `start`, and for each fault a kind from `faults`: `fail_host` (the
host is repaired — a `recover_host` event — after an exponential time of mean `mttr`, and its
next fault is drawn from then on), `tmem_backend_failure` (the host's Redis dies and comes back
empty at once), or `slow_storage` (shared storage at `slow_factor` of its speed for an
exponential time of mean `mttr`). The events join the scenario's own events, so a chaos run is
replayed exactly by writing its drawn events into a scenario file (they are in the event log).
"""

from __future__ import annotations

from typing import Any

from overcommit.config import Event, SlowStorage
from overcommit.rng import stream


def chaos_events(scenario: Any) -> list[Event]:
    """The events the scenario's chaos schedule draws (empty without `chaos`), by time."""
    ch = scenario.chaos
    if ch is None:
        return []
    seed = scenario.seed if ch.seed is None else ch.seed
    end = float(scenario.duration)
    drawn: list[tuple[float, int, int, Event]] = []
    for hi, host in enumerate(ch.targets or scenario.host_names()):
        rng = stream(seed, host, 0, "chaos")
        t = float(ch.start) + float(rng.exponential(ch.mtbf))
        n = 0
        while t < end:
            kind = ch.faults[int(rng.integers(len(ch.faults)))]
            repair = float(rng.exponential(ch.mttr))
            at = round(t, 3)
            if at >= end:
                break
            if kind == "fail_host":
                drawn.append((at, hi, n, _event(at, fail_host=host)))
                back = round(t + repair, 3)
                if back < end:
                    drawn.append((back, hi, n + 1, _event(back, recover_host=host)))
                t += repair
            elif kind == "tmem_backend_failure":
                drawn.append((at, hi, n, _event(at, tmem_backend_failure=host)))
            else:
                slow = SlowStorage(factor=ch.slow_factor, duration=max(round(repair, 3), 1e-3))
                drawn.append((at, hi, n, _event(at, slow_storage=slow)))
            n += 2
            t += float(rng.exponential(ch.mtbf))
    drawn.sort(key=lambda x: (x[0], x[1], x[2]))
    return [ev for _, _, _, ev in drawn]


def _event(at: float, **action: Any) -> Event:
    ev = Event(at=at, **action)
    ev._chaos = True
    return ev
