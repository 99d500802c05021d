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

import contextlib
import dataclasses
import functools
import math
import operator
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from overcommit.cluster import checkers
from overcommit.cluster.chaos import chaos_events
from overcommit.cluster.failover import (
    FAILOVER_COUNTERS,
    Controller,
    HostStatus,
    down_summary,
    empty_status,
    fresh_carry,
)
from overcommit.cluster.placement import HostRoom, PlacementError, place
from overcommit.cluster.runners import Boot
from overcommit.cluster.runtime import InfrastructureError, InlineRuntime
from overcommit.config import EVENT_ACTIONS
from overcommit.metrics import Recorder
from overcommit.migration.planner import Migrations
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
from overcommit.version import __version__

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


#: Figures a `within D of each failure` clause may name (measured from the time series).
WITHIN_FIGURES = ("progress", "alive")
WITHIN_SPAN = 10.0  # seconds over which a `within` clause measures its figure


def _check_hypothesis_names(scenario: Any) -> None:
    known = {
        "progress",
        "stall_seconds",
        "downtime_seconds",
        "balloon_lag_seconds",
        "recovery_seconds",
        *TOTAL_COUNTERS,
        *FAILOVER_COUNTERS,
    }
    for cond in scenario.conditions():
        if cond.within is not None and cond.name not in WITHIN_FIGURES:
            raise PreflightError(
                f"hypothesis: '{cond}': a 'within' clause measures one of "
                f"{', '.join(WITHIN_FIGURES)}, not '{cond.name}'"
            )
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


def _within_value(c: Any, recorder: Recorder | None, fail_epoch: int) -> float | None:
    """The figure over [failure + D, failure + D + 10 s): `progress` is work over the time every
    guest of the scenario could have run (a guest down counts as no progress); `alive` the share
    of guest-epochs alive. None when the interval lies past the run's end."""
    if recorder is None:
        return None
    dt = recorder.dt
    lo = fail_epoch + math.ceil(c.within / dt - 1e-9)
    hi = min(recorder.epochs, lo + max(1, round(WITHIN_SPAN / dt)))
    if lo >= recorder.epochs:
        return None
    span = (hi - lo) * len(recorder.guest_names)
    if c.name == "alive":
        return round(float(recorder.g["alive"][lo:hi].sum() / span), 6)
    return round(float(recorder.g["work_s"][lo:hi].sum() / (span * dt)), 6)


def evaluate_hypothesis(
    scenario: Any,
    totals: dict,
    recorder: Recorder | None = None,
    failures: list[int] | None = None,
) -> dict | None:
    conds = scenario.conditions()
    if not conds:
        return None
    details = []
    for c in conds:
        if c.within is None:
            value = totals.get(c.name)
            ok = bool(value is not None and _OPS[c.op](value, c.value))
            details.append({"condition": str(c), "value": value, "ok": ok})
            continue
        values = [_within_value(c, recorder, e) for e in failures or []]
        # a failure too close to the run's end to measure does not count against it
        ok = all(v is None or _OPS[c.op](v, c.value) for v in values)
        details.append({"condition": str(c), "value": values, "ok": ok})
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
    real_faults: Any = None,
    live: Any = None,
) -> RunResult:
    """Run a validated scenario; write the run directory if asked.

    `on_window(epoch, runtime, fleet)` is called after each sync window ends (at the first
    epoch of the next one); tests use it to inject faults where they would happen.
    `real_faults` (Ray only; see `overcommit.drill.RealFaults`) turns `fail_host` and
    `recover_host` events into removed and added Ray nodes: the driver detects the deaths.
    `live` (a `overcommit.cluster.live.LiveControl`) paces a game day's windows against the
    wall clock, adds the events injected meanwhile at each window's start and may end the run
    there (see docs/gameday.md).
    """
    _check_hypothesis_names(scenario)
    preflight(scenario)
    plan = Plan(scenario)
    wall0 = time.perf_counter()
    times: dict[str, float] = {}
    try:
        result = _in_stores(
            scenario,
            plan,
            wall0,
            times,
            progress,
            workdir,
            on_window,
            address,
            verbose,
            real_faults,
            live,
        )
    except (InfrastructureError, KeyboardInterrupt, SystemExit) as exc:
        # keep what the run computed: the complete epochs, or (stopped before the first
        # window) an empty run, written with status `aborted` and the reason
        result = getattr(exc, "partial", None) or _empty_result(scenario, plan, abort_reason(exc))
        exc.partial = result  # type: ignore[union-attr]
        _write(result, out_dir, wall0, times)
        raise
    _write(result, out_dir, wall0, times)
    return result


