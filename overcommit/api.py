"""The Python API for notebooks: `overcommit.run`, `overcommit.compare`, `overcommit.sweep`.

`import overcommit` stays fast: these functions are imported on first use (see
`overcommit/__init__.py`). A config is a path to a YAML file, YAML text, or a `Scenario`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from overcommit.config import Scenario
from overcommit.studies import load


@dataclass
class Result:
    """One run: `summary` (summary.json as a dict), `timeseries` (guests, one row per guest
    and epoch), `hosts` (one row per host and epoch), `events` (the event log as a DataFrame),
    `out_dir` (where it was written, or None)."""

    summary: dict
    timeseries: pd.DataFrame
    hosts: pd.DataFrame
    events: pd.DataFrame
    out_dir: Path | None = None

    @property
    def totals(self) -> dict:
        """summary["totals"]."""
        return self.summary["totals"]

    @property
    def valid(self) -> bool:
        """Whether every emulator invariant held."""
        return bool(self.summary["valid"])

    @property
    def exit_code(self) -> int:
        """What `overcommit run` would exit with: 0, 1 (hypothesis not met) or 3 (invalid)."""
        if not self.valid:
            return 3
        hyp = self.summary["hypothesis"]
        return 1 if hyp is not None and hyp["status"] == "not met" else 0

    def report(self) -> Path:
        """Write report.html into the run directory (the run needs an out_dir)."""
        if self.out_dir is None:
            raise ValueError("this run was not written to a directory; pass out_dir= to run()")
        from overcommit.report import write_report

        return write_report(self.out_dir)


def run(
    config: str | os.PathLike[str] | Scenario,
    *,
    seed: int | None = None,
    mechanism: str | None = None,
    runtime: str | None = None,
    duration: str | float | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Result:
    """Run a scenario and return its Result. `runtime` is `inline` or `ray` (default: the
    scenario's); `out_dir` also writes the run directory."""
    from overcommit.cluster.engine import run_scenario

    extra = dict(overrides or {})
    for path, value in (
        ("seed", seed),
        ("mechanism", mechanism),
        ("runtime.kind", runtime),
        ("duration", duration),
    ):
        if value is not None:
            extra[path] = value
    sc = load(config, extra)
    res = run_scenario(sc, out_dir=None if out_dir is None else Path(out_dir))
    return Result(
        summary=res.summary,
        timeseries=res.guests,
        hosts=res.hosts,
        events=pd.DataFrame(res.events),
        out_dir=res.out_dir,
    )


def compare(
    config: str | os.PathLike[str] | Scenario,
    mechanisms: list[str] | str | None = None,
    *,
    seeds: int = 1,
    out_dir: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict:
    """Run the scenario once per mechanism and seed; returns compare.json's content
    (written, with every run's directory, under `out_dir`, default a new temporary directory)."""
    from overcommit.compare import compare_config

    return compare_config(config, mechanisms, seeds=seeds, out_dir=out_dir, overrides=overrides)


def sweep(
    config: str | os.PathLike[str] | Scenario,
    grid: dict[str, list[Any] | str],
    *,
    mechanisms: list[str] | str | None = None,
    seeds: int = 1,
    goal: str | None = None,
    parallel: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    use_ray: bool = True,
) -> pd.DataFrame:
    """Run a capacity sweep; returns one row per run (the rows of results.parquet for this
    grid). `grid` maps a path to a list of values or to the text of `--grid` (`"1:4:1"`,
    `"1,2,4"`). sweep.json's content is in the frame's `attrs["sweep"]`. Runs go to `out_dir`
    (default a new temporary directory); an existing sweep directory is resumed."""
    from overcommit.capacity import parse_grid, plan_sweep, run_sweep
    from overcommit.compare import parse_mechanisms

    sc = load(config, overrides)
    axes: dict[str, list[Any]] = {}
    for path, values in grid.items():
        axes[path] = parse_grid(f"{path}={values}")[1] if isinstance(values, str) else values
    if isinstance(mechanisms, str):
        mechanisms = parse_mechanisms(mechanisms)
    plan = plan_sweep(sc, axes, mechanisms, seeds, goal)
    d = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="overcommit-sw-"))
    outcome = run_sweep(plan, d, parallel=parallel, use_ray=use_ray)
    if outcome.failed:
        raise RuntimeError(
            f"{len(outcome.failed)} run(s) of the sweep failed (re-run to retry them); "
            f"first: {outcome.failed[0]}"
        )
    df = outcome.rows.copy()
    df.attrs["sweep"] = outcome.report
    df.attrs["dir"] = str(d)
    return df
