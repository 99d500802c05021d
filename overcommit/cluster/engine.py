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

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overcommit.cluster import checkers
from overcommit.cluster.failover import (
    FAILOVER_COUNTERS,
    Controller,
    HostStatus,
    fresh_carry,
)
from overcommit.cluster.memory import (  # noqa: F401 (re-exported)
    REDIS_ENTRY_OVERHEAD,
    MemoryEstimate,
    estimate_peak_memory,
    estimate_store_bytes,
)
from overcommit.cluster.placement import HostRoom, PlacementError, place
from overcommit.cluster.runners import Boot
from overcommit.cluster.runtime import InfrastructureError, InlineRuntime
from overcommit.cluster.summary import (  # noqa: F401 (re-exported: the driver's public names)
    FREEING_COUNTERS,
    SCHEMA,
    TOTAL_COUNTERS,
    PreflightError,
    RunResult,
    _check_hypothesis_names,
    _conclude,
    _freed_pages,
    abort_reason,
    evaluate_hypothesis,
    signal_behind,
    study_status,
)
from overcommit.cluster.timeline import _apply_event, _EventContext, _fail_host, _Faults, _timeline
from overcommit.metrics import Recorder
from overcommit.migration.planner import Migrations
from overcommit.nodes import build_mechanism
from overcommit.output import write_run_dir
from overcommit.profiles import DeviceQueue, device_profiles
from overcommit.stores.launcher import RedisFleet, raise_received_signal, signal_handled

ProgressFn = Callable[[float, float, dict], None]
WindowHook = Callable[[int, Any, Any], None]


def preflight(scenario: Any) -> MemoryEstimate:
    """Refuse a run that would not fit in memory; return its expected peak memory.

    With `limits.store_memory` set, what the Redis stores may hold at most
    (`estimate_store_bytes`) must fit in it; otherwise the run's expected peak memory, summed
    over every process it starts (`estimate_peak_memory`), must fit in this machine's memory
    (its total: what other processes use now is not the run's to judge)."""
    import psutil

    est = estimate_peak_memory(scenario)
    budget = scenario.limits.store_memory
    if budget is not None:
        need, pages = estimate_store_bytes(scenario)
        if need > budget:
            raise PreflightError(
                f"the stores may need {need / 2**30:.1f} GiB ({pages} page records, payload "
                f"'{scenario.payload}') but the budget is {budget / 2**30:.1f} GiB "
                "(limits.store_memory); use payload: digest, smaller swap or working sets, or "
                "raise limits.store_memory"
            )
        return est
    memory = psutil.virtual_memory().total
    if est.total > memory:
        raise PreflightError(
            f"the run may need {est.total / 2**30:.1f} GiB of memory at its peak but this "
            f"machine has {memory / 2**30:.1f} GiB ({est.line()}); use fewer or smaller "
            "guests, a shorter duration, payload: digest, or a larger machine"
        )
    return est


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
    except (InfrastructureError, KeyboardInterrupt, SystemExit, SystemError) as caught:
        exc = signal_behind(caught)
        if isinstance(exc, SystemError):
            raise
        # keep what the run computed: the complete epochs, or (stopped before the first
        # window) an empty run, written with status `aborted` and the reason
        result = getattr(exc, "partial", None) or _empty_result(scenario, plan, abort_reason(exc))
        exc.partial = result  # type: ignore[union-attr]
        _write(result, out_dir, wall0, times)
        signal_handled()
        if exc is caught:
            raise
        raise exc from None
    _write(result, out_dir, wall0, times)
    return result


def _write(result: RunResult, out_dir: Path | None, wall0: float, times: dict) -> None:
    result.summary["run"]["wall_seconds"] = round(time.perf_counter() - wall0, 3)
    setup = times.get("setup")
    result.summary["run"]["setup_seconds"] = None if setup is None else round(setup, 3)
    if out_dir is not None:
        series = result.series
        guests, hosts = (
            functools.partial(series.chunks, "guests"),
            functools.partial(series.chunks, "hosts"),
        )
        write_run_dir(out_dir, result.summary, guests, hosts, result.events)
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
            raise_received_signal()  # one whose exception a __del__ dropped still stops here
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
                recorder.record_guests(
                    e0, e1, [gw.name for gw in hw.guests], hw.guest_rows, hw.name
                )
                for gw in hw.guests:
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
                live.window_done(e1, recorder, ctl, mig, checks, fo, keyed)
            e0 = e1

        finals, host_summaries = runtime.finish()
    except (InfrastructureError, KeyboardInterrupt, SystemExit, SystemError) as caught:
        exc = signal_behind(caught)
        if isinstance(exc, SystemError):
            raise
        # the run stops here: keep what the complete epochs computed, with the reason
        recorder.truncate(done)
        try:
            partial = conclude(done, [], [], windows, stale_keys, abort_reason(exc))
        except Exception:  # never hide why the run stopped; the caller writes an empty run
            partial = None
        exc.partial = partial  # type: ignore[union-attr]
        if exc is caught:
            raise
        raise exc from None
    return conclude(epochs, finals, host_summaries, windows, stale_keys, None)
