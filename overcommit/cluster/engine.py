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
    HIST_BINS,
    STALL_SOURCES,
    EpochStats,
    hist_percentile,
)
from overcommit.output import write_run_dir
from overcommit.profiles import DeviceQueue, device_profiles
from overcommit.stores.codec import record_len
from overcommit.stores.launcher import RedisFleet

SCHEMA = "overcommit.summary/1"
REDIS_ENTRY_OVERHEAD = 96  # bytes per hash field beyond the record (dict entry, SDS headers)

# Counters in summary["totals"]: every guest counter, summed; each present, 0 when unused.
TOTAL_COUNTERS = COUNTERS


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
WindowHook = Callable[[int, Any, Any], None]


def estimate_store_bytes(scenario: Any) -> tuple[int, int]:
    """Upper bound of (bytes, pages) the run's Redis stores may hold."""
    ps = scenario.page_size
    parts = scenario.mechanism.split("+")
    uses_tmem = "frontswap" in parts
    specs = scenario.guest_specs()
    pages = 0
    nbytes = 0
    if "host-swap" in parts:  # every host's swap area, full (records of this size)
        per = record_len(specs[0].name, scenario.payload, ps) + REDIS_ENTRY_OVERHEAD
        n = scenario.hosts.swap.size // ps * len(scenario.host_names())
        pages += n
        nbytes += n * per
    for g in specs:
        footprint = scenario.footprint(g.workload) // ps
        swap_pages = min(g.swap // ps, footprint)
        per = record_len(g.name, scenario.payload, ps) + REDIS_ENTRY_OVERHEAD
        pages += swap_pages
        nbytes += swap_pages * per
        if "cached-disk" in parts:  # the host cache may hold a copy of every slot
            pages += swap_pages
            nbytes += swap_pages * (per + REDIS_ENTRY_OVERHEAD)
        files = int(round(g.workload.file_cache * footprint))
        copies = 2 if "cleancache" in parts else 1  # the file disk, and the ephemeral pool
        pages += files * copies
        nbytes += files * copies * (per + REDIS_ENTRY_OVERHEAD)
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


class Plan:
    """What the driver decides before any runtime starts: mechanism, devices, placement."""

    def __init__(self, scenario: Any) -> None:
        sc = scenario
        self.scenario = sc
        self.mechanism = build_mechanism(sc.mechanism)
        self.devices = device_profiles(sc.devices)
        self.host_names = sc.host_names()
        self.specs = sc.guest_specs()
        self.guest_names = [g.name for g in self.specs]
        self.shared_device = DeviceQueue(
            self.devices[sc.shared_storage.device], users=max(1, len(self.specs))
        )
        room = sc.hosts.ram - sc.hosts.reserve
        if "host-swap" in sc.mechanism_parts() and sc.hosts.boot == "lazy":
            # "keep your commitment below RAM + swap": a lazy host that swaps may promise
            # its guests its RAM plus its swap area
            room += sc.hosts.swap.size
        rooms = [HostRoom(n, room) for n in self.host_names]
        try:
            self.placement = place(self.specs, rooms, sc.placement, sc.ha)
        except PlacementError as exc:
            raise PreflightError(str(exc)) from exc
        # the order guests are reported in everywhere: hosts in order, guests in scenario order
        self.guest_hosts = [self.placement[n] for n in self.guest_names]


def _check_hypothesis_names(scenario: Any) -> None:
    known = {
        "progress",
        "stall_seconds",
        "downtime_seconds",
        "balloon_lag_seconds",
        *TOTAL_COUNTERS,
    }
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
    address: str | None = None,
    verbose: bool = False,
) -> RunResult:
    """Run a validated scenario; write the run directory if asked.

    `on_window(epoch, runtime, fleet)` is called after each sync window ends (at the first
    epoch of the next one); tests use it to inject faults where they would happen.
    """
    _check_hypothesis_names(scenario)
    preflight(scenario)
    plan = Plan(scenario)
    wall0 = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="overcommit-redis-", dir=workdir) as tmp:
        rc = scenario.redis
        on_ray = scenario.runtime.kind == "ray"
        fleet = RedisFleet(
            [] if on_ray else plan.host_names,  # on Ray, each host actor starts its own
            Path(tmp),
            socket="tcp" if on_ray else rc.socket,  # Ray workers may sit on other nodes
            external_hosts=None if on_ray else rc.hosts,
            external_shared=rc.shared,
        )
        try:
            fleet.start()
        except Exception as exc:
            fleet.stop_all()
            raise InfrastructureError(f"could not start the Redis stores: {exc}") from exc
        runtime = None
        try:
            if on_ray:
                from overcommit.cluster.ray_runtime import RayRuntime

                runtime = RayRuntime(
                    scenario, plan.placement, fleet.shared.url, address=address, verbose=verbose
                )
            else:
                runtime = InlineRuntime(scenario, plan.placement, fleet)
            hook = None if on_window is None else (lambda e: on_window(e, runtime, fleet))
            result = _run(scenario, plan, runtime, progress, hook)
        finally:
            if runtime is not None:
                runtime.close()
            fleet.stop_all()
    result.summary["run"]["wall_seconds"] = round(time.perf_counter() - wall0, 3)
    if out_dir is not None:
        write_run_dir(out_dir, result.summary, result.guests, result.hosts, result.events)
        result.out_dir = out_dir
    return result


