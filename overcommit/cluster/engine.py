"""The driver: builds the cluster from a scenario, runs its timeline, checks it, summarises it.

Virtual time advances in fixed epochs grouped into sync windows (`sync_window`, cut short at
every scheduled event). At a window's start the driver applies the timeline's events and lets
each host's mechanism split what it lends among its guests; then every host runs its guests
through the window's epochs independently (a runtime may run hosts in any order or in
parallel); at the window's end the shared storage device's queue advances from the demand all
guests reported, summed in scenario order. Nothing depends on wall-clock time or on the order in
which hosts answer, so the same config and seed give the same summary, series and event log.
"""

from __future__ import annotations

import math
import operator
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from overcommit import __version__
from overcommit.cluster import checkers
from overcommit.cluster.placement import HostRoom, PlacementError, place
from overcommit.cluster.runtime import InfrastructureError, InlineRuntime
from overcommit.metrics import Recorder
from overcommit.nodes import build_mechanism
from overcommit.nodes.guest import (
    COUNTERS,
    FRONTSWAP,
    HIST_BINS,
    STALL_SOURCES,
    EpochStats,
    GuestModel,
    hist_percentile,
)
from overcommit.nodes.host import HostModel
from overcommit.output import write_run_dir
from overcommit.profiles import DeviceQueue, costs_from, device_profiles
from overcommit.stores.codec import record_len
from overcommit.stores.launcher import RedisFleet

SCHEMA = "overcommit.summary/1"
REDIS_ENTRY_OVERHEAD = 96  # bytes per hash field beyond the record (dict entry, SDS headers)

# Figures in summary["totals"]; every one is present, 0 when unused.
TOTAL_COUNTERS = (
    "disk_reads",
    "disk_writes",
    "disk_read_ops",
    "disk_write_ops",
    "frontswap_puts",
    "frontswap_put_failures",
    "frontswap_gets",
    "frontswap_flushes",
    "frontswap_invalidated",
    "lost_pages",
    "stale_reads",
    "guest_oom_kills",
    "touches",
    "faults",
    "major_faults",
    "first_touches",
    "readahead_pages",
    "evictions",
    "direct_reclaims",
    "disk_frees",
    "host_frames_allocated",
)


class PreflightError(ValueError):
    """The scenario cannot run here (its stores would not fit, a guest cannot be placed)."""


@dataclass
class RunResult:
    """What a run produced: the summary, the time series, the event log, where it was written."""

    summary: dict
    guests: pd.DataFrame
    hosts: pd.DataFrame
    events: list[dict]
    out_dir: Path | None = None
    violations: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return bool(self.summary["valid"])

    @property
    def exit_code(self) -> int:
        """0 valid (hypothesis met or none), 1 hypothesis not met, 3 invalid."""
        if not self.valid:
            return 3
        hyp = self.summary["hypothesis"]
        return 1 if hyp is not None and hyp["status"] == "not met" else 0


ProgressFn = Callable[[float, float, dict], None]
WindowHook = Callable[[int, "Cluster", Any], None]


