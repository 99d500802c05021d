"""Command-line interface: `overcommit run`, `validate`, `compare`, `drill`, `sweep`, `report`.

Exit status: 0 valid (hypothesis met or none), 1 valid but hypothesis not met, 3 invalid
(an emulator invariant failed), 2 bad input or failed infrastructure. Bad input never shows a
traceback: every problem is one located line on stderr.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from overcommit.config import ConfigError, Scenario, apply_overrides, load_scenario
from overcommit.findings_cli import register as register_findings
from overcommit.gameday_cli import register as register_gameday
from overcommit.report_text import duration
from overcommit.tables import SUMMARY_COLUMNS, summary_table  # noqa: F401 (tests import them here)


class _Command(typer.core.TyperCommand):
    """A command whose help reads like an ordinary Unix tool's: arguments by their metavar
    alone (`overcommit run [OPTIONS] CONFIG`, not `{config}`, and no `<path>` type beside it);
    flags as `-q, --quiet` (click's plain help, below)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                name = param.metavar or param.name.upper()
                if not param.required:
                    name = f"[{name}]"
                param.display_type_rich = lambda ctx=None: None  # type: ignore[method-assign]
                param.get_usage_pieces = lambda ctx, n=name: [n]  # type: ignore[method-assign]


app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Emulate a memory-overcommitted cluster and compare overcommit mechanisms.",
    # click's plain help: flags read `-q, --quiet`, values by their metavar (`--seed N`)
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)
err = Console(stderr=True)
# wide enough for the summary table when the output is a file or a pipe
out = Console(width=None if sys.stdout.isatty() else 150)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _load(config: Path, overrides: dict[str, Any]) -> Scenario:
    try:
        sc = load_scenario(config)
        if overrides:
            sc = apply_overrides(sc, overrides)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    return sc


def _sets(values: list[str] | None) -> dict[str, Any]:
    """`--set PATH=VALUE` options as overrides (VALUE read as YAML: 10s, false, 2GiB)."""
    out_: dict[str, Any] = {}
    for item in values or []:
        path, eq, value = item.partition("=")
        if not eq or not path.strip():
            raise _fail(f"--set {item!r}: expected PATH=VALUE, like guests.0.cooperative=false")
        out_[path.strip()] = value.strip()
    return out_


_SET_HELP = "Override a config value: PATH=VALUE (e.g. guests.0.cooperative=false); repeatable."


@app.command(cls=_Command)
def validate(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Scenario YAML file."),
) -> None:
    """Check a scenario (or a findings study) file without running it."""
    from overcommit.findings import StudyError, is_study, load_study, validate_study

    if is_study(config):
        try:
            st = load_study(config)
            n = validate_study(st)
        except (StudyError, ConfigError) as exc:
            raise _fail(str(exc).splitlines()[0]) from None
        what = f"{n} scenario(s) checked" if n else "not yet answered"
        out.print(f"{config}: study {st.id}: ok — {what}", highlight=False)
        return
    sc = _load(config, {})
    from overcommit.cluster.engine import PreflightError, estimate_store_bytes, preflight

    try:
        est = preflight(sc)
    except PreflightError as exc:
        raise _fail(str(exc)) from None
    need, _ = estimate_store_bytes(sc)
    out.print(
        f"{config}: ok — {len(sc.host_names())} host(s), {len(sc.guest_specs())} guest(s), "
        f"mechanism {sc.mechanism}, {sc.duration:g}s emulated, stores up to "
        f"{need / 2**20:.0f} MiB; {est.line()}",
        highlight=False,
    )