def _run(
    scenario: Any,
    plan: Plan,
    runtime: Any,
    progress: ProgressFn | None,
    hook: Callable[[int], None] | None,
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
    recorder = Recorder(plan.guest_names, plan.guest_hosts, plan.host_names, epochs, dt)
    gindex = {n: i for i, n in enumerate(plan.guest_names)}
    # event log entries carry a sort key: (epoch, phase, order) with timeline events first in
    # their epoch, then guest events in scenario order; runtimes may report in any order
    keyed: list[tuple[tuple[int, int, int], dict]] = []

    def log(e: int, kind: str, key: tuple[int, int], **fields: Any) -> None:
        keyed.append(((e, *key), {"t": round(e * dt, 9), "epoch": e, "kind": kind, **fields}))

    stale_keys = runtime.start()
    for i, spec in enumerate(plan.specs):
        log(
            0,
            "boot",
            (-1, i),
            guest=spec.name,
            host=plan.placement[spec.name],
            memory=spec.memory,
            maxmem=spec.maxmem,
        )
    device = plan.shared_device
    ev_iter = 0
    for e0, e1 in windows:
        ops = nbytes = 0
        while ev_iter < len(timeline) and timeline[ev_iter][0] == e0:
            _, order, ev = timeline[ev_iter]
            extra = _apply_event(ev, e0, order, runtime, log)
            if extra is not None:
                ops += extra.dev_ops
                nbytes += extra.dev_bytes
                for check, message in extra.violations:
                    checks.add(check, [message], f"epoch {e0}: ")
            ev_iter += 1
        for hw in runtime.run_window(e0, e1, dt, device):
            recorder.record_host(e0, e1, hw)
            for gw in hw.guests:
                recorder.record_guest(e0, e1, gw)
                for e, kind, fields in gw.events:
                    log(e, kind, (1, gindex[gw.name]), **fields)
            for e, check, message in sorted(hw.violations, key=lambda v: v[0]):
                checks.add(check, [message], f"epoch {e}: ")
            ops += hw.dev_ops
            nbytes += hw.dev_bytes
        device.close_window(ops, nbytes, (e1 - e0) * dt)
        if plan.mechanism.guest_uses_tmem:
            for problems in runtime.pool_counts():
                checks.add("frontswap", problems, f"epoch {e1 - 1}: ")
        if progress is not None:
            slowest = getattr(runtime, "slowest", None)
            progress(
                e1 * dt,
                epochs * dt,
                {"epochs": e1, "windows": len(windows), "slowest_host": slowest},
            )
        if hook is not None:
            hook(e1)

    finals, host_summaries = runtime.finish()
    by_guest = {name: (summary, violations, hist) for name, summary, violations, hist in finals}
    for name in plan.guest_names:
        for check, message in by_guest[name][1]:
            checks.add(check, [message])
    events = [ev for _, ev in sorted(keyed, key=lambda kv: kv[0])]
    guests = {name: by_guest[name][0] for name in plan.guest_names}
    hist = sum((by_guest[n][2] for n in plan.guest_names), np.zeros(HIST_BINS, np.int64))
    summary = _summarise(
        sc,
        plan,
        checks,
        events,
        epochs * dt,
        guests,
        hist,
        dict(host_summaries),
        runtime,
        len(windows),
    )
    summary["totals"]["tmem_pages_peak"] = int(recorder.h["tmem_pages"].sum(axis=1).max())
    for total, table, col in (
        ("hswap_pages_peak", recorder.h, "hswap_pages"),
        ("cache_pages_peak", recorder.h, "cache_pages"),
        ("zpool_bytes_peak", recorder.g, "zpool_bytes"),
        ("zpool_stale_peak", recorder.g, "zpool_stale"),
        ("shared_pages_peak", recorder.h, "shared_pages"),
        ("merged_frames_peak", recorder.g, "merged_frames"),
        ("ephemeral_pages_peak", recorder.h, "ephemeral_pages"),
        ("tmem_stored_peak", recorder.h, "tmem_stored"),
    ):
        summary["totals"][total] = int(table[col].sum(axis=1).max())
    summary["run"]["stale_keys_deleted"] = stale_keys
    summary["run"]["nodes"] = getattr(runtime, "nodes", lambda: {})()
    return RunResult(
        summary,
        recorder.guests_frame(),
        recorder.hosts_frame(),
        events,
        violations=dict(checks.count),
    )


def _apply_event(
    ev: Any, e: int, order: int, runtime: Any, log: Callable[..., None]
) -> EpochStats | None:
    """Apply one timeline event; returns the device load and violations it caused, if any."""
    key = (0, order)
    if ev.tmem_freeze is not None:
        runtime.set_frozen(ev.tmem_freeze, True)
        log(e, "tmem_freeze", key, host=ev.tmem_freeze)
    elif ev.tmem_thaw is not None:
        runtime.set_frozen(ev.tmem_thaw, False)
        log(e, "tmem_thaw", key, host=ev.tmem_thaw)
    elif ev.tmem_flush is not None:
        moved, stats = runtime.drain(ev.tmem_flush)
        spec = next(g for g in runtime.scenario.guest_specs() if g.name == ev.tmem_flush)
        log(
            e,
            "tmem_flush",
            key,
            guest=ev.tmem_flush,
            host=runtime.host_of(ev.tmem_flush),
            pages_moved=moved,
            cooperative=spec.cooperative,
        )
        return stats
    elif ev.host_reclaim is not None:  # the host reads its timeline when it plans
        log(e, "host_reclaim", key, host=ev.host_reclaim)
    elif ev.host_release is not None:
        log(e, "host_release", key, host=ev.host_release)
    return None


def _latency(hist: np.ndarray) -> dict[str, float]:
    return {
        "p50": hist_percentile(hist, 0.5),
        "p99": hist_percentile(hist, 0.99),
        "p99.9": hist_percentile(hist, 0.999),
    }


def _summarise(
    sc: Any,
    plan: Plan,
    checks: checkers.CheckLog,
    events: list[dict],
    emulated: float,
    guests: dict[str, dict],
    hist: np.ndarray,
    hosts: dict[str, dict],
    runtime: Any,
    windows: int,
) -> dict:
    totals: dict[str, Any] = {k: 0 for k in TOTAL_COUNTERS}
    alive = work = stall = down = pending = lag = 0.0
    stall_src = {k: 0.0 for k in STALL_SOURCES}
    for g in guests.values():
        lag += g["balloon_lag_seconds"]
        alive += g["alive_seconds"]
        work += g["work_seconds"]
        stall += g["stall_seconds"]
        down += g["downtime_seconds"]
        pending += g["stall_pending_seconds"]
        for k in TOTAL_COUNTERS:
            totals[k] += g["counters"][k]
        for k in STALL_SOURCES:
            stall_src[k] += g["stall_by_source"][k]
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
        "balloon_lag_seconds": round(lag, 9),
        "hswap_pages_peak": 0,
        "cache_pages_peak": 0,
        "zpool_bytes_peak": 0,
        "zpool_stale_peak": 0,
        "shared_pages_peak": 0,
        "merged_frames_peak": 0,
        "ephemeral_pages_peak": 0,
        "tmem_stored_peak": 0,
    }
    for q, v in totals["fault_latency"].items():
        totals[f"fault_latency_{q.replace('.', '')}"] = v
    hosts = {name: hosts[name] for name in plan.host_names}
    import msgpack
    import numpy
    import redis as redis_mod

    return {
        "schema": SCHEMA,
        "scenario": {k: v for k, v in sc.to_json().items() if k != "runtime"},
        "seed": sc.seed,
        "mechanism": plan.mechanism.name,
        "emulated_seconds": round(emulated, 9),
        "valid": checks.valid,
        "checks": checks.to_json(),
        "hypothesis": evaluate_hypothesis(sc, totals),
        "totals": totals,
        "guests": guests,
        "hosts": hosts,
        "events": events,
        "run": {
            "runtime": {
                "kind": runtime.kind,
                "guests": sc.runtime.guests if runtime.kind == "ray" else None,
                "ray_started_here": getattr(runtime, "started_ray", None),
            },
            "windows": windows,
            "epochs_per_call": round(
                round(emulated / sc.epoch) * len(plan.host_names) / max(1, runtime.calls), 3
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
