"""`overcommit sweep`: capacity planning over a grid of scenario values, seeds and mechanisms.

A sweep takes a base scenario and one or more grid axes (`--grid PATH=V1,V2,...` or
`PATH=A:B:STEP`); every point of the grid's cross product is run once per mechanism and seed,
each run in the `inline` runtime with its own Redis servers, in parallel on a pool of Ray
actors. Every finished run becomes one row of `results.parquet` (rewritten whole after each
run), so an interrupted sweep keeps what it finished and the same command resumes it: a run
whose key (grid point, mechanism, seed and a hash of the base config) is stored is skipped.

`PATH` is any dotted path `apply_overrides` accepts (`hosts.count`, `guests.0.count`,
`guests.0.maxmem`, `ha.tolerate`) or the derived knob `overcommit`: the sum of the guests'
maxmem over the sum of the hosts' RAM, reached by scaling every guest group's count by
`target / base ratio` and rounding to the nearest integer (halves up), at least 1.

With a goal (`restart_failures == 0 and progress >= 0.8`, conditions on `summary["totals"]`
or the compared figures of `overcommit.compare.figures`), `sweep.json` answers, per mechanism,
the best value of the goal axis that meets the goal in every seed, and the binding reason at
the next step.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from overcommit.config import Condition, Scenario, apply_overrides, parse_conditions

SCHEMA = "overcommit.sweep/1"
RESULTS = "results.parquet"
SWEEP_JSON = "sweep.json"
OVERCOMMIT = "overcommit"
MAX_POINTS_PER_AXIS = 10_000
#: Axes whose best value is the smallest that meets the goal (fewest hosts, least RAM).
SMALLER_IS_BETTER = ("hosts.count", "hosts.ram")
#: Environment variable: stop the sweep after this many runs were executed (tests, demos).
STOP_AFTER_ENV = "OVERCOMMIT_SWEEP_STOP_AFTER"
#: Columns every row has, before the grid values, totals and figures.
META_COLUMNS = (
    "key",
    "config_hash",
    "mechanism",
    "seed",
    "dir",
    "status",
    "error",
    "valid",
    "exit_code",
    "hypothesis",
    "wall_seconds",
    "hosts",
    "guests",
    "overcommit_actual",
)

_NEGATE = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!=", "!=": "=="}
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class SweepError(ValueError):
    """Bad sweep input (grid, goal, output directory): one line for the user."""


class SweepInterrupted(Exception):
    """The sweep stopped before every run finished (Ctrl-C, or the stop-after hook)."""

    def __init__(self, outcome: SweepOutcome) -> None:
        super().__init__(f"sweep interrupted after {outcome.executed} run(s)")
        self.outcome = outcome


# ----------------------------------------------------------------------------------------------
# Grid


def _scalar(text: str) -> Any:
    text = text.strip()
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return text


def _range(text: str, path: str) -> list[Any]:
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 3 or not all(parts):
        raise SweepError(f"--grid {path}: a range is A:B:STEP (inclusive), got {text!r}")
    nums = [_scalar(p) for p in parts]
    as_size = False
    if not all(isinstance(n, (int, float)) for n in nums):
        from overcommit.units import parse_size

        try:
            nums = [parse_size(p) for p in parts]
        except ValueError:
            raise SweepError(
                f"--grid {path}: range bounds and step must be numbers or sizes, got {text!r}"
            ) from None
        as_size = True
    a, b, step = nums
    if step <= 0:
        raise SweepError(f"--grid {path}: the step of {text!r} must be positive")
    if b < a:
        raise SweepError(f"--grid {path}: {text!r} ends below its start")
    n = int(math.floor((b - a) / step + 1e-9)) + 1
    if n > MAX_POINTS_PER_AXIS:
        raise SweepError(f"--grid {path}: {text!r} has {n} values (at most 10000)")
    if as_size or all(isinstance(x, int) for x in nums):
        return [int(a + i * step) for i in range(n)]
    return [round(a + i * step, 10) for i in range(n)]


def parse_grid(spec: str) -> tuple[str, list[Any]]:
    """`PATH=V1,V2,...` or `PATH=A:B:STEP` (inclusive; items may mix both) -> (path, values).

    Values that look like integers or decimals become numbers; others (`96MiB`) stay strings
    for the scenario model to parse. Raises SweepError on bad syntax.
    """
    if "=" not in spec:
        raise SweepError(f"--grid expects PATH=V1,V2,... or PATH=A:B:STEP, got {spec!r}")
    path, _, rest = spec.partition("=")
    path = path.strip()
    if not path:
        raise SweepError(f"--grid {spec!r}: empty path (like hosts.count or overcommit)")
    values: list[Any] = []
    for item in rest.split(","):
        if not item.strip():
            raise SweepError(f"--grid {path}: empty value in {rest!r}")
        values.extend(_range(item, path) if ":" in item else [_scalar(item)])
    if path == OVERCOMMIT:
        for v in values:
            if not isinstance(v, (int, float)) or v <= 0:
                raise SweepError(f"--grid overcommit: values must be positive numbers, got {v!r}")
    if len({_norm(v) for v in values}) != len(values):
        raise SweepError(f"--grid {path}: a value is given twice in {rest!r}")
    return path, values


def _norm(v: Any) -> Any:
    """Grid values for keys: 2.0 and 2 are the same point."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def ratio(sc: Scenario) -> float:
    """The overcommit ratio: sum of guest maxmem over the hosts' RAM (count x hosts.ram)."""
    guests = sum(g.maxmem for g in sc.guest_specs())
    return guests / (len(sc.host_names()) * sc.hosts.ram)