@app.command(cls=_Command)
def run(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Scenario YAML file."),
    seed: int | None = typer.Option(None, metavar="N", help="Override the scenario's seed."),
    mechanism: str | None = typer.Option(
        None, metavar="M", help="Override the mechanism (e.g. frontswap)."
    ),
    duration: str | None = typer.Option(
        None, metavar="D", help="Override the emulated duration (e.g. 60s)."
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Run directory (default: runs/<name>-<mechanism>-s<seed>-<time>).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    runtime: str | None = typer.Option(
        None,
        metavar="ray|inline",
        help="Override runtime.kind: ray (default) or inline (one process).",
    ),
    guests: str | None = typer.Option(
        None,
        metavar="actors|packed",
        help="Override runtime.guests on Ray: actors (one per guest) or packed.",
    ),
    hosts_per_actor: str | None = typer.Option(
        None,
        "--hosts-per-actor",
        metavar="N|auto",
        help="Override runtime.hosts_per_actor: with packed guests, N hosts share one Ray "
        "actor process (fewer processes, less memory; same results); auto (the default): as "
        "many processes as the Ray cluster has CPUs.",
    ),
    address: str | None = typer.Option(
        None,
        metavar="ADDR",
        help="Join an existing Ray cluster (auto, ray://HOST:PORT or HOST:PORT; also "
        "RAY_ADDRESS) instead of starting a local one.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's own logs."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
    set_: list[str] | None = typer.Option(None, "--set", metavar="PATH=VALUE", help=_SET_HELP),
    replay: Path | None = typer.Option(
        None,
        metavar="RUN/events.jsonl",
        help="An events.jsonl of an earlier run: its faults (chaos-drawn or detected) replace "
        "the scenario's events and chaos, reproducing that run.",
    ),
) -> None:
    """Run a scenario and write its run directory (with report.html)."""
    overrides: dict[str, Any] = _sets(set_)
    if runtime is not None:
        overrides["runtime.kind"] = runtime
    if guests is not None:
        overrides["runtime.guests"] = guests
    if hosts_per_actor is not None:
        overrides["runtime.hosts_per_actor"] = hosts_per_actor
    if address is not None:
        overrides["runtime.address"] = address
    if seed is not None:
        overrides["seed"] = seed
    if mechanism is not None:
        overrides["mechanism"] = mechanism
    if duration is not None:
        overrides["duration"] = duration
    sc = _load(config, overrides)
    if replay is not None:
        sc = _replayed(sc, replay)
    if out_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = Path("runs") / f"{sc.name}-{sc.mechanism}-s{sc.seed}-{stamp}"
    result = _execute(sc, out_dir, quiet, verbose)
    if not quiet:
        print_summary(result.summary)
    if not no_report:
        _write_report(out_dir)
    out.print(f"run directory: {out_dir}", highlight=False)
    raise typer.Exit(result.exit_code)


def _replayed(sc: Scenario, events_path: Path) -> Scenario:
    import json

    from overcommit.drill import with_replay

    try:
        lines = events_path.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return with_replay(sc, events)
    except OSError as exc:
        raise _fail(f"--replay {events_path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(f"--replay {events_path}: not an overcommit event log ({exc})") from None
    except ConfigError as exc:
        raise _fail(f"--replay {events_path}: {exc}") from None


def _execute(sc: Scenario, out_dir: Path, quiet: bool, verbose: bool = False) -> Any:
    from overcommit.cluster.engine import PreflightError, preflight, run_scenario
    from overcommit.cluster.runtime import InfrastructureError
    from overcommit.stores.launcher import RedisUnavailable, install_signal_handlers

    install_signal_handlers()
    try:
        estimate = preflight(sc)
    except PreflightError as exc:
        raise _fail(str(exc)) from None
    if not quiet:
        err.print(estimate.line(), markup=False, highlight=False, soft_wrap=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[emu]} emulated"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[slow]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=True,
    )
    import time

    t0 = time.perf_counter()
    with progress:
        task = progress.add_task(
            f"{sc.name} · {sc.mechanism}", total=sc.duration, emu="0s", rate="", slow=""
        )

        def on_progress(t: float, total: float, info: dict) -> None:
            wall = max(1e-9, time.perf_counter() - t0)
            slowest = info.get("slowest_host")
            progress.update(
                task,
                completed=t,
                emu=f"{t:,.1f}s/{total:,.0f}s",
                rate=f"{info['epochs'] / wall:,.0f} epochs/s",
                slow=f"slowest host {slowest[0]} ({slowest[1] * 1e3:.0f} ms/window)"
                if slowest and slowest[0]
                else "",
            )

        try:
            return run_scenario(sc, out_dir=out_dir, progress=on_progress, verbose=verbose)
        except PreflightError as exc:
            raise _fail(str(exc)) from None
        except (InfrastructureError, RedisUnavailable) as exc:
            _fail(f"infrastructure failure, run stopped: {exc}")
            raise typer.Exit(_aborted(exc, 2)) from None
        except KeyboardInterrupt as exc:
            err.print("interrupted; stores stopped")
            raise typer.Exit(_aborted(exc, 130)) from None
        except SystemExit as exc:  # SIGTERM
            raise typer.Exit(_aborted(exc, exc.code if isinstance(exc.code, int) else 1)) from None


def _aborted(exc: BaseException, code: int) -> int:
    """Name the run directory an aborted run wrote (status `aborted`); returns `code`."""
    partial = getattr(exc, "partial", None)
    if partial is not None and partial.out_dir is not None:
        out.print(f"run directory (aborted): {partial.out_dir}", highlight=False)
    return code


def print_summary(summary: dict) -> None:
    """The run table, then the verdict, hypothesis and failed checks' evidence."""
    table = summary_table(summary)
    out.print(table)
    verdict = "[green]valid[/]" if summary["valid"] else "[red]INVALID[/]"
    failed = [k for k, v in summary["checks"].items() if not v["ok"]]
    line = f"verdict: {verdict}"
    if failed:
        line += " — failed checks: " + ", ".join(failed)
    hyp = summary["hypothesis"]
    if hyp is not None:
        color = "green" if hyp["status"] == "met" else "yellow"
        line += f" · hypothesis: [{color}]{hyp['status']}[/]"
    out.print(line)
    for k in failed:
        for ev in summary["checks"][k]["evidence"][:3]:
            out.print(f"  {k}: {ev}", markup=False, highlight=False)


@app.command(cls=_Command, short_help="Run a scenario under several mechanisms and compare them.")
def compare(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Scenario YAML file."),
    mechanisms: str | None = typer.Option(
        None,
        metavar="a,b+c,...",
        help="Comma-separated mechanisms (combinations with '+'); default: every mechanism "
        "and the KVM and Xen combinations.",
    ),
    seeds: int = typer.Option(
        1, metavar="N", min=1, help="Seeds per mechanism (scenario seed, +1, ...)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", metavar="DIR", help="Output directory (default: runs/compare-<name>-<time>)."
    ),
    duration: str | None = typer.Option(None, metavar="D", help="Override the emulated duration."),
    runtime: str | None = typer.Option(
        None, metavar="ray|inline", help="Override runtime.kind (inline or ray)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
) -> None:
    """Run a scenario once per mechanism and seed (same accesses for each) and compare."""
    from overcommit.compare import exit_code, parse_mechanisms, plan_runs

    overrides: dict[str, Any] = {}
    if duration is not None:
        overrides["duration"] = duration
    if runtime is not None:
        overrides["runtime.kind"] = runtime
    sc = _load(config, overrides)
    try:
        runs = plan_runs(sc, parse_mechanisms(mechanisms), seeds)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if out_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = Path("runs") / f"compare-{sc.name}-{stamp}"
    report = _execute_compare(runs, out_dir, quiet)
    if not quiet:
        print_compare(report)
    if not no_report:
        _write_report(out_dir)
    out.print(f"compare directory: {out_dir}", highlight=False)
    raise typer.Exit(exit_code(report))


def _runs_progress(quiet: bool) -> Progress:
    """The progress bar over a command's runs (on stderr, only on a terminal)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TextColumn("{task.fields[now]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=True,
    )


def _execute_runs(what: str, runs: list, quiet: bool, execute: Any) -> dict:
    """Run `execute(on_run)` over (mechanism, scenario) runs with a progress bar; bad input,
    lost infrastructure and Ctrl-C end the command with one line."""
    from overcommit.cluster.engine import PreflightError
    from overcommit.cluster.runtime import InfrastructureError
    from overcommit.stores.launcher import RedisUnavailable, install_signal_handlers

    install_signal_handlers()
    progress = _runs_progress(quiet)
    with progress:
        first = f"{runs[0][0]} s{runs[0][1].seed}" if runs else ""
        task = progress.add_task(what, total=len(runs), now=first)

        def on_run(i: int, _: Any) -> None:
            nxt = runs[i + 1] if i + 1 < len(runs) else None
            label = f"next: {nxt[0]} s{nxt[1].seed}" if nxt else ""
            progress.update(task, completed=i + 1, now=label)

        try:
            return execute(on_run)
        except PreflightError as exc:
            raise _fail(str(exc)) from None
        except (InfrastructureError, RedisUnavailable) as exc:
            raise _fail(f"infrastructure failure, {what} stopped: {exc}") from None
        except KeyboardInterrupt:
            err.print("interrupted; stores stopped; finished runs are in their directories")
            raise typer.Exit(130) from None


def _execute_compare(runs: list, out_dir: Path, quiet: bool) -> dict:
    from overcommit.compare import run_compare

    return _execute_runs(
        "compare", runs, quiet, lambda on_run: run_compare(runs, out_dir, on_run=on_run)
    )


def print_compare(report: dict) -> None:
    """One row per mechanism; with several seeds, mean ± 95% confidence half-width."""
    seeds = report["seeds"]
    table = Table(
        title=f"{report['scenario']} · {len(seeds)} seed(s) "
        + ("(mean ± 95% CI)" if len(seeds) > 1 else f"(seed {seeds[0]})" if seeds else "")
    )
    cols = (
        ("mechanism", None, None),
        ("progress", "progress", lambda v: f"{v:.3f}"),
        ("stall", "stall_seconds", duration),
        ("p99 fault", "fault_latency_p99", duration),
        ("disk pages", "disk_pages", lambda v: f"{v:,.0f}"),
        ("double swaps", "double_swaps", lambda v: f"{v:,.0f}"),
        ("puts rejected", "put_failures", lambda v: f"{v:,.0f}"),
        ("balloon lag", "balloon_lag_seconds", duration),
        ("OOM kills", "oom_kills", lambda v: f"{v:,.1f}" if v % 1 else f"{v:,.0f}"),
        ("verdict", None, None),
    )
    for name, _, _ in cols:
        table.add_column(
            name,
            justify="left" if name in ("mechanism", "verdict") else "right",
            no_wrap=True,  # names and headers stay whole, readable and greppable
            min_width=len(name),
        )
    for mech, m in report["mechanisms"].items():
        row = [mech]
        for _, key, fmt in cols[1:-1]:
            mean, half = m["mean"][key], m["ci95"][key]
            cell = fmt(mean)
            if half is not None:
                cell += f" ± {fmt(half)}"
            row.append(cell)
        color = {"valid": "green", "INVALID": "red"}.get(m["verdict"], "yellow")
        row.append(f"[{color}]{m['verdict']}[/]")
        table.add_row(*row)
    wide = out if out.is_terminal else Console(width=200)  # files and pipes: never cropped
    wide.print(table)


def _write_report(directory: Path) -> Path | None:
    """Write report.html; a failure is a warning, never the run's exit status."""
    from overcommit.report import write_report

    try:
        return write_report(directory)
    except Exception as exc:  # the run's results are written; the report is a view of them
        err.print(
            f"warning: report.html not written: {type(exc).__name__}: {exc}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return None


@app.command(cls=_Command, short_help="Run a grid of values x mechanisms x seeds; answer a goal.")
def sweep(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Scenario YAML file."),
    grid: list[str] | None = typer.Option(
        None,
        "--grid",
        metavar="PATH=V1,V2,...",
        help="PATH=V1,V2,... or PATH=FROM:TO:STEP (inclusive); PATH a config path (hosts.count, "
        "guests.0.count, ha.tolerate) or overcommit. Repeat for more axes.",
    ),
    mechanisms: str | None = typer.Option(
        None,
        metavar="a,b+c,...",
        help="Comma-separated mechanisms (combinations with '+'); default: the scenario's.",
    ),
    seeds: int = typer.Option(
        1, metavar="N", min=1, help="Seeds per point and mechanism (seed, +1, ...)."
    ),
    parallel: int | None = typer.Option(
        None,
        metavar="P",
        min=1,
        help="Runs at a time, on as many Ray actors (default: the number of CPUs).",
    ),
    goal: str | None = typer.Option(
        None,
        metavar="'COND and COND'",
        help="Conditions on the totals, e.g. 'restart_failures == 0 and progress >= 0.8'.",
    ),
    goal_direction: str | None = typer.Option(
        None,
        "--goal-direction",
        metavar="max|min",
        help="max: the largest axis value meeting the goal; min: the smallest (default min "
        "for hosts.count and hosts.ram, else max).",
    ),
    duration: str | None = typer.Option(None, metavar="D", help="Override the emulated duration."),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Sweep directory (default: runs/sweep-<name>-<config hash>); finished runs found "
        "there are skipped.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
) -> None:
    """Run a grid of scenario values x mechanisms x seeds in parallel; resumable; answers a goal."""
    from overcommit.capacity import SweepError, parse_grid, plan_sweep
    from overcommit.compare import parse_mechanisms

    overrides: dict[str, Any] = {}
    if duration is not None:
        overrides["duration"] = duration
    sc = _load(config, overrides)
    if not grid:
        raise _fail("a sweep needs at least one --grid PATH=V1,V2,... (or PATH=A:B:STEP)")
    axes: dict[str, list[Any]] = {}
    try:
        for spec in grid:
            path, values = parse_grid(spec)
            if path in axes:
                raise SweepError(f"--grid {path} is given twice; give each path once")
            axes[path] = values
        names = parse_mechanisms(mechanisms) if mechanisms is not None else None
        plan = plan_sweep(sc, axes, names, seeds, goal, goal_direction)
    except SweepError as exc:
        raise _fail(str(exc)) from None
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if out_dir is None:
        out_dir = Path("runs") / f"sweep-{sc.name}-{plan.config_hash[:8]}"
    outcome = _execute_sweep(plan, out_dir, parallel, quiet)
    print_sweep(outcome.report)
    if not no_report:
        _write_report(out_dir)
    out.print(f"sweep directory: {out_dir}", highlight=False)
    raise typer.Exit(outcome.exit_code)


def _execute_sweep(plan: Any, out_dir: Path, parallel: int | None, quiet: bool) -> Any:
    from overcommit.capacity import SweepError, SweepInterrupted, run_sweep
    from overcommit.stores.launcher import install_signal_handlers

    install_signal_handlers()
    progress = _runs_progress(quiet)
    with progress:
        task = progress.add_task(f"sweep {plan.base.name}", total=len(plan.runs), now="")

        def on_row(row: dict, done: int, total: int) -> None:
            progress.update(task, completed=done, now=f"last: {row['dir'].split('/')[-1]}")

        try:
            return run_sweep(plan, out_dir, parallel=parallel, on_row=on_row)
        except SweepError as exc:
            raise _fail(str(exc)) from None
        except SweepInterrupted as exc:
            o = exc.outcome
            err.print(
                f"interrupted: {o.executed} executed, {o.skipped} skipped, "
                f"{len(o.plan.runs) - o.executed - o.skipped} left; finished runs are stored in "
                f"{out_dir / 'results.parquet'} and listed in {out_dir / 'sweep.json'}; "
                "run the same command again to resume",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None


def print_sweep(report: dict) -> None:
    """Run counts, failures and the goal's answers, one line each."""
    from overcommit.capacity import answer_lines

    r = report["runs"]
    out.print(
        f"runs: {r['planned']} planned, {r['executed']} executed, {r['skipped']} skipped, "
        f"{r['failed']} failed",
        highlight=False,
    )
    for line in report["failed"][:5]:
        err.print(f"failed: {line}", markup=False, highlight=False, soft_wrap=True)
    if report.get("goal"):
        out.print(f"goal: {report['goal']}", markup=False, highlight=False)
    for line in answer_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command(
    cls=_Command, short_help="Write report.html for a run, compare, drill or sweep directory."
)
def report(
    directory: Path = typer.Argument(
        ..., metavar="DIR", help="A run, compare, drill or sweep directory."
    ),
) -> None:
    """Write report.html (plots and tables, self-contained) for a run, compare or sweep."""
    from overcommit.report import ReportError, write_report

    try:
        path = write_report(directory)
    except ReportError as exc:
        raise _fail(str(exc)) from None
    out.print(f"report: {path}", highlight=False)


@app.command(cls=_Command, short_help="Fail hosts under each mechanism; recovery side by side.")
def drill(
    config: Path = typer.Argument(
        ..., metavar="CONFIG", help="Scenario YAML file (with fault events or chaos)."
    ),
    mechanisms: str | None = typer.Option(
        None,
        metavar="a,b+c,...",
        help="Comma-separated mechanisms (combinations with '+'); default: none, frontswap, "
        "host-swap, balloon.",
    ),
    seeds: int = typer.Option(
        1, metavar="N", min=1, help="Seeds per mechanism (scenario seed, +1, ...)."
    ),
    real_faults: bool = typer.Option(
        False,
        "--real-faults",
        help="Run each on a local multi-node Ray cluster and remove a host's real Ray node "
        "at its fail_host event; the emulator detects the death.",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", metavar="DIR", help="Output directory (default: runs/drill-<name>-<time>)."
    ),
    duration: str | None = typer.Option(None, metavar="D", help="Override the emulated duration."),
    runtime: str | None = typer.Option(
        None, metavar="ray|inline", help="Override runtime.kind (inline or ray)."
    ),
    set_: list[str] | None = typer.Option(None, "--set", metavar="PATH=VALUE", help=_SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
    junit: Path | None = typer.Option(
        None,
        "--junit",
        metavar="FILE",
        help="Also write JUnit XML: a test case per mechanism and fault, failed when an "
        "invariant or the hypothesis fails.",
    ),
) -> None:
    """Failover drill: the scenario's faults under each mechanism, recovery side by side."""
    from overcommit.compare import exit_code
    from overcommit.drill import DEFAULT_MECHANISMS, plan_drill

    overrides: dict[str, Any] = _sets(set_)
    if duration is not None:
        overrides["duration"] = duration
    if runtime is not None:
        overrides["runtime.kind"] = runtime
    sc = _load(config, overrides)
    if real_faults and runtime == "inline":
        raise _fail("--real-faults kills Ray nodes: it needs the ray runtime, not inline")
    names = DEFAULT_MECHANISMS if mechanisms is None else None
    try:
        from overcommit.compare import parse_mechanisms

        runs = plan_drill(sc, list(names or parse_mechanisms(mechanisms)), seeds, real_faults)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if out_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = Path("runs") / f"drill-{sc.name}-{stamp}"
    report = _execute_drill(runs, out_dir, quiet, real_faults)
    if junit is not None:
        from overcommit.drill import write_junit

        write_junit(report, junit)
    if not quiet:
        print_drill(report)
    if not no_report:
        _write_report(out_dir)
    out.print(f"drill directory: {out_dir}", highlight=False)
    raise typer.Exit(exit_code(report))


def _execute_drill(runs: list, out_dir: Path, quiet: bool, real: bool) -> dict:
    from overcommit.drill import run_drill

    return _execute_runs(
        "drill", runs, quiet, lambda on_run: run_drill(runs, out_dir, real=real, on_run=on_run)
    )


def print_drill(report: dict) -> None:
    """One row per mechanism (means over seeds), then every failed restart's reason."""
    table = Table(
        title=f"drill {report['scenario']} · seeds {', '.join(map(str, report['seeds']))}"
        + (" · real faults" if report["real_faults"] else "")
    )

    def num(v: Any, fmt: str) -> str:
        return "never" if v is None else format(v, fmt)

    cols = (
        ("mechanism", None),
        (
            "recovery",
            lambda m: (
                num(m["recovery_seconds"], ".1f")
                + ("s" if m["recovery_seconds"] is not None else "")
            ),
        ),
        ("restart failures", lambda m: num(m["restart_failures"], ",.0f")),
        ("reclaim needed", lambda m: f"{m['reclaim_needed_bytes'] / 2**20:,.0f} MiB"),
        ("reclaimed", lambda m: f"{m['reclaimed_bytes'] / 2**20:,.0f} MiB"),
        ("reclaim time", lambda m: f"{m['reclaim_seconds']:.1f}s"),
        ("survivors' progress", lambda m: num(m["survivor_progress"], ".3f")),
        ("double swaps", lambda m: f"{m['double_swaps']:,.0f}"),
        ("verdict", None),
        ("hypothesis", None),
    )
    for name, _ in cols:
        table.add_column(
            name,
            justify="left" if name in ("mechanism", "verdict", "hypothesis") else "right",
            no_wrap=True,
            min_width=len(name),
        )
    reasons = []
    for mech, m in report["mechanisms"].items():
        row = [mech] + [fmt(m["mean"]) for _, fmt in cols[1:-2]]
        color = {"valid": "green", "INVALID": "red"}.get(m["verdict"], "yellow")
        row.append(f"[{color}]{'INVALID' if m['verdict'] == 'INVALID' else 'valid'}[/]")
        hyps = {r["hypothesis"] for r in m["runs"]}
        row.append("not met" if "not met" in hyps else "met" if "met" in hyps else "-")
        table.add_row(*row)
        for r in m["runs"]:
            reasons += [f"{mech} s{r['seed']}: {x}" for x in r["restart_failure_reasons"]]
    wide = out if out.is_terminal else Console(width=200)
    wide.print(table)
    for line in reasons:
        out.print(f"restart failed: {line}", markup=False, highlight=False, soft_wrap=True)


# -- findings (the command lives in overcommit/findings_cli.py) -----------------------------
register_findings(app, {"command_class": _Command, "fail": _fail, "out": out, "err": err})


# -- game days: up, inject, status, down (the commands live in overcommit/gameday_cli.py) ------
register_gameday(
    app,
    {
        "load": _load,
        "print_summary": print_summary,
        "write_report": _write_report,
        "command_class": _Command,
    },
)


def main() -> None:
    """Console entry point."""
    import os
    import traceback

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug in overcommit itself, not bad input
        if os.environ.get("OVERCOMMIT_DEBUG"):
            traceback.print_exc()
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (a bug in overcommit; "
            "set OVERCOMMIT_DEBUG=1 for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