def estimate_store_bytes(scenario: Any) -> tuple[int, int]:
    """Upper bound of (bytes, pages) the run's Redis stores may hold."""
    ps = scenario.page_size
    uses_tmem = "frontswap" in scenario.mechanism.split("+")
    specs = scenario.guest_specs()
    pages = 0
    nbytes = 0
    for g in specs:
        footprint = scenario.footprint(g.workload) // ps
        swap_pages = min(g.swap // ps, footprint)
        per = record_len(g.name, scenario.payload, ps) + REDIS_ENTRY_OVERHEAD
        pages += swap_pages
        nbytes += swap_pages * per
        if uses_tmem:
            lend = min(max(0, g.maxmem - g.memory) // ps, swap_pages)
            if scenario.hosts.tmem.max is not None:
                lend = min(lend, scenario.hosts.tmem.max // ps)
            lend = min(lend, scenario.hosts.ram // ps)
            pages += lend
            nbytes += lend * per
    return nbytes, pages


def preflight(scenario: Any) -> None:
    """Refuse a scenario whose stores would not fit in the memory budget."""
    import psutil

    need, pages = estimate_store_bytes(scenario)
    budget = scenario.limits.store_memory
    origin = "limits.store_memory"
    if budget is None:
        budget = int(psutil.virtual_memory().available * 0.5)
        origin = "half of this machine's available memory"
    if need > budget:
        raise PreflightError(
            f"the stores may need {need / 2**30:.1f} GiB ({pages} page records, payload "
            f"'{scenario.payload}') but the budget is {budget / 2**30:.1f} GiB ({origin}); "
            "use payload: digest, smaller swap or working sets, or raise limits.store_memory"
        )


class Cluster:
    """The emulated hosts and guests of one scenario, built and placed."""

    def __init__(self, scenario: Any) -> None:
        self.scenario = scenario
        sc = scenario
        self.mechanism = build_mechanism(sc.mechanism)
        self.costs = costs_from(sc.costs)
        self.devices = device_profiles(sc.devices)
        self.shared_device = DeviceQueue(self.devices[sc.shared_storage.device])
        names = sc.host_names()
        specs = sc.guest_specs()
        self.shared_device.users = max(1, len(specs))
        rooms = [HostRoom(n, sc.hosts.ram - sc.hosts.reserve) for n in names]
        try:
            self.placement = place(specs, rooms, sc.placement, sc.ha)
        except PlacementError as exc:
            raise PreflightError(str(exc)) from exc
        self.hosts = [
            HostModel(
                n,
                sc.hosts.ram,
                sc.hosts.reserve,
                sc.page_size,
                sc.hosts.boot,
                sc.hosts.tmem.max,
                sc.hosts.tmem.exclusive_gets,
            )
            for n in names
        ]
        self.host_by_name = {h.name: h for h in self.hosts}
        self.guests: list[GuestModel] = []
        for spec in specs:
            host = self.host_by_name[self.placement[spec.name]]
            g = GuestModel(
                spec,
                host=host.name,
                seed=sc.seed,
                page_size=sc.page_size,
                payload=sc.payload,
                boot=sc.hosts.boot,
                costs=self.costs,
                uses_tmem=self.mechanism.guest_uses_tmem,
                exclusive_gets=sc.hosts.tmem.exclusive_gets,
            )
            host.guests.append(g)
            self.guests.append(g)
        self.guest_by_name = {g.name: g for g in self.guests}


def _check_hypothesis_names(scenario: Any) -> None:
    known = {"progress", "stall_seconds", "downtime_seconds", *TOTAL_COUNTERS}
    for cond in scenario.conditions():
        if cond.name not in known and not cond.name.startswith("fault_latency_"):
            raise PreflightError(
                f"hypothesis: unknown figure '{cond.name}' (known: {', '.join(sorted(known))})"
            )


_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def evaluate_hypothesis(scenario: Any, totals: dict) -> dict | None:
    conds = scenario.conditions()
    if not conds:
        return None
    details = []
    for c in conds:
        value = totals.get(c.name)
        ok = bool(value is not None and _OPS[c.op](value, c.value))
        details.append({"condition": f"{c.name} {c.op} {c.value:g}", "value": value, "ok": ok})
    return {"status": "met" if all(d["ok"] for d in details) else "not met", "details": details}


def run_scenario(
    scenario: Any,
    *,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
    workdir: Path | None = None,
    on_window: WindowHook | None = None,
) -> RunResult:
    """Run a validated scenario in the inline runtime; write the run directory if asked.

    `on_window(epoch, cluster, fleet)` is called after each sync window ends (at the first
    epoch of the next one); tests use it to inject faults where they would happen.
    """
    if scenario.runtime.kind != "inline":
        raise PreflightError(
            f"runtime.kind '{scenario.runtime.kind}' is not available in this version; "
            "use runtime: {kind: inline}"
        )
    _check_hypothesis_names(scenario)
    preflight(scenario)
    cluster = Cluster(scenario)
    wall0 = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="overcommit-redis-", dir=workdir) as tmp:
        rc = scenario.redis
        fleet = RedisFleet(
            [h.name for h in cluster.hosts],
            Path(tmp),
            socket=rc.socket,
            external_hosts=rc.hosts,
            external_shared=rc.shared,
        )
        try:
            fleet.start()
        except Exception as exc:
            fleet.stop_all()
            raise InfrastructureError(f"could not start the Redis stores: {exc}") from exc
        try:
            runtime = InlineRuntime(fleet, rc.prefix, scenario.payload, scenario.page_size)
            hook = None if on_window is None else (lambda e, c: on_window(e, c, fleet))
            result = _run(scenario, cluster, runtime, progress, hook)
        finally:
            fleet.stop_all()
    result.summary["run"]["wall_seconds"] = round(time.perf_counter() - wall0, 3)
    if out_dir is not None:
        write_run_dir(out_dir, result.summary, result.guests, result.hosts, result.events)
        result.out_dir = out_dir
    return result


def _run(
    scenario: Any,
    cluster: Cluster,
    runtime: InlineRuntime,
    progress: ProgressFn | None,
    hook: Callable[[int, Cluster], None] | None,
) -> RunResult:
    sc = scenario
    dt = sc.epoch
    epochs = max(1, math.ceil(sc.duration / dt - 1e-9))
    per_window = max(1, round(sc.sync_window / dt))
    timeline = sorted(
        ((min(epochs - 1, math.ceil(ev.at / dt - 1e-9)), i, ev) for i, ev in enumerate(sc.events)),
        key=lambda x: (x[0], x[1]),
    )
    cuts = sorted(set(range(0, epochs, per_window)) | {e for e, _, _ in timeline} | {epochs})
    windows = list(zip(cuts[:-1], cuts[1:]))
    checks = checkers.CheckLog()
    recorder = Recorder(cluster.guests, cluster.hosts, epochs, dt)
    events: list[dict] = []
    frozen_hosts: set[str] = set()

    def log(e: int, kind: str, **fields: Any) -> None:
        events.append({"t": round(e * dt, 9), "epoch": e, "kind": kind, **fields})

    # every guest starts with an empty pool and disk: clear what an earlier run left
    stale_keys = runtime.clear_namespace([h.name for h in cluster.hosts])
    for g in cluster.guests:
        log(0, "boot", guest=g.name, host=g.host, memory=g.spec.memory, maxmem=g.spec.maxmem)

    oom_seen = {g.name: 0 for g in cluster.guests}
    alive_seen = {g.name: True for g in cluster.guests}

    def on_epoch(e: int, host: HostModel, stats: list[tuple[GuestModel, EpochStats]]) -> None:
        recorder.record(e, host, stats)
        for g, s in stats:
            for check, message in s.violations:
                checks.add(check, [message], f"epoch {e}: ")
            if host.name in frozen_hosts and s.puts:
                checks.add(
                    "frontswap",
                    [f"{g.name}: {s.puts} put(s) succeeded while frozen"],
                    f"epoch {e}: ",
                )
            if g.counters["guest_oom_kills"] != oom_seen[g.name]:
                oom_seen[g.name] = g.counters["guest_oom_kills"]
                log(e, "oom_kill", guest=g.name, host=host.name)
            if g.alive and not alive_seen[g.name]:
                log(e + 1, "restart", guest=g.name, host=host.name)
            alive_seen[g.name] = g.alive
        checks.add("conservation", host.conservation(), f"epoch {e}: ")

    ev_iter = 0
    for e0, e1 in windows:
        ops = nbytes = 0
        while ev_iter < len(timeline) and timeline[ev_iter][0] == e0:
            _, _, ev = timeline[ev_iter]
            extra = _apply_event(ev, e0, cluster, runtime, frozen_hosts, log)
            if extra is not None:
                ops += extra.dev_ops
                nbytes += extra.dev_bytes
                for check, message in extra.violations:
                    checks.add(check, [message], f"epoch {e0}: ")
            ev_iter += 1
        for h in cluster.hosts:
            cluster.mechanism.plan_window(h)
        for h in cluster.hosts:
            o, b = runtime.run_host_window(h, e0, e1, dt, cluster.shared_device, on_epoch)
            ops += o
            nbytes += b
        cluster.shared_device.close_window(ops, nbytes, (e1 - e0) * dt)
        for g in cluster.guests:
            checks.add("conservation", g.frame_audit(), f"epoch {e1 - 1}: ")
        if cluster.mechanism.guest_uses_tmem:
            for h in cluster.hosts:
                used, counts = runtime.tmem_counts(h.name, [g.name for g in h.guests])
                checks.add(
                    "frontswap",
                    checkers.pool_counters(h.name, used, counts, h.guests),
                    f"epoch {e1 - 1}: ",
                )
        if progress is not None:
            progress(e1 * dt, epochs * dt, {"epochs": e1, "windows": len(windows)})
        if hook is not None:
            hook(e1, cluster)

    # final read-back of every store, from Redis itself
    for g in cluster.guests:
        tm = runtime.read_tmem(g.host, g.name) if cluster.mechanism.guest_uses_tmem else None
        sw = runtime.read_swap(g.disk, g.name)
        checks.add("integrity", checkers.integrity(g, tm, sw))
        if g.counters["stale_reads"]:
            checks.add(
                "integrity", [f"{g.name}: {g.counters['stale_reads']} stale read(s) during the run"]
            )
        if g.counters["lost_pages"]:
            checks.add(
                "lost_pages_explained",
                [f"{g.name}: {g.counters['lost_pages']} page(s) lost, unexplained by any fault"],
            )
        if g.peak_billed_pages > g.maxmem_pages and g.peak_tmem_pages:
            checks.add(
                "frontswap",
                [f"{g.name}: billed {g.peak_billed_pages} pages above maxmem {g.maxmem_pages}"],
            )
    summary = _summarise(sc, cluster, checks, events, epochs * dt, runtime, len(windows))
    summary["totals"]["tmem_pages_peak"] = int(recorder.h["tmem_pages"].sum(axis=1).max())
    summary["run"]["stale_keys_deleted"] = stale_keys
    return RunResult(
        summary,
        recorder.guests_frame(),
        recorder.hosts_frame(),
        events,
        violations=dict(checks.count),
    )


def _apply_event(
    ev: Any,
    e: int,
    cluster: Cluster,
    runtime: InlineRuntime,
    frozen: set[str],
    log: Callable[..., None],
) -> EpochStats | None:
    """Apply one timeline event; returns the device load and violations it caused, if any."""
    if ev.tmem_freeze is not None:
        h = cluster.host_by_name[ev.tmem_freeze]
        runtime.set_frozen(h.name, [g.name for g in h.guests], True)
        frozen.add(h.name)
        log(e, "tmem_freeze", host=h.name)
    elif ev.tmem_thaw is not None:
        h = cluster.host_by_name[ev.tmem_thaw]
        runtime.set_frozen(h.name, [g.name for g in h.guests], False)
        frozen.discard(h.name)
        log(e, "tmem_thaw", host=h.name)
    elif ev.tmem_flush is not None:
        g = cluster.guest_by_name[ev.tmem_flush]
        moved, stats = runtime.run(g.drain_tmem())
        log(
            e,
            "tmem_flush",
            guest=g.name,
            host=g.host,
            pages_moved=moved,
            cooperative=g.spec.cooperative,
        )
        return stats
    return None


def _latency(hist: np.ndarray) -> dict[str, float]:
    return {
        "p50": hist_percentile(hist, 0.5),
        "p99": hist_percentile(hist, 0.99),
        "p99.9": hist_percentile(hist, 0.999),
    }


def _summarise(
    sc: Any,
    cluster: Cluster,
    checks: checkers.CheckLog,
    events: list[dict],
    emulated: float,
    runtime: InlineRuntime,
    windows: int,
) -> dict:
    ps = sc.page_size
    guests = {}
    hist = np.zeros(HIST_BINS, np.int64)
    totals: dict[str, Any] = {k: 0 for k in TOTAL_COUNTERS}
    alive = work = stall = down = pending = 0.0
    stall_src = {k: 0.0 for k in STALL_SOURCES}
    for g in cluster.guests:
        hist += g.hist
        alive += g.alive_seconds
        work += g.work_seconds
        stall += g.stall_seconds
        down += g.downtime_seconds
        pending += g.debt
        for k in TOTAL_COUNTERS:
            totals[k] += g.counters[k]
        for k in STALL_SOURCES:
            stall_src[k] += g.stall_by_source[k]
        guests[g.name] = {
            "host": g.host,
            "progress": round(g.progress(), 6),
            "alive_seconds": round(g.alive_seconds, 6),
            "work_seconds": round(g.work_seconds, 6),
            "stall_seconds": round(g.stall_seconds, 9),
            "stall_pending_seconds": round(g.debt, 9),
            "downtime_seconds": round(g.downtime_seconds, 6),
            "stall_by_source": {k: round(v, 9) for k, v in g.stall_by_source.items()},
            "fault_latency": _latency(g.hist),
            "counters": {k: int(g.counters[k]) for k in COUNTERS},
            "memory_bytes": g.spec.memory,
            "maxmem_bytes": g.spec.maxmem,
            "footprint_pages": g.N,
            "pages_end": g.location_counts(),
            "tmem_pages_end": g.tmem_pages,
            "tmem_pages_peak": g.peak_tmem_pages,
            "tmem_clean_copies_end": int(
                np.count_nonzero((g.slot == FRONTSWAP) & (g.loc != FRONTSWAP))
            ),
        }
    totals = {
        "progress": round(work / alive, 6) if alive else 0.0,
        "stall_seconds": round(stall, 9),
        "stall_pending_seconds": round(pending, 9),
        "downtime_seconds": round(down, 6),
        "alive_seconds": round(alive, 6),
        "stall_by_source": {k: round(v, 9) for k, v in stall_src.items()},
        **{k: int(v) for k, v in totals.items()},
        "fault_latency": _latency(hist),
        "tmem_pages_peak": 0,  # peak of the cluster-wide sum, from the time series
    }
    for q, v in totals["fault_latency"].items():
        totals[f"fault_latency_{q.replace('.', '')}"] = v
    hosts = {
        h.name: {
            "guests": [g.name for g in h.guests],
            "ram_bytes": h.ram_pages * ps,
            "reserve_bytes": h.reserve_pages * ps,
            "guest_frames_end": h.backed_pages(),
            "tmem_pages_end": h.tmem_pages(),
            "tmem_pages_peak": h.peak_tmem_pages,
            "free_pages_end": h.free_pages(),
            "free_pages_min": h.min_free_pages,
        }
        for h in cluster.hosts
    }
    import msgpack
    import numpy
    import redis as redis_mod

    return {
        "schema": SCHEMA,
        "scenario": sc.to_json(),
        "seed": sc.seed,
        "mechanism": cluster.mechanism.name,
        "emulated_seconds": round(emulated, 9),
        "valid": checks.valid,
        "checks": checks.to_json(),
        "hypothesis": evaluate_hypothesis(sc, totals),
        "totals": totals,
        "guests": guests,
        "hosts": hosts,
        "events": events,
        "run": {
            "runtime": runtime.kind,
            "windows": windows,
            "epochs_per_call": round(
                round(emulated / sc.epoch) * len(cluster.hosts) / max(1, runtime.calls), 3
            ),
            "wall_seconds": None,
            "versions": {
                "overcommit": __version__,
                "python": platform.python_version(),
                "numpy": numpy.__version__,
                "redis_py": redis_mod.__version__,
                "msgpack": ".".join(map(str, msgpack.version)),
            },
        },
    }