def scale_to_overcommit(sc: Scenario, target: float) -> Scenario:
    """Scale every guest group's count by target / ratio(sc), rounded to nearest (halves up),
    at least 1. The ratio reached is `ratio()` of the result (integers make it approximate)."""
    k = target / ratio(sc)
    counts = {
        f"guests.{i}.count": max(1, math.floor(g.count * k + 0.5)) for i, g in enumerate(sc.guests)
    }
    return apply_overrides(sc, counts, source="--grid overcommit")


def config_hash(sc: Scenario) -> str:
    """A hash of the resolved base scenario (without `runtime`: sweeps always run inline)."""
    data = {k: v for k, v in sc.to_json().items() if k != "runtime"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def run_key(point: dict[str, Any], mechanism: str, seed: int, chash: str) -> str:
    """The key under which one run is stored: grid point, mechanism, seed, base config hash."""
    blob = json.dumps(
        {"point": {k: _norm(v) for k, v in point.items()}, "m": mechanism, "s": seed, "c": chash},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", text)


@dataclass
class PlannedRun:
    """One run of the sweep: where it sits in the grid and the scenario it runs."""

    key: str
    point: dict[str, Any]
    mechanism: str
    seed: int
    scenario: Scenario
    dir: str  # relative to the sweep directory


@dataclass
class SweepPlan:
    """Every run of a sweep, in grid-major order (then mechanism, then seed)."""

    base: Scenario
    grid: dict[str, list[Any]]
    mechanisms: list[str]
    seeds: list[int]
    config_hash: str
    runs: list[PlannedRun]
    goal: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    axis: str | None = None
    direction: str = "max"


def plan_sweep(
    base: Scenario,
    grid: dict[str, list[Any]],
    mechanisms: list[str] | None = None,
    seeds: int = 1,
    goal: str | None = None,
    direction: str | None = None,
) -> SweepPlan:
    """Validate every grid point (bad values raise ConfigError, bad goals SweepError)."""
    import itertools

    if not grid:
        raise SweepError("a sweep needs at least one --grid PATH=V1,V2,...")
    if seeds < 1:
        raise SweepError("--seeds must be at least 1")
    mechanisms = list(mechanisms) if mechanisms else [base.mechanism]
    conditions: list[Condition] = []
    if goal is not None:
        try:
            conditions = parse_conditions(goal)
        except ValueError as exc:
            raise SweepError(f"--goal: {exc}") from None
    axis = OVERCOMMIT if OVERCOMMIT in grid else next(iter(grid))
    if direction is None:
        direction = "min" if axis in SMALLER_IS_BETTER else "max"
    if direction not in ("max", "min"):
        raise SweepError(f"--goal-direction must be max or min, got {direction!r}")
    base = apply_overrides(base, {"runtime.kind": "inline"}, source="sweep")
    chash = config_hash(base)
    seed_list = [base.seed + i for i in range(seeds)]
    paths = list(grid)
    runs: list[PlannedRun] = []
    for values in itertools.product(*(grid[p] for p in paths)):
        point = dict(zip(paths, values))
        plain = {p: v for p, v in point.items() if p != OVERCOMMIT}
        sc = apply_overrides(base, plain, source="--grid") if plain else base
        if OVERCOMMIT in point:
            sc = scale_to_overcommit(sc, float(point[OVERCOMMIT]))
        label = "_".join(_slug(f"{p}={_norm(v)}") for p, v in point.items())
        for m in mechanisms:
            for s in seed_list:
                run_sc = apply_overrides(sc, {"mechanism": m, "seed": s}, source="sweep")
                runs.append(
                    PlannedRun(
                        key=run_key(point, run_sc.mechanism, s, chash),
                        point=point,
                        mechanism=run_sc.mechanism,
                        seed=s,
                        scenario=run_sc,
                        dir=f"runs/{label}__{_slug(run_sc.mechanism)}-s{s}",
                    )
                )
    return SweepPlan(
        base=base,
        grid={p: list(v) for p, v in grid.items()},
        mechanisms=list(dict.fromkeys(r.mechanism for r in runs)),
        seeds=seed_list,
        config_hash=chash,
        runs=runs,
        goal=goal,
        conditions=conditions,
        axis=axis,
        direction=direction,
    )


# ----------------------------------------------------------------------------------------------
# One run (in a sweep actor or in this process)


def _flatten(prefix: str, obj: dict, out: dict[str, Any]) -> None:
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            _flatten(f"{name}.", v, out)
        elif isinstance(v, (bool, int, float)) or v is None:
            out[name] = v


def execute_run(scenario: Scenario, run_dir: str) -> dict[str, Any]:
    """Run one scenario and return its row fields (status `done`, `preflight` when it cannot
    be placed or its stores would not fit, `infrastructure` when Redis could not start)."""
    from overcommit.cluster.engine import PreflightError, run_scenario
    from overcommit.cluster.runtime import InfrastructureError
    from overcommit.compare import figures
    from overcommit.stores.launcher import RedisUnavailable

    try:
        result = run_scenario(scenario, out_dir=Path(run_dir))
    except PreflightError as exc:
        return {"status": "preflight", "error": str(exc), "exit_code": 2}
    except (InfrastructureError, RedisUnavailable) as exc:
        return {"status": "infrastructure", "error": str(exc), "exit_code": 2}
    summary = result.summary
    row: dict[str, Any] = {
        "status": "done",
        "error": None,
        "valid": bool(result.valid),
        "exit_code": result.exit_code,
        "hypothesis": None if summary["hypothesis"] is None else summary["hypothesis"]["status"],
        "wall_seconds": summary["run"].get("wall_seconds"),
    }
    totals: dict[str, Any] = {}
    _flatten("", summary["totals"], totals)
    row.update(totals)
    row.update(figures(summary))
    return row


# ----------------------------------------------------------------------------------------------
# Results


def load_results(out_dir: Path) -> pd.DataFrame:
    """The stored rows of a sweep directory (empty when none). The file is read in one go:
    a running sweep replaces it whole, and a reader that opened it twice could mix versions."""
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        return pd.DataFrame()
    return pd.read_parquet(io.BytesIO(path.read_bytes()))


def write_results(out_dir: Path, df: pd.DataFrame) -> None:
    """Rewrite results.parquet whole (temporary name, then rename)."""
    from overcommit.output import atomic_write

    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            kinds = {_kind(v) for v in df[c] if v is not None and not _isnan(v)}
            if len(kinds) > 1:  # mixed grid values (4 and "96MiB"): keep them as text
                df[c] = [None if v is None or _isnan(v) else str(v) for v in df[c]]
    atomic_write(Path(out_dir) / RESULTS, lambda f: df.to_parquet(f, index=False), binary=True)


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


@dataclass
class SweepOutcome:
    """What a sweep did: every row of this plan, and how many runs ran, were skipped, failed."""

    plan: SweepPlan
    out_dir: Path
    rows: pd.DataFrame
    executed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)  # one line per run that found no result
    report: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """2 if a run failed (infrastructure), 3 if a run was invalid, else 0."""
        if self.failed:
            return 2
        if "valid" in self.rows and (self.rows["valid"] == False).any():  # noqa: E712
            return 3
        return 0


def known_names(row: dict[str, Any]) -> list[str]:
    """Names a goal may use: numeric keys of a finished row's totals and figures."""
    skip = set(META_COLUMNS)
    return sorted(
        k
        for k, v in row.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
        if "." not in k or k.startswith(("stall_by_source.", "fault_latency."))
    )


def check_goal_names(conditions: list[Condition], row: dict[str, Any]) -> None:
    """Raise SweepError naming the unknown figures (checked on the first finished run)."""
    known = set(known_names(row))
    unknown = [c.name for c in conditions if c.name not in known]
    if unknown:
        names = ", ".join(sorted(known))
        raise SweepError(
            f"--goal: unknown figure {', '.join(repr(u) for u in unknown)} "
            f"(not in the first finished run's totals; known: {names})"
        )


def run_sweep(
    plan: SweepPlan,
    out_dir: Path,
    parallel: int | None = None,
    on_row: Callable[[dict[str, Any], int, int], None] | None = None,
    use_ray: bool = True,
    stop_after: int | None = None,
) -> SweepOutcome:
    """Run every run of the plan not yet stored in `out_dir`, store each row as it finishes,
    then write sweep.json. `on_row(row, done, total)` is called after each stored row.

    `stop_after` (or the OVERCOMMIT_SWEEP_STOP_AFTER environment variable) stops after that
    many executed runs, raising SweepInterrupted, as an interrupted sweep would.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = load_results(out_dir)
    if len(existing) and "config_hash" in existing:
        others = set(existing["config_hash"]) - {plan.config_hash}
        if others:
            raise SweepError(
                f"{out_dir} holds a sweep of another base config (hash {sorted(others)[0]}, "
                f"this one is {plan.config_hash}); use another --out"
            )
    if stop_after is None and os.environ.get(STOP_AFTER_ENV):
        stop_after = int(os.environ[STOP_AFTER_ENV])
    stored = set(existing["key"]) if len(existing) else set()
    todo = [r for r in plan.runs if r.key not in stored]
    outcome = SweepOutcome(plan, out_dir, existing, skipped=len(plan.runs) - len(todo))
    new_rows: list[dict[str, Any]] = []
    goal_checked = [False]

    def check_goal(rows: Iterable[dict[str, Any]]) -> None:
        if goal_checked[0] or not plan.conditions:
            return
        for row in rows:
            if row.get("status") == "done":
                check_goal_names(plan.conditions, row)
                goal_checked[0] = True
                return

    if len(existing):
        check_goal(r for r in existing.to_dict("records") if r["key"] in _keys(plan))

    def store(run: PlannedRun, fields: dict[str, Any]) -> None:
        if fields.get("status") == "infrastructure":
            outcome.failed.append(f"{run.dir}: {fields.get('error')}")
            outcome.executed += 1
            return
        row = _row(plan, run, fields)
        new_rows.append(row)
        outcome.executed += 1
        frame = pd.DataFrame(new_rows)
        outcome.rows = pd.concat([existing, frame], ignore_index=True) if len(existing) else frame
        write_results(out_dir, outcome.rows)
        if on_row is not None:
            on_row(row, outcome.skipped + outcome.executed, len(plan.runs))
        check_goal([row])

    def stopping() -> bool:
        return stop_after is not None and outcome.executed >= stop_after

    try:
        if use_ray:
            _run_on_ray(plan, todo, out_dir, parallel, store, stopping)
        else:
            for run in todo:
                if stopping():
                    break
                store(run, execute_run(run.scenario, str(out_dir / run.dir)))
    except KeyboardInterrupt:
        _write_report(plan, outcome, "interrupted by SIGINT")
        raise SweepInterrupted(outcome) from None
    if stopping() and outcome.executed < len(todo):
        _write_report(plan, outcome, f"stopped after {stop_after} executed run(s)")
        raise SweepInterrupted(outcome)
    _write_report(plan, outcome, None)
    return outcome


def _write_report(plan: SweepPlan, outcome: SweepOutcome, stopped: str | None) -> None:
    """Write sweep.json: `status` complete, or aborted with the `reason` and the `finished`
    runs' directories (stored so far; the same command resumes the rest)."""
    from overcommit.output import write_json

    outcome.rows = _plan_rows(plan, outcome.rows)
    report = sweep_report(plan, outcome)
    marks: dict[str, Any] = {"status": "complete"}
    if stopped is not None:
        done = list(outcome.rows["dir"]) if len(outcome.rows) else []
        marks = {"status": "aborted", "reason": stopped, "finished": done}
    outcome.report = {"schema": report["schema"], **marks, **report}
    write_json(outcome.out_dir / SWEEP_JSON, outcome.report)


def _keys(plan: SweepPlan) -> set[str]:
    return {r.key for r in plan.runs}


def _plan_rows(plan: SweepPlan, rows: pd.DataFrame) -> pd.DataFrame:
    """This plan's rows (a directory may also hold rows of grid values since removed)."""
    if not len(rows):
        return rows
    order = {r.key: i for i, r in enumerate(plan.runs)}
    mine = rows[rows["key"].isin(order)]
    return mine.iloc[mine["key"].map(order).argsort()].reset_index(drop=True)


def _row(plan: SweepPlan, run: PlannedRun, fields: dict[str, Any]) -> dict[str, Any]:
    sc = run.scenario
    row: dict[str, Any] = {
        "key": run.key,
        "config_hash": plan.config_hash,
        "mechanism": run.mechanism,
        "seed": run.seed,
        "dir": run.dir,
        "status": fields.get("status"),
        "error": fields.get("error"),
        "valid": fields.get("valid"),
        "exit_code": fields.get("exit_code"),
        "hypothesis": fields.get("hypothesis"),
        "wall_seconds": fields.get("wall_seconds"),
        "hosts": len(sc.host_names()),
        "guests": len(sc.guest_specs()),
        "overcommit_actual": round(ratio(sc), 6),
    }
    row.update(run.point)
    row.update({k: v for k, v in fields.items() if k not in row})
    return row


def _one_line(exc: BaseException) -> str:
    """A task's exception as one line: the original error, not Ray's wrapper and traceback."""
    cause = getattr(exc, "cause", None) or exc
    lines = [ln for ln in str(cause).splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}".strip()


class _SweepWorker:
    """A Ray actor that executes the sweep's runs one at a time in its own process.

    Runs go to a pool of these rather than to Ray tasks: stopping a sweep kills its actors,
    which Ray handles cleanly, while force-cancelling a task whose reply is on its way can
    trip a fatal check inside Ray's core worker (the driver then dies instead of exiting 130).
    """

    def run(self, scenario: Scenario, run_dir: str) -> dict[str, Any]:
        return execute_run(scenario, run_dir)


def start_ray(num_cpus: int | None = None) -> bool:
    """Start a quiet local Ray unless one is running; returns whether it was started here.
    The caller's SIGTERM handler is kept (ray.init replaces it)."""
    import signal
    import threading

    import ray

    if ray.is_initialized():
        return False
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    # workers import overcommit from where this process did, installed or not
    here = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    from overcommit.cluster.ray_runtime import quiet_ray

    quiet_ray()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ray.init(
                address="local",
                num_cpus=num_cpus,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
                configure_logging=False,
            )
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return True


def _run_on_ray(
    plan: SweepPlan,
    todo: list[PlannedRun],
    out_dir: Path,
    parallel: int | None,
    store: Callable[[PlannedRun, dict[str, Any]], None],
    stopping: Callable[[], bool],
) -> None:
    import ray

    cpus = os.cpu_count() or 1
    parallel = parallel or cpus
    started = start_ray(num_cpus=max(parallel, cpus)) if todo else False
    workers: list[Any] = []
    try:
        if not todo:
            return
        worker = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_SweepWorker)
        workers = [worker.remote() for _ in range(min(parallel, len(todo)))]
        idle = list(workers)
        queue = list(todo)
        inflight: dict[Any, tuple[PlannedRun, Any]] = {}
        while queue or inflight:
            while queue and idle and not stopping():
                run, actor = queue.pop(0), idle.pop()
                inflight[actor.run.remote(run.scenario, str(out_dir / run.dir))] = (run, actor)
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1)
            run, actor = inflight.pop(ready[0])
            try:
                fields = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:  # its process died: replace it
                fields = {"status": "infrastructure", "error": _one_line(exc)}
                workers.remove(actor)
                actor = worker.remote()
                workers.append(actor)
            except Exception as exc:  # a bug inside the run: reported, not stored
                fields = {"status": "infrastructure", "error": _one_line(exc)}
            idle.append(actor)
            store(run, fields)
            if stopping():
                break
    finally:
        # runs still in flight (Ctrl-C, stop_after) die with their actors; a Ray started
        # here takes them down with it
        if started:
            with contextlib.redirect_stderr(io.StringIO()):
                ray.shutdown()
        else:
            for actor in workers:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)


