"""A run's result: the steady-state hypothesis (`evaluate_hypothesis`), the summary built from
the recorder, the guests' final accounting and the checks (`_conclude`, `_summarise`), the
failover episodes' figures, and the status of a run or study that stopped early
(`abort_reason`, `study_status`)."""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import platform
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from overcommit.cluster import checkers
from overcommit.cluster.failover import (
    FAILOVER_COUNTERS,
    Controller,
    down_summary,
)
from overcommit.metrics import Recorder
from overcommit.migration.planner import Migrations
from overcommit.nodes.guest import (
    COUNTERS,
    HIST_BINS,
    STALL_SOURCES,
    hist_percentile,
)
from overcommit.stores.launcher import received_signal
from overcommit.version import __version__

if TYPE_CHECKING:
    from overcommit.cluster.engine import Plan

SCHEMA = "overcommit.summary/1"


class PreflightError(ValueError):
    """The scenario cannot run here (its stores would not fit, a guest cannot be placed)."""


# Counters in summary["totals"]: every guest counter, summed; each present, 0 when unused.
TOTAL_COUNTERS = COUNTERS


@dataclass
class RunResult:
    """What a run produced: the summary, the time series, the event log, where it was written.

    `series` holds the time series as recorded; `guests` and `hosts` are their frames, built
    on first use (a run directory is written from `series` in chunks, never from them)."""

    summary: dict
    series: Recorder
    events: list[dict]
    out_dir: Path | None = None
    violations: dict[str, int] = field(default_factory=dict)

    @functools.cached_property
    def guests(self) -> pd.DataFrame:
        """Per guest and epoch time series (guests.csv's rows)."""
        return self.series.guests_frame()

    @functools.cached_property
    def hosts(self) -> pd.DataFrame:
        """Per host and epoch time series (hosts.csv's rows)."""
        return self.series.hosts_frame()

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


def signal_behind(exc: BaseException) -> BaseException:
    """The exception to handle for `exc`: a signal's (KeyboardInterrupt, or the SystemExit the
    SIGTERM handler raises) that arrived while a compiled kernel was being called or compiled
    comes back as a SystemError ("returned a result with an exception set") caused by it; that
    cause. A signal received whose own exception was dropped (raised inside a ``__del__``)
    outranks what followed it (the store a SIGTERM stopped, lost). Any other exception is
    itself."""
    inner = exc
    while isinstance(inner, SystemError) and inner.__cause__ is not None:
        inner = inner.__cause__
    if isinstance(inner, (KeyboardInterrupt, SystemExit)):
        return inner
    return received_signal() or exc


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
        recorder,
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
                "hosts_per_actor": getattr(runtime, "per_actor", None),
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