def _write(result: RunResult, out_dir: Path | None, wall0: float, times: dict) -> None:
    result.summary["run"]["wall_seconds"] = round(time.perf_counter() - wall0, 3)
    setup = times.get("setup")
    result.summary["run"]["setup_seconds"] = None if setup is None else round(setup, 3)
    if out_dir is not None:
        write_run_dir(out_dir, result.summary, result.guests, result.hosts, result.events)
        result.out_dir = out_dir


def _in_stores(
    scenario: Any,
    plan: Plan,
    wall0: float,
    times: dict[str, float],
    progress: ProgressFn | None,
    workdir: Path | None,
    on_window: WindowHook | None,
    address: str | None,
    verbose: bool,
    real_faults: Any,
    live: Any = None,
) -> RunResult:
    """Start the stores and the runtime, run, and stop them all on every way out."""
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
                    scenario,
                    plan.placement,
                    fleet.shared.url,
                    address=address,
                    verbose=verbose,
                    workdir=Path(tmp),
                )
            else:
                runtime = InlineRuntime(scenario, plan.placement, fleet)
            hook = None if on_window is None else (lambda e: on_window(e, runtime, fleet))
            if real_faults is not None:
                if not on_ray:
                    raise InfrastructureError("real faults need the ray runtime")
                runtime.detect_deaths = True
            times["setup"] = time.perf_counter() - wall0  # stores started, hosts and guests placed
            return _run(scenario, plan, runtime, progress, hook, real_faults, live)
        finally:
            if runtime is not None:
                runtime.close()
            fleet.stop_all()


class _NoRuntime:
    """Stands for the runtime of a run stopped before its runtime started."""

    calls = 0

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _empty_result(scenario: Any, plan: Plan, reason: str) -> RunResult:
    """The result of a run stopped before its first epoch completed."""
    sc = scenario
    recorder = Recorder(plan.guest_names, plan.guest_hosts, plan.host_names, 0, sc.epoch)
    ctl = Controller(sc, plan, min_detection=max(1, round(sc.sync_window / sc.epoch)))
    keyed = [
        (
            (0, -1, i),
            {"t": 0.0, "epoch": 0, "kind": "boot", "guest": g.name, "host": plan.placement[g.name]}
            | {"memory": g.memory, "maxmem": g.maxmem},
        )
        for i, g in enumerate(plan.specs)
    ]
    return _conclude(
        sc,
        plan,
        _NoRuntime(sc.runtime.kind),
        recorder,
        checkers.CheckLog(),
        keyed,
        ctl,
        Migrations(sc, plan, ctl),
        {s.name: fresh_carry(s) for s in plan.specs},
        dict.fromkeys(FAILOVER_COUNTERS, 0),
        0,
        [],
        [],
        0,
        0,
        reason,
    )


def _timeline(sc: Any, epochs: int) -> list[tuple[int, int, Any]]:
    """(epoch, order, event) of the scenario's events and its chaos schedule's, in order."""
    dt = sc.epoch
    events = [*sc.events, *chaos_events(sc)]
    return sorted(
        ((min(epochs - 1, math.ceil(ev.at / dt - 1e-9)), i, ev) for i, ev in enumerate(events)),
        key=lambda x: (x[0], x[1]),
    )