# ----------------------------------------------------------------------------------------------
# Goal


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _sort_values(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return list(values)


def evaluate_goal(plan: SweepPlan, rows: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Per mechanism and combination of the other axes' values: the best value of the goal
    axis such that it and every value before it (from the safe end) meet the goal in every
    seed, and why the next value fails."""
    axis = plan.axis
    assert axis is not None
    others = [p for p in plan.grid if p != axis]
    values = _sort_values(plan.grid[axis])
    if plan.direction == "min":
        values = values[::-1]  # walk from the safe end: most hosts first
    records = rows.to_dict("records") if len(rows) else []
    by_point: dict[tuple, dict] = {}
    for r in records:
        key = (r["mechanism"], tuple(str(_norm(r.get(p))) for p in plan.grid), int(r["seed"]))
        by_point[key] = r
    import itertools

    answers: dict[str, list[dict[str, Any]]] = {}
    for m in plan.mechanisms:
        entries = []
        for fixed_values in itertools.product(*(plan.grid[p] for p in others)):
            fixed = dict(zip(others, fixed_values))
            best = None
            binding = None
            failures: list[str] = []
            passing = []
            first_fail = None
            for v in values:
                point = {**fixed, axis: v}
                pkey = tuple(str(_norm(point[p])) for p in plan.grid)
                reasons = []
                for s in plan.seeds:
                    r = by_point.get((m, pkey, s))
                    reasons += _failures(plan, r, axis, v, s)
                if not reasons:
                    passing.append(v)
                    if first_fail is None:
                        best = v
                elif first_fail is None:
                    first_fail = v
                    failures = reasons
                    binding = reasons[0]
            entries.append(
                {
                    "fixed": fixed,
                    "best": best,
                    "binding": binding,
                    "failures": failures,
                    "passing": passing,
                }
            )
        answers[m] = entries
    return answers


def _failures(plan: SweepPlan, r: dict | None, axis: str, v: Any, seed: int) -> list[str]:
    where = f"at {axis} {_fmt(v)} (seed {seed})"
    if r is None:
        return [f"no result {where}"]
    if r.get("status") == "preflight":
        return [f"cannot run {where}: {r.get('error')}"]
    if r.get("status") != "done":
        return [f"run failed {where}: {r.get('error')}"]
    if not r.get("valid"):
        return [f"run invalid (an emulator invariant failed) {where}"]
    out = []
    for c in plan.conditions:
        value = r.get(c.name)
        if value is None or _isnan(value) or not c.holds(float(value)):
            out.append(f"{c.name} {_fmt(value)} {_NEGATE[c.op]} {c.value:g} {where}")
    return out


def sweep_report(plan: SweepPlan, outcome: SweepOutcome) -> dict[str, Any]:
    """The content of sweep.json."""
    rows = outcome.rows
    answers = evaluate_goal(plan, rows) if plan.conditions else None
    return {
        "schema": SCHEMA,
        "scenario": plan.base.name,
        "config_hash": plan.config_hash,
        "grid": plan.grid,
        "mechanisms": plan.mechanisms,
        "seeds": plan.seeds,
        "goal": plan.goal,
        "axis": plan.axis,
        "direction": plan.direction,
        "runs": {
            "planned": len(plan.runs),
            "executed": outcome.executed,
            "skipped": outcome.skipped,
            "failed": len(outcome.failed),
            "stored": len(rows),
        },
        "failed": outcome.failed,
        "keys": [r.key for r in plan.runs],
        "answers": answers,
    }


def answer_lines(report: dict[str, Any]) -> list[str]:
    """The goal's answers as one line each, for the console."""
    if not report.get("answers"):
        return []
    axis = report["axis"]
    word = "fewest" if report["direction"] == "min" else "largest"
    if axis != "hosts.count":
        word = "smallest" if report["direction"] == "min" else "largest"
    lines = []
    for m, entries in report["answers"].items():
        for e in entries:
            fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in e["fixed"].items())
            head = f"{m}" + (f" [{fixed}]" if fixed else "")
            if e["best"] is None:
                lines.append(f"{head}: no {axis} value meets the goal — {e['binding']}")
            elif e["binding"] is None:
                lines.append(
                    f"{head}: {word} {axis} meeting the goal: {_fmt(e['best'])} "
                    "(every value met it; extend the grid)"
                )
            else:
                lines.append(
                    f"{head}: {word} {axis} meeting the goal: {_fmt(e['best'])} — next step "
                    f"fails: {e['binding']}"
                )
    return lines
