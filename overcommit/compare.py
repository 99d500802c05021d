"""`overcommit compare`: one scenario under several mechanisms and seeds, side by side.

Every run uses the same scenario with only `mechanism` (and `seed`) overridden, so each
mechanism sees the same accesses for a given seed (common random numbers: the workload's touch
sequence does not depend on the mechanism). Each run writes its own run directory under the
output directory; `compare.json` gathers the figures of every run and, per mechanism, their
mean and (with several seeds) a 95% confidence interval (Student's t).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overcommit.config import MECHANISMS, STANDARD_COMBINATIONS, Scenario, apply_overrides
from overcommit.studies import load

SCHEMA = "overcommit.compare/1"

#: Mechanisms `compare` runs when none are named: each mechanism alone, then the combinations
#: real systems use (KVM, Xen with self-ballooning and with cleancache, VMware).
DEFAULT_MECHANISMS: tuple[str, ...] = (*MECHANISMS, *STANDARD_COMBINATIONS)

#: The figures compared, in table order: (key in compare.json, how it is computed).
FIGURES: tuple[str, ...] = (
    "progress",
    "stall_seconds",
    "fault_latency_p99",
    "disk_pages",
    "double_swaps",
    "put_failures",
    "balloon_lag_seconds",
    "oom_kills",
)

# two-sided 95% Student t critical values by degrees of freedom (1..30); 1.96 beyond
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(df: int) -> float:
    """The two-sided 95% critical value of Student's t with `df` degrees of freedom."""
    if df <= 0:
        return float("nan")
    return _T95[df - 1] if df <= len(_T95) else 1.96


def figures(summary: dict) -> dict[str, float]:
    """The compared figures of one run's summary."""
    t = summary["totals"]
    return {
        "progress": t["progress"],
        "stall_seconds": t["stall_seconds"],
        "fault_latency_p99": t["fault_latency_p99"],
        "disk_pages": t["disk_reads"] + t["disk_writes"] + t["file_reads"] + t["file_writes"],
        "double_swaps": t["double_swaps"],
        "put_failures": t["frontswap_put_failures"],
        "balloon_lag_seconds": t["balloon_lag_seconds"],
        "oom_kills": t["guest_oom_kills"] + t["host_oom_kills"],
    }


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% confidence interval (None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, t95(n - 1) * math.sqrt(var / n)


@dataclass
class CompareRun:
    mechanism: str
    seed: int
    out_dir: Path
    valid: bool = False
    exit_code: int = 0
    figures: dict[str, float] = field(default_factory=dict)
    hypothesis: str | None = None


def parse_mechanisms(text: str | None) -> list[str]:
    """`a,b+c` -> ["a", "b+c"] (spaces ignored); the default list when empty."""
    if text is None or not text.strip():
        return list(DEFAULT_MECHANISMS)
    names = ["".join(p.split()) for p in text.split(",")]
    return [n for n in names if n]


def plan_runs(base: Scenario, mechanisms: list[str], seeds: int) -> list[tuple[str, Scenario]]:
    """Validated scenarios, one per (mechanism, seed), in mechanism-major order. A bad
    mechanism name raises ConfigError like any bad override."""
    out = []
    for m in mechanisms:
        for i in range(seeds):
            out.append((m, apply_overrides(base, {"mechanism": m, "seed": base.seed + i})))
    return out


def run_compare(
    runs: list[tuple[str, Scenario]],
    out_dir: Path,
    on_run: Callable[[int, CompareRun], None] | None = None,
    run: Callable[..., Any] | None = None,
) -> dict:
    """Run every scenario, write each run directory and `compare.json`; returns its content."""
    from overcommit.cluster.engine import run_scenario, study_status
    from overcommit.cluster.runtime import InfrastructureError
    from overcommit.output import write_json

    run = run or run_scenario
    done: list[CompareRun] = []
    for i, (mech, sc) in enumerate(runs):
        cr = CompareRun(mech, sc.seed, out_dir / f"{mech}-s{sc.seed}")
        try:
            result = run(sc, out_dir=cr.out_dir)
        except (InfrastructureError, KeyboardInterrupt, SystemExit) as exc:  # keep what is done
            report = summarise(runs[0][1], done)
            write_json(out_dir / "compare.json", study_status(report, exc, cr.out_dir))
            raise
        cr.valid = result.valid
        cr.exit_code = result.exit_code
        cr.figures = figures(result.summary)
        hyp = result.summary["hypothesis"]
        cr.hypothesis = None if hyp is None else hyp["status"]
        done.append(cr)
        if on_run is not None:
            on_run(i, cr)
    report = study_status(summarise(runs[0][1] if runs else None, done), None)
    write_json(out_dir / "compare.json", report)
    return report


def summarise(scenario: Scenario | None, done: list[CompareRun]) -> dict:
    """The content of compare.json."""
    mechanisms: dict[str, dict] = {}
    for cr in done:
        m = mechanisms.setdefault(cr.mechanism, {"runs": []})
        m["runs"].append(
            {
                "seed": cr.seed,
                "dir": str(cr.out_dir),
                "valid": cr.valid,
                "exit_code": cr.exit_code,
                "hypothesis": cr.hypothesis,
                **cr.figures,
            }
        )
    for m in mechanisms.values():
        runs = m["runs"]
        m["mean"] = {}
        m["ci95"] = {}
        for f in FIGURES:
            mean, half = mean_ci([float(r[f]) for r in runs])
            m["mean"][f] = mean
            m["ci95"][f] = half
        m["valid"] = all(r["valid"] for r in runs)
        m["verdict"] = verdict(runs)
    return {
        "schema": SCHEMA,
        "scenario": None if scenario is None else scenario.name,
        "seeds": sorted({cr.seed for cr in done}),
        "figures": list(FIGURES),
        "mechanisms": mechanisms,
    }


def verdict(runs: list[dict]) -> str:
    """`valid`, `hypothesis not met` or `INVALID` over a mechanism's runs."""
    if not all(r["valid"] for r in runs):
        return "INVALID"
    if any(r["hypothesis"] == "not met" for r in runs):
        return "hypothesis not met"
    return "valid"


def exit_code(report: dict) -> int:
    """3 if any run was invalid, 1 if any hypothesis was not met, else 0."""
    verdicts = [m["verdict"] for m in report["mechanisms"].values()]
    if "INVALID" in verdicts:
        return 3
    if "hypothesis not met" in verdicts:
        return 1
    return 0


def compare_config(
    config: str | os.PathLike[str] | Scenario,
    mechanisms: list[str] | str | None = None,
    *,
    seeds: int = 1,
    out_dir: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict:
    """The notebook API's compare (`overcommit.compare(...)`, `overcommit.api.compare`): run
    the scenario once per mechanism and seed; returns compare.json's content (written, with
    every run's directory, under `out_dir`, default a new temporary directory)."""
    sc = load(config, overrides)
    if mechanisms is not None and not isinstance(mechanisms, str):
        mechanisms = ",".join(mechanisms)
    names = parse_mechanisms(mechanisms)
    d = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="overcommit-cmp-"))
    return run_compare(plan_runs(sc, names, seeds), d)


class _CallableModule(types.ModuleType):
    """`overcommit.compare(config, ...)` runs `compare_config` (the notebook API's compare);
    the module's names (`figures`, `run_compare`, ...) stay importable as usual."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return compare_config(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