class _Faults:
    """The driver's state of modeled faults: slowed storage, hosts asked to reclaim."""

    def __init__(self, device: DeviceQueue) -> None:
        self.device = device
        self.base = device.profile
        self.slow: list[tuple[int, float]] = []  # (end epoch, factor)
        self.net: list[tuple[int, float]] = []  # network drops: (end epoch, factor)
        self.net_factor = 1.0
        self.needs: dict[str, int] = {}

    def slow_storage(self, end: int, factor: float) -> None:
        self.slow.append((end, factor))

    def apply(self, e: int) -> None:
        """Shared storage runs at the smallest factor of the slowdowns in force at `e`."""
        self.slow = [(end, f) for end, f in self.slow if end > e]
        self.net = [(end, f) for end, f in self.net if end > e]
        self.net_factor = min((f for _, f in self.net), default=1.0)
        factor = min((f for _, f in self.slow), default=1.0)
        p = self.base
        self.device.profile = (
            p
            if factor >= 1.0
            else dataclasses.replace(p, iops=p.iops * factor, bandwidth=p.bandwidth * factor)
        )

    def cuts(self) -> set[int]:
        return {end for end, _ in self.slow} | {end for end, _ in self.net}


def _run(
    scenario: Any,
    plan: Plan,
    runtime: Any,
    progress: ProgressFn | None,
    hook: Callable[[int], None] | None,
    real_faults: Any = None,
    live: Any = None,
) -> RunResult:
    sc = scenario
    dt = sc.epoch
    epochs = max(1, math.ceil(sc.duration / dt - 1e-9))
    per_window = max(1, round(sc.sync_window / dt))
    timeline = _timeline(sc, epochs)
    event_epochs = {e for e, _, _ in timeline}
    checks = checkers.CheckLog()
    recorder = Recorder(plan.guest_names, plan.guest_hosts, plan.host_names, epochs, dt)
    gindex = {n: i for i, n in enumerate(plan.guest_names)}
    # event log entries carry a sort key: (epoch, phase, order) with timeline events first in
    # their epoch, then guest events in scenario order; runtimes may report in any order
    keyed: list[tuple[tuple[int, int, int], dict]] = []

    def log(e: int, kind: str, key: tuple[int, int], **fields: Any) -> None:
        keyed.append(((e, *key), {"t": round(e * dt, 9), "epoch": e, "kind": kind, **fields}))

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
    faults = _Faults(device)
    ctl = Controller(sc, plan, min_detection=per_window)
    mig = Migrations(sc, plan, ctl)
    carries = {s.name: fresh_carry(s) for s in plan.specs}
    tmem_held: dict[str, int] = {}  # each guest's pool pages at its last report
    status: dict[str, HostStatus] = {}
    fo = dict.fromkeys(FAILOVER_COUNTERS, 0)
    ev_iter = 0
    windows = 0
    e0 = done = 0  # done: epochs whose time series is complete
    stale_keys = 0
    conclude = functools.partial(
        _conclude, sc, plan, runtime, recorder, checks, keyed, ctl, mig, carries, fo
    )
    try:
        stale_keys = runtime.start()
        while e0 < epochs:
            ops = nbytes = 0
            if live is not None:  # a game day: wait for the wall clock, take injected events
                injected, stop = live.boundary(e0, dt)
                if stop:
                    epochs = e0  # the day ends here: everything below sees a run this long
                    recorder.truncate(epochs)
                    break
                at = next((i for i in range(ev_iter, len(timeline)) if timeline[i][0] != e0), None)
                at = len(timeline) if at is None else at
                timeline[at:at] = [(e0, len(timeline) + k, ev) for k, ev in enumerate(injected)]
                live.before_events(injected, runtime)
            while ev_iter < len(timeline) and timeline[ev_iter][0] == e0:
                _, order, ev = timeline[ev_iter]
                ctx = _EventContext(
                    sc, runtime, ctl, faults, carries, status, fo, log, e0, order, real_faults, mig
                )
                extra = _apply_event(ev, ctx)
                if extra is not None:
                    ops += extra.dev_ops
                    nbytes += extra.dev_bytes
                    for check, message in extra.violations:
                        checks.add(check, [message], f"epoch {e0}: ")
                ev_iter += 1
            faults.apply(e0)
            restarts, needs, failed = ctl.step(e0, {h: status[h] for h in status if ctl.alive[h]})
            for k, (guest, host, carry, downtime) in enumerate(restarts):
                boot = Boot(e0, e0 * dt, downtime, sc.ha.boot_time)
                runtime.restart_guest(guest, host, carry, boot)
                fo["ha_restarts"] += 1
                log(
                    e0,
                    "ha_restart",
                    (0, 10_000 + k),
                    guest=guest,
                    host=host,
                    incarnation=carry["incarnation"] + 1,
                    downtime_seconds=round(downtime, 9),
                )
            for k, (guest, reason) in enumerate(failed):
                fo["restart_failures"] += 1
                log(e0, "restart_failed", (0, 20_000 + k), guest=guest, reason=reason)
            for k, (host, pages) in enumerate(sorted(needs.items())):
                if faults.needs.get(host, 0) == 0:
                    log(e0, "reclaim", (0, 30_000 + k), host=host, pages=pages)
            refused, mneeds = mig.step(e0, status, plan.mechanism.guest_features, tmem_held)
            for k, rec in enumerate(refused):
                log(
                    e0,
                    "migration_refused",
                    (0, 40_000 + k),
                    guest=rec["guest"],
                    reason=rec["outcome"],
                )
                mig.records.append(rec)
            for host, pages in mneeds.items():
                needs[host] = needs.get(host, 0) + pages
            for k, (host, pages) in enumerate(sorted(mneeds.items())):
                if faults.needs.get(host, 0) == 0:
                    log(e0, "reclaim", (0, 30_000 + k), host=host, pages=pages)
            faults.needs = needs
            orders = mig.orders(faults.net_factor)
            # the window ends at the next grid point, event, controller action or end of a
            # slowdown; while a migration runs, after one epoch
            later = [(e0 // per_window + 1) * per_window, *ctl.wake_epochs(), *faults.cuts()]
            later += [x for x in event_epochs if x > e0]
            e1 = min([epochs, *(x for x in later if x > e0), *([e0 + 1] if mig.busy else [])])
            windows += 1
            reports = {}
            for hw in runtime.run_window(e0, e1, dt, device, needs, orders, ctl.promised_pages()):
                recorder.record_host(e0, e1, hw)
                status[hw.name] = hw.status
                ctl.reported(hw.name, [gw.name for gw in hw.guests])
                freed = 0
                for gw in hw.guests:
                    recorder.record_guest(e0, e1, gw, hw.name)
                    if needs.get(hw.name, 0) and gw.name in carries:
                        freed += _freed_pages(carries[gw.name], gw.carry)
                    carries[gw.name] = gw.carry
                    reports[gw.name] = gw
                    tmem_held[gw.name] = gw.state.tmem_pages if gw.state is not None else 0
                    for e, kind, fields in gw.events:
                        log(e, kind, (1, gindex[gw.name]), **fields)
                ctl.freed(hw.name, freed)
                for e, check, message in sorted(hw.violations, key=lambda v: v[0]):
                    checks.add(check, [message], f"epoch {e}: ")
                ops += hw.dev_ops
                nbytes += hw.dev_bytes
            done = e1  # the window's time series is complete
            for k, host in enumerate(runtime.take_lost() if real_faults is not None else ()):
                # a real fault: the host's actor died in this window; it failed at the window's
                # start (its guests ran nothing since), logged so that a replay is exact
                ctx = _EventContext(
                    sc, runtime, ctl, faults, carries, status, fo, log, e0, 50_000 + k, None, mig
                )
                _fail_host(host, ctx, {"detected": "the host's Ray actor died"})
            device.close_window(ops, nbytes, (e1 - e0) * dt)
            if plan.mechanism.guest_uses_tmem:
                for problems in runtime.pool_counts():
                    checks.add("frontswap", problems, f"epoch {e1 - 1}: ")
            for g, r in mig.running.items():
                gw = reports.get(g)
                if gw is not None and gw.stream and not r.moved:
                    runtime.stream(g, r.dest, gw.stream)
            for k, (kind, fields) in enumerate(mig.after_window(e1, reports, runtime)):
                log(e1, kind, (-2, k), **fields)
            if progress is not None:
                slowest = getattr(runtime, "slowest", None)
                progress(
                    e1 * dt,
                    epochs * dt,
                    {"epochs": e1, "windows": windows, "slowest_host": slowest},
                )
            if hook is not None:
                hook(e1)
            if live is not None:
                live.window_done(e1, recorder, ctl, mig, checks, fo)
            e0 = e1

        finals, host_summaries = runtime.finish()
    except (InfrastructureError, KeyboardInterrupt, SystemExit) as exc:
        # the run stops here: keep what the complete epochs computed, with the reason
        recorder.truncate(done)
        try:
            partial = conclude(done, [], [], windows, stale_keys, abort_reason(exc))
        except Exception:  # never hide why the run stopped; the caller writes an empty run
            partial = None
        exc.partial = partial  # type: ignore[union-attr]
        raise
    return conclude(epochs, finals, host_summaries, windows, stale_keys, None)


def abort_reason(exc: BaseException) -> str:
    """Why a run stopped early, in one line."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 0
        if code > 128:
            with contextlib.suppress(ValueError):
                return f"interrupted by {signal.Signals(code - 128).name}"
        return f"stopped (exit {exc.code})"
    return f"infrastructure failure: {exc}"


def study_status(report: dict, exc: BaseException | None, run_dir: Path | None = None) -> dict:
    """A study's report (compare.json, drill.json) with its `status` after `schema`:
    `complete`, or `aborted` with the `reason` and the `stopped_run` directory (written with
    status `aborted`; the report lists the runs finished before it)."""
    marks: dict[str, Any] = {"status": "complete"}
    if exc is not None:
        marks = {"status": "aborted", "reason": abort_reason(exc), "stopped_run": str(run_dir)}
    return {"schema": report.get("schema"), **marks, **report}


def _conclude(
    sc: Any,
    plan: Plan,
    runtime: Any,
    recorder: Recorder,
    checks: checkers.CheckLog,
    keyed: list[tuple[tuple[int, int, int], dict]],
    ctl: Controller,
    mig: Migrations,
    carries: dict[str, dict],
    fo: dict[str, int],
    epochs: int,
    finals: list,
    host_summaries: list,
    windows: int,
    stale_keys: int,
    aborted: str | None,
) -> RunResult:
    """The run's result after `epochs` complete epochs: the summary, the series, the event
    log. `aborted` (the reason) marks a run that stopped early: its guests' figures are their
    accounting at the last complete window, nothing is read back from the stores."""
    dt = sc.epoch
    by_guest = {name: (summary, violations, hist) for name, summary, violations, hist in finals}
    for name in plan.guest_names:
        if name not in by_guest:  # down at the end: its last incarnation's accounting
            down = epochs - ctl.down_since(name, epochs)
            spec = next(s for s in plan.specs if s.name == name)
            by_guest[name] = (
                down_summary(spec, carries[name], down * dt),
                [],
                carries[name]["hist"],
            )
        for check, message in by_guest[name][1]:
            checks.add(check, [message])
    events = [ev for _, ev in sorted(keyed, key=lambda kv: kv[0])]
    guests = {name: by_guest[name][0] for name in plan.guest_names}
    hist = sum((by_guest[n][2] for n in plan.guest_names), np.zeros(HIST_BINS, np.int64))
    failover = ctl.summary([_survivor_progress(recorder, ctl, ep, epochs) for ep in ctl.episodes])
    for r in list(mig.running.values()) + list(mig.waiting):  # still running at the end
        mig.records.append(mig._record(r, epochs, "unfinished: the run ended"))
    migrations = mig.summary()
    fo["migrations_completed"] = sum(1 for m in migrations if m["outcome"] == "completed")
    fo["migrations_failed"] = len(migrations) - fo["migrations_completed"]
    summary = _summarise(
        sc,
        plan,
        checks,
        events,
        epochs * dt,
        guests,
        hist,
        {h: dict(host_summaries).get(h) for h in plan.host_names},
        runtime,
        windows,
        fo,
        failover,
        migrations,
        recorder,
    )
    summary["totals"]["tmem_pages_peak"] = int(recorder.h["tmem_pages"].sum(axis=1).max(initial=0))
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
        summary["totals"][total] = int(table[col].sum(axis=1).max(initial=0))
    if aborted is not None:
        _mark_aborted(summary, aborted, epochs, ctl)
    summary["run"]["stale_keys_deleted"] = stale_keys
    summary["run"]["nodes"] = getattr(runtime, "nodes", lambda: {})()
    summary["run"]["migration_bytes_crossed"] = getattr(runtime, "crossed", 0)
    return RunResult(
        summary,
        recorder.guests_frame(),
        recorder.hosts_frame(),
        events,
        violations=dict(checks.count),
    )


def _mark_aborted(summary: dict, reason: str, epochs: int, ctl: Controller) -> None:
    """Mark a summary as that of a run stopped after `epochs` complete epochs: `status`,
    `reason` and `last_epoch` at the top; guests on the hosts they ran on, hosts up or down
    as the driver knew them."""
    marks = {"status": "aborted", "reason": reason, "last_epoch": epochs - 1 if epochs else None}
    rest = {k: v for k, v in summary.items() if k not in ("schema", "status")}
    summary.clear()
    summary.update({"schema": SCHEMA, **marks, **rest})
    for name, g in summary["guests"].items():
        g["host"] = ctl.where.get(name)
    for name, h in summary["hosts"].items():
        h["alive"] = bool(ctl.alive[name])
        h["guests"] = list(ctl.members.get(name, ())) if h["alive"] else []


def _survivor_progress(recorder: Recorder, ctl: Controller, ep: Any, epochs: int) -> float | None:
    """Progress of the guests the failure did not hit, from the failure until every guest of
    the failed host was back (or the run's end)."""
    end = epochs
    if len(ep.restarted) == len(ep.guests):
        end = max((e for e, _ in ep.restarted.values()), default=ep.epoch)
    end = min(epochs, max(end, ep.epoch + 1))
    cols = [i for i, n in enumerate(recorder.guest_names) if n not in set(ep.guests)]
    if not cols:
        return None
    alive = recorder.g["alive"][ep.epoch : end, cols].sum() * recorder.dt
    work = recorder.g["work_s"][ep.epoch : end, cols].sum()
    return round(float(work / alive), 6) if alive > 0 else 0.0


@dataclass
class _EventContext:
    sc: Any
    runtime: Any
    ctl: Controller
    faults: _Faults
    carries: dict[str, dict]
    status: dict[str, HostStatus]
    fo: dict[str, int]
    log: Callable[..., None]
    e: int
    order: int
    real: Any = None  # RealFaults of a drill that removes Ray nodes
    mig: Any = None  # the running live migrations

    def emit(self, kind: str, sub: int = 0, **fields: Any) -> None:
        self.log(self.e, kind, (0, self.order * 100 + sub), **fields)


def _apply_event(ev: Any, ctx: _EventContext) -> EpochStats | None:
    """Apply one timeline event; returns the device load and violations it caused, if any."""
    runtime, ctl, e = ctx.runtime, ctx.ctl, ctx.e
    action, target = ev.action, ev.target
    tag = {"chaos": True} if ev._chaos else {}
    kind = EVENT_ACTIONS[action]
    if kind == "host" and not ctl.alive[target] and action != "recover_host":
        ctx.emit(action, host=target, skipped="the host is down", **tag)
        return None
    if action == "tmem_flush" and ctl.where.get(target) is None:
        ctx.emit(action, guest=target, skipped="the guest is down", **tag)
        return None
    if action == "tmem_freeze":
        runtime.set_frozen(target, True)
        ctx.emit(action, host=target)
    elif action == "tmem_thaw":
        runtime.set_frozen(target, False)
        ctx.emit(action, host=target)
    elif action == "tmem_flush":
        moved, stats = runtime.drain(target)
        spec = ctl.specs[target]
        ctx.emit(
            action,
            guest=target,
            host=ctl.where[target],
            pages_moved=moved,
            cooperative=spec.cooperative,
        )
        return stats
    elif action in ("host_reclaim", "host_release"):  # the host reads its timeline
        ctx.emit(action, host=target)
    elif action == "stop_cooperating":  # the guest reads its timeline
        ctx.emit(action, guest=target, host=ctl.where.get(target))
    elif action == "slow_storage":
        end = e + max(1, math.ceil(target.duration / ctx.sc.epoch - 1e-9))
        ctx.faults.slow_storage(end, target.factor)
        ctx.emit(action, factor=target.factor, duration=target.duration, **tag)
    elif action == "network":
        end = e + max(1, math.ceil(target.duration / ctx.sc.epoch - 1e-9))
        ctx.faults.net.append((end, target.factor))
        ctx.emit(action, factor=target.factor, duration=target.duration, **tag)
    elif action == "fail_host":
        if ctx.real is not None:  # a drill with real faults: remove the host's Ray node and
            ctx.real.kill(target)  # wait until the driver sees its actor dead
            runtime.await_death(target)
            tag = {**tag, "detected": "the host's Ray actor died"}
        _fail_host(target, ctx, tag)
    elif action == "recover_host":
        if ctl.alive[target]:
            ctx.emit(action, host=target, skipped="the host is up", **tag)
            return None
        if ctx.real is not None:
            ctx.real.revive(target)
        runtime.recover_host(target)
        ctl.host_recovered(target, e)
        ctx.status[target] = empty_status(ctx.sc)  # back empty: all its RAM is free
        ctx.fo["host_recoveries"] += 1
        ctx.emit(action, host=target, **tag)
    elif action == "tmem_backend_failure":
        _backend_failure(target, ctx, tag)
    elif action == "migrate":
        host = ctl.where.get(target)
        rec = ctx.mig.request(target, ev.to, ev.mode, e)
        mode = ev.mode or ctx.sc.migration.mode
        extra = {"refused": rec["outcome"]} if rec is not None else {}
        if rec is not None:
            ctx.mig.records.append(rec)
        ctx.emit(action, guest=target, host=host, to=ev.to, mode=mode, **extra)
    elif action == "evacuate":
        guests = ctx.mig.evacuate(target, e)
        ctx.emit(action, host=target, guests=guests)
    return None


def _emit_crash(ctx: _EventContext, order: int, guest: str, host: str | None, reason: str) -> None:
    """Log a guest's crash with what its carried accounting says it lost."""
    c = ctx.carries[guest]
    ctx.emit(
        "guest_crash",
        order,
        guest=guest,
        host=host,
        reason=reason,
        tmem_pages_lost=c["lost_tmem"],
        hswap_pages_lost=c["lost_hswap"],
    )


def _fail_host(target: str, ctx: _EventContext, tag: dict[str, Any]) -> None:
    """The host dies now: its guests crash, with what only it held; HA takes over."""
    runtime, ctl, e, action = ctx.runtime, ctx.ctl, ctx.e, "fail_host"
    lost_remote = [] if ctx.mig is None else ctx.mig.host_failed(target, e)
    guests = list(ctl.members[target])
    runtime.fail_host(target)
    ctx.status.pop(target, None)
    ctl.host_failed(target, e, {g: ctx.carries[g] for g in guests})
    lost_t = sum(ctx.carries[g]["lost_tmem"] for g in guests)
    lost_h = sum(ctx.carries[g]["lost_hswap"] for g in guests)
    ctx.fo["host_failures"] += 1
    ctx.fo["guests_crashed"] += len(guests)
    ctx.fo["tmem_pages_lost"] += lost_t
    ctx.fo["hswap_pages_lost"] += lost_h
    ctx.emit(
        action,
        host=target,
        guests=guests,
        tmem_pages_lost=lost_t,
        hswap_pages_lost=lost_h,
        **tag,
    )
    for k, g in enumerate(guests):
        _emit_crash(ctx, 1 + k, g, target, "host failed")
    episode = len(ctl.episodes) - 1
    for k, (g, what) in enumerate(lost_remote):
        if what != "lost":
            runtime.cancel_migration(g)
            continue
        host = ctl.where.get(g)
        runtime.crash_guest(g)
        ctl.guest_lost(g, episode, e, ctx.carries[g])
        c = ctx.carries[g]
        ctx.fo["guests_crashed"] += 1
        ctx.fo["tmem_pages_lost"] += c["lost_tmem"]
        ctx.fo["hswap_pages_lost"] += c["lost_hswap"]
        _emit_crash(ctx, 500 + k, g, host, "post-copy source failed")


def _backend_failure(target: str, ctx: _EventContext, tag: dict[str, Any]) -> None:
    """The host's Redis dies and comes back empty; guests with pages only there crash."""
    runtime, ctl, action = ctx.runtime, ctx.ctl, "tmem_backend_failure"
    lost = runtime.backend_failure(target, ctx.e * ctx.sc.epoch, ctx.sc.ha.boot_time)
    crashed = [g for g in ctl.members[target] if lost[g]["crashed"]]
    for g in crashed:  # a guest that crashed is no longer migrating
        if ctx.mig is not None:
            ctx.mig.cancel(g, ctx.e, "failed: the guest crashed", runtime)
    ctx.fo["backend_failures"] += 1
    ctx.fo["guests_crashed"] += len(crashed)
    for g in ctl.members[target]:
        ctx.fo["tmem_pages_lost"] += lost[g]["tmem"] if lost[g]["crashed"] else 0
        ctx.fo["hswap_pages_lost"] += lost[g]["hswap"] if lost[g]["crashed"] else 0
        ctx.fo["cache_pages_lost"] += lost[g]["cache"] if lost[g]["crashed"] else 0
    ctx.emit(action, host=target, guests_crashed=crashed, **tag)
    for k, g in enumerate(crashed):
        ctx.emit(
            "guest_crash",
            1 + k,
            guest=g,
            host=target,
            reason="tmem backend failed",
            tmem_pages_lost=lost[g]["tmem"],
            hswap_pages_lost=lost[g]["hswap"],
            cache_pages_lost=lost[g]["cache"],
        )


def _down_host(sc: Any, recorder: Recorder, name: str) -> dict:
    """The summary of a host that is down at the run's end (peaks from its time series)."""
    j = recorder.hidx[name]
    ps = sc.page_size
    return {
        "alive": False,
        "guests": [],
        "ram_bytes": sc.hosts.ram,
        "reserve_bytes": sc.hosts.reserve,
        "guest_frames_end": 0,
        "tmem_pages_end": 0,
        "tmem_stored_end": 0,
        "tmem_shared_pages_end": 0,
        "tmem_pages_peak": int(recorder.h["tmem_pages"][:, j].max(initial=0)),
        "hswap_pages_peak": int(recorder.h["hswap_pages"][:, j].max(initial=0)),
        "cache_pages_end": 0,
        "ephemeral_pages_end": 0,
        "free_pages_end": 0,
        "free_pages_min": int(recorder.h["free_pages"][:, j].min())
        if ps and recorder.epochs
        else 0,
    }


#: guest counters of pages a mechanism gave back to its host (what reclaim frees)
FREEING_COUNTERS = (
    "tmem_shrink_pages",
    "balloon_inflated",
    "selfshrink_pages",
    "host_swap_outs",
    "cache_dropped",
)


def _freed_pages(before: dict, after: dict) -> int:
    """Pages a guest's mechanisms freed for its host between two of its carries."""
    b, a = before.get("counters", {}), after.get("counters", {})
    return sum(max(0, a.get(k, 0) - b.get(k, 0)) for k in FREEING_COUNTERS)


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
    hosts: dict[str, dict | None],
    runtime: Any,
    windows: int,
    fo: dict[str, int],
    failover: dict,
    migrations: list[dict],
    recorder: Recorder,
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
        **{k: int(v) for k, v in fo.items()},
        "recovery_seconds": failover["recovery_seconds"],
    }
    for q, v in totals["fault_latency"].items():
        totals[f"fault_latency_{q.replace('.', '')}"] = v
    hosts = {
        name: hosts[name] if hosts[name] is not None else _down_host(sc, recorder, name)
        for name in plan.host_names
    }
    import msgpack
    import numpy
    import redis as redis_mod

    return {
        "schema": SCHEMA,
        "status": "complete",
        "scenario": {k: v for k, v in sc.to_json().items() if k != "runtime"},
        "seed": sc.seed,
        "mechanism": plan.mechanism.name,
        "emulated_seconds": round(emulated, 9),
        "valid": checks.valid,
        "checks": checks.to_json(),
        "hypothesis": evaluate_hypothesis(
            sc, totals, recorder, [round(ep["t"] / sc.epoch) for ep in failover["episodes"]]
        ),
        "failover": failover,
        "migrations": migrations,
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
            "setup_seconds": None,
            "versions": {
                "overcommit": __version__,
                "python": platform.python_version(),
                "numpy": numpy.__version__,
                "redis_py": redis_mod.__version__,
                "msgpack": ".".join(map(str, msgpack.version)),
            },
        },
    }
