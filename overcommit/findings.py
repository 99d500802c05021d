"""`overcommit findings`: the 2010 frontswap thread's questions, answered from runs.

A study (one YAML file in `configs/studies/`) names a question, who asked it (with a short
quote from the thread), a scenario (a path relative to the repository's root, or inline YAML
text), the mechanisms, an optional knob varied over values (a `--set` path), the figure that
answers it and the assumptions it rests on. `run_findings` runs each study through `compare`
(every mechanism on the same seeds, so each seed's runs see the same accesses), then phrases
the answer: a ratio between two mechanisms (per seed, then mean and 95% CI over seeds) or each
mechanism's mean and CI. Only runs whose verdict is valid enter an answer; the answer says
when some were left out. A study whose question needs a mechanism the product lacks carries
`status: not-answered` and a reason, and is listed as such. `findings.json` holds everything;
the face layer (`overcommit.findings_report`) writes findings.md and findings.html from it.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from overcommit.compare import mean_ci, plan_runs, run_compare
from overcommit.studies import load

SCHEMA = "overcommit.findings/1"
ROOT = Path(__file__).resolve().parents[1]
STUDIES_DIR = ROOT / "configs" / "studies"

#: Figures a study may name: a key of the summary's totals (`progress`, `fault_latency_p99`,
#: `double_swaps`, `recovery_seconds`, ...), each with the words and unit it is phrased in.
FIGURE_WORDS: dict[str, tuple[str, str]] = {
    "progress": ("work done (progress)", ""),
    "fault_latency_p99": ("p99 fault latency", "s"),
    "stall_seconds": ("stall", "s"),
    "double_swaps": ("double swaps", "pages"),
    "recovery_seconds": ("reclaim/recovery time", "s"),
    "downtime_seconds": ("downtime", "s"),
    "guest_oom_kills": ("guest OOM kills", ""),
    "restart_failures": ("failed restarts", ""),
    "ha_restarts": ("HA restarts", ""),
    "migrations_completed": ("completed migrations", ""),
    "disk_reads": ("disk page reads", "pages"),
    "tmem_pages_peak": ("peak pages in host tmem", "pages"),
    "balloon_lag_seconds": ("balloon lag", "s"),
    "hypercalls": ("hypercalls", ""),
    "io_exits": ("I/O exits", ""),
    "frontswap_put_failures": ("refused puts", "pages"),
    "cache_write_through": ("swap-outs past the host's RAM, to the disk", "pages"),
}


class StudyError(ValueError):
    """A study file (or `--only`) is wrong: one line for the user."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AskedBy(_M):
    name: str
    quote: str


class Point(_M):
    label: str
    set: dict[str, Any]


class Axis(_M):
    """One axis of a `grid`: `name` (in labels and the break-even sentence), the `--set`
    paths it sets (all to the same value) and its values."""

    name: str
    set: list[str]
    values: list[Any]


class Vary(_M):
    """A knob over values (`path`, `values`, optional `labels`), named `points`, each a set of
    overrides, or a `grid` of axes (every combination a point, the last axis varying fastest)."""

    path: str | None = None
    values: list[Any] | None = None
    labels: list[str] | None = None
    points: list[Point] | None = None
    grid: list[Axis] | None = None


class BreakEven(_M):
    """Where a ratio answer crosses 1 along a grid axis (`along`), for each value of another
    (`per`), interpolated between the two points around the crossing on the log of `along`."""

    along: str
    per: str | None = None
    below: str  # what a ratio below 1 means ("frontswap stalls less")
    above: str  # ... and above 1


class Answer(_M):
    figure: str
    second: str | None = None  # ratio: a second figure's ratio, in the same sentence
    kind: Literal["ratio", "each"] = "each"
    of: str | None = None  # ratio: this mechanism's figure ...
    over: str | None = None  # ... over this one's
    phrase: str = ""  # opening words of the answer sentence
    also: list[str] = []  # each: further figures, phrased after the first
    words: dict[str, str] = {}  # figure -> "words|unit" for figures FIGURE_WORDS lacks
    break_even: BreakEven | None = None  # ratio over a grid: where it crosses 1


class Quick(_M):
    duration: str | None = None
    set: dict[str, Any] = {}


class Study(_M):
    """One study file of configs/studies/."""

    id: str
    question: str
    asked_by: AskedBy
    status: Literal["answered", "not-answered"] = "answered"
    reason: str | None = None
    scenario: str | None = None
    set: dict[str, Any] = {}
    mechanisms: list[str] = []
    vary: Vary | None = None
    answer: Answer | None = None
    assumptions: list[str] = []
    quick: Quick = Quick()
    seeds: int = Field(3, ge=1)


def load_study(path: Path) -> Study:
    """A study file, checked; StudyError (one located line) when it is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
        st = Study.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"{path}: {exc}") from None
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise StudyError(f"{path}: {loc}: {e['msg']}") from None
    if st.status == "answered":
        if st.scenario is None or st.answer is None or not st.mechanisms:
            raise StudyError(f"{path}: an answered study needs scenario, mechanisms and answer")
        if st.answer.kind == "ratio" and not (
            st.answer.of in st.mechanisms and st.answer.over in st.mechanisms
        ):
            raise StudyError(f"{path}: answer.of and answer.over must be among mechanisms")
        for f in (st.answer.figure, st.answer.second, *st.answer.also):
            if f is not None and f not in FIGURE_WORDS and f not in st.answer.words:
                raise StudyError(
                    f"{path}: answer figure {f!r} is not one of " + ", ".join(FIGURE_WORDS)
                )
        v = st.vary
        forms = (v.points, v.grid, v.path or v.values) if v is not None else ()
        kinds = sum(f is not None for f in forms)
        if v is not None and (kinds != 1 or (v.path is None) != (v.values is None)):
            raise StudyError(f"{path}: vary needs one of: path and values, points, or grid")
        be = st.answer.break_even
        if be is not None:
            names = [a.name for a in (v.grid or [])] if v is not None else []
            if (
                st.answer.kind != "ratio"
                or be.along not in names
                or (be.per is not None and be.per not in names)
            ):
                raise StudyError(
                    f"{path}: answer.break_even needs a ratio answer and grid axes named "
                    f"{be.along!r}" + (f" and {be.per!r}" if be.per else "")
                )
    elif not st.reason:
        raise StudyError(f"{path}: a not-answered study needs a reason")
    return st


def load_studies(directory: Path = STUDIES_DIR, only: list[str] | None = None) -> list[Study]:
    """Every study of `directory` (by id order), or those whose id is in `only`."""
    studies = [load_study(p) for p in sorted(Path(directory).glob("*.yaml"))]
    if only:
        known = {s.id for s in studies}
        bad = [x for x in only if x not in known]
        if bad:
            raise StudyError(f"--only: unknown study {', '.join(bad)} (known: {sorted(known)})")
        studies = [s for s in studies if s.id in only]
    return sorted(studies, key=lambda s: s.id)


def is_study(path: Path) -> bool:
    """Whether a YAML file is a study (it asks a `question`) rather than a scenario."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # the scenario loader reports it, located
    return isinstance(data, dict) and "question" in data


def validate_study(st: Study) -> int:
    """Load every scenario an answered study runs (each point, full and `--quick`, under each
    of its mechanisms); ConfigError names the first bad one. Returns how many were checked."""
    from overcommit.studies import load

    if st.status != "answered":
        return 0
    checked = 0
    points = [(None, "")] if st.vary is None else _vary_points(st.vary)
    for value, _ in points:
        for quick in (False, True):
            sc = load(scenario_source(st), overrides_for(st, quick, value))
            for m in st.mechanisms:  # every mechanism is known and fits the scenario
                load(sc, {"mechanism": m})
                checked += 1
    return checked


def scenario_source(st: Study) -> str | Path:
    """The study's scenario: a path (relative to the repository root) or YAML text."""
    assert st.scenario is not None
    if "\n" in st.scenario:
        return st.scenario
    return ROOT / st.scenario


def overrides_for(st: Study, quick: bool, value: Any = None) -> dict[str, Any]:
    """The `--set` overrides of one point of the study (the inline runtime always)."""
    o: dict[str, Any] = {"runtime.kind": "inline", **st.set}
    if quick:
        o.update(st.quick.set)
        if st.quick.duration:
            o["duration"] = st.quick.duration
    if st.vary is not None and (st.vary.points is not None or st.vary.grid is not None):
        o.update(value or {})
    elif st.vary is not None:
        o[st.vary.path] = value
    return o


def command_for(st: Study, seeds: int, quick: bool, config: str | None = None) -> str:
    """The `overcommit sweep` command that reruns a study's runs (same scenario, overrides,
    mechanisms and seeds; each override a one-value grid axis, the varied knob an axis of its
    values). `config`: where an inline scenario was written."""
    cfg = config or str(st.scenario)
    parts = ["overcommit", "sweep", str(cfg)]
    o = overrides_for(st, quick, None)
    o.pop("runtime.kind")
    duration = o.pop("duration", None)
    if st.vary is not None and st.vary.points is not None:
        return ""  # named points change several knobs at once: no single sweep
    if st.vary is not None and st.vary.grid is not None:
        if any(len(a.set) != 1 for a in st.vary.grid):
            return ""  # an axis that sets several knobs to one value: no sweep grid for it
        for a in st.vary.grid:
            o[a.set[0]] = ",".join(str(v) for v in a.values)
    elif st.vary is not None:
        o[str(st.vary.path)] = ",".join(str(v) for v in st.vary.values or [])
    for k, v in o.items():
        parts += ["--grid", f"{k}={v}"]
    parts += ["--mechanisms", ",".join(st.mechanisms), "--seeds", str(seeds)]
    if duration is not None:
        parts += ["--duration", str(duration)]
    return shlex.join(parts)


def findings_command(st: Study, seeds: int, quick: bool) -> str:
    """The `overcommit findings` command that reruns exactly this study."""
    return (
        f"overcommit findings --only {st.id}"
        + (" --quick" if quick else "")
        + (f" --seeds {seeds}")
    )


def _scale(v: float, unit: str) -> tuple[float, str]:
    """(divisor, suffix) that shows `v` in a readable unit (s -> ms/us, B -> MiB/GiB)."""
    if unit == "s":
        if abs(v) < 1e-3:
            return 1e-6, " us"
        if abs(v) < 1:
            return 1e-3, " ms"
        return 1.0, " s"
    if unit == "B":
        return (2**30, " GiB") if abs(v) >= 2**30 else (2**20, " MiB")
    return 1.0, f" {unit}" if unit else ""


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _fmt(v: float, unit: str) -> str:
    """One value with its unit."""
    div, suffix = _scale(v, unit)
    return _num(v / div) + suffix


def _ci_text(mean: float, half: float | None, unit: str, floor: float | None = None) -> str:
    """`mean (low–high) unit`, in the mean's unit; one seed: the mean alone (the report
    says so once); the same value in every seed: `(every seed)`. `floor` clips the low end
    (0 for a figure that cannot be negative)."""
    div, suffix = _scale(mean, unit)
    if half is None:
        return _num(mean / div) + suffix
    if half <= 1e-12 * max(1.0, abs(mean)):
        return f"{_num(mean / div)}{suffix} (every seed)"
    low = mean - half if floor is None else max(floor, mean - half)
    return f"{_num(mean / div)} ({_num(low / div)}–{_num((mean + half) / div)}){suffix}"


def _mean_text(values: list[float], unit: str) -> str:
    """Mean and CI of per-seed values (the low end clipped at 0 when none is negative)."""
    mean, half = mean_ci(values)
    return _ci_text(mean, half, unit, 0.0 if min(values) >= 0 else None)


def summarise_point(st: Study, report: dict, label: str) -> dict:
    """The answer at one point: numbers from the valid runs only, and the sentence."""
    assert st.answer is not None
    ans = st.answer
    words, unit = figure_words(st, ans.figure)
    runs = {m: report["mechanisms"][m]["runs"] for m in st.mechanisms}
    invalid = sorted(m for m, rs in runs.items() if not all(r["valid"] for r in rs))
    values: dict[str, dict[int, float]] = {}
    for m, rs in runs.items():
        values[m] = _values(rs, ans.figure)
    point: dict[str, Any] = {"label": label, "invalid": invalid, "values": values}
    where = f"{label}: " if label else ""
    if ans.kind == "ratio":
        a, b = values[ans.of], values[ans.over]  # type: ignore[index]
        r = _ratio(a, b)
        point["ratio"] = r
        if r is None:
            point["sentence"] = f"{where}no valid pair of runs of {ans.of} and {ans.over}."
            return point
        point["sentence"] = (
            f"{where}{ans.phrase or ans.of} gets {_ratio_text(r)} the {words} of {ans.over}"
            f" ({_mean_text(list(a.values()), unit)} vs {_mean_text(list(b.values()), unit)})"
        )
        if ans.second is not None:
            w2, u2 = figure_words(st, ans.second)
            a2 = _values(runs[str(ans.of)], ans.second)
            b2 = _values(runs[str(ans.over)], ans.second)
            r2 = _ratio(a2, b2)
            point["second"] = r2
            if r2 is not None:
                point["sentence"] += (
                    f"; its {w2} is {_ratio_text(r2)} that of {ans.over}"
                    f" ({_mean_text(list(a2.values()), u2)} vs"
                    f" {_mean_text(list(b2.values()), u2)})"
                )
        point["sentence"] += "."
    else:
        point["means"] = {}
        sentences = []
        for k, f in enumerate([ans.figure, *ans.also]):
            w, u = figure_words(st, f)
            vals = {m: _values(rs, f) for m, rs in runs.items()}
            parts = []
            point["means"][f] = {}
            for m, v in vals.items():
                if not v:
                    parts.append(f"{m}: no value")
                    continue
                mean, half = mean_ci(list(v.values()))
                point["means"][f][m] = {"mean": mean, "ci95": half}
                parts.append(f"{m} {_mean_text(list(v.values()), u)}")
            head = (ans.phrase or w[:1].upper() + w[1:]) if k == 0 else w[:1].upper() + w[1:]
            sentences.append(f"{head}: " + "; ".join(parts) + ".")
        point["sentence"] = where + " ".join(sentences)
    if invalid:
        point["sentence"] += f" Runs of {', '.join(invalid)} were invalid and are not used."
    return point


def _ratio(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Per-seed ratios a/b (paired by seed: common random numbers), their mean and CI."""
    seeds = sorted(s for s in a if s in b and b[s] != 0)
    if not seeds:
        return None
    ratios = [a[s] / b[s] for s in seeds]
    mean, half = mean_ci(ratios)
    return {"mean": mean, "ci95": half, "seeds": seeds, "per_seed": ratios}


def _ratio_text(r: dict) -> str:
    mean, half = r["mean"], r["ci95"]
    if half is None:
        return f"{mean:.2f}x"
    if half <= 1e-12 * max(1.0, abs(mean)):
        return f"{mean:.2f}x (every seed)"
    return f"{mean:.2f}x ({max(0.0, mean - half):.2f}–{mean + half:.2f})"


def figure_words(st: Study, figure: str) -> tuple[str, str]:
    """(words, unit) a figure is phrased in."""
    if st.answer is not None and figure in st.answer.words:
        w, _, u = st.answer.words[figure].partition("|")
        return w, u
    return FIGURE_WORDS[figure]


def figure_of(summary: dict, figure: str) -> float | None:
    """One figure of a run's summary: a key of its totals, or a dotted path
    (`guests.a.progress`, `migrations.0.total_seconds`); None when the run has no such value
    (a migration that did not finish, a migration that never started)."""
    node: Any = summary["totals"] if "." not in figure else summary
    try:
        for part in figure.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
    except (KeyError, IndexError, ValueError):
        return None
    return None if node is None else float(node)


def _values(runs: list[dict], figure: str) -> dict[int, float]:
    """{seed: figure} over the valid runs that have the figure."""
    out = {}
    for r in runs:
        if r["valid"]:
            v = _figure_of(r["dir"], figure)
            if v is not None:
                out[r["seed"]] = v
    return out


def _figure_of(run_dir: str, figure: str) -> float | None:
    """One figure of a run, read back from the run's summary.json."""
    import json

    return figure_of(json.loads((Path(run_dir) / "summary.json").read_text()), figure)


def run_findings(
    studies: list[Study],
    out_dir: Path,
    *,
    quick: bool = False,
    seeds: int | None = None,
    on_point: Callable[[str, str], None] | None = None,
) -> dict:
    """Run every answered study, each point through compare under `out_dir/<id>/`; returns
    (and writes) findings.json's content."""
    from overcommit.output import write_json

    out: list[dict] = []
    for st in studies:
        entry: dict[str, Any] = {
            "id": st.id,
            "question": st.question,
            "asked_by": st.asked_by.model_dump(),
            "status": st.status,
            "assumptions": st.assumptions,
        }
        out.append(entry)
        if st.status != "answered":
            entry["reason"] = st.reason
            continue
        n = seeds if seeds is not None else (1 if quick else st.seeds)
        entry.update(
            {"scenario": st.scenario, "mechanisms": st.mechanisms, "seeds": n, "points": []}
        )
        entry["figure"] = st.answer.figure if st.answer else None
        entry["figure_words"] = figure_words(st, st.answer.figure) if st.answer else None
        entry["kind"] = st.answer.kind if st.answer else None
        points = [(None, "")] if st.vary is None else list(_vary_points(st.vary))
        for value, label in points:
            o = overrides_for(st, quick, value)
            base = load(scenario_source(st), o)
            d = out_dir / st.id / (_slug(label) or "all")
            if on_point is not None:
                on_point(st.id, label)
            report = run_compare(plan_runs(base, st.mechanisms, n), d)
            p = summarise_point(st, report, label)
            p["dir"] = str(d)
            entry["points"].append(p)
        entry["answer"] = " ".join(p["sentence"] for p in entry["points"])
        if st.answer is not None and st.answer.break_even is not None:
            entry["break_even"] = break_even(st, entry["points"])
            entry["answer"] = " ".join(b["sentence"] for b in entry["break_even"]) + (
                " Per point: " + entry["answer"]
            )
        entry["command"] = findings_command(st, n, quick)
        config = None
        if st.scenario and "\n" in st.scenario:  # an inline scenario: kept beside its runs
            (out_dir / st.id).mkdir(parents=True, exist_ok=True)
            config = str(out_dir / st.id / "scenario.yaml")
            Path(config).write_text(st.scenario)
        entry["equivalent"] = command_for(st, n, quick, config)
    doc = {"schema": SCHEMA, "quick": quick, "studies": out}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "findings.json", doc)
    return doc


def _vary_points(v: Vary) -> list[tuple[Any, str]]:
    if v.points is not None:
        return [(p.set, p.label) for p in v.points]
    if v.grid is not None:
        import itertools

        out = []
        for combo in itertools.product(*(a.values for a in v.grid)):
            sets = {p: x for a, x in zip(v.grid, combo) for p in a.set}
            label = ", ".join(f"{a.name} {x}" for a, x in zip(v.grid, combo))
            out.append((sets, label))
        return out
    assert v.path is not None and v.values is not None
    labels = v.labels or [f"{v.path.rsplit('.', 1)[-1]}={x}" for x in v.values]
    return list(zip(v.values, labels, strict=False))


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-")


def _axis_value(v: Any) -> float:
    """A grid value as a number (`5us` -> 5e-06, `32` -> 32.0)."""
    if isinstance(v, int | float):
        return float(v)
    from overcommit.units import parse_duration

    return float(parse_duration(str(v)))


def _crossing(xs: list[float], rs: list[float]) -> tuple[float | None, int]:
    """Where the ratios `rs` (at increasing `xs`) first cross 1, interpolated linearly in the
    ratio on the log of x: (x, -1); when they stay on one side, (None, 1) above 1 and
    (None, 0) below."""
    for i in range(len(xs) - 1):
        r1, r2 = rs[i], rs[i + 1]
        if (r1 - 1.0) * (r2 - 1.0) <= 0 and r1 != r2:
            f = (1.0 - r1) / (r2 - r1)
            lx = math.log(xs[i]) + f * (math.log(xs[i + 1]) - math.log(xs[i]))
            return math.exp(lx), -1
    return None, int(rs[0] > 1.0) if rs else -1


def break_even(st: Study, points: list[dict]) -> list[dict]:
    """For each value of the `per` axis (or once), the value of the `along` axis at which the
    study's ratio crosses 1: per seed, then the mean and 95% CI over the seeds that cross."""
    assert st.answer is not None and st.answer.break_even is not None
    assert st.vary is not None and st.vary.grid is not None
    be = st.answer.break_even
    axes = {a.name: a for a in st.vary.grid}
    along, per = axes[be.along], axes.get(be.per) if be.per else None
    by_label = {p["label"]: p for p in points}
    out = []
    for pv in per.values if per is not None else [None]:
        xs, per_seed = [], {}
        for av in along.values:
            label = ", ".join(
                f"{a.name} {(av if a is along else pv)}"
                for a in st.vary.grid
                if a is along or a is per
            )
            p = next((q for k, q in by_label.items() if _has_label(k, label)), None)
            r = None if p is None else p.get("ratio")
            if r is None:
                continue
            xs.append(_axis_value(av))
            for seed, v in zip(r["seeds"], r["per_seed"]):
                per_seed.setdefault(seed, []).append(v)
        order = sorted(range(len(xs)), key=lambda i: xs[i])  # the axis in increasing order
        xs = [xs[i] for i in order]
        per_seed = {
            k: [rs[i] for i in order] for k, rs in per_seed.items() if len(rs) == len(order)
        }
        where = f"with {be.per} {pv}" if per is not None else "over the grid"
        found = [_crossing(xs, rs) for rs in per_seed.values() if len(xs) > 1]
        cross = [x for x, _ in found if x is not None]
        unit = "s" if isinstance(along.values[0], str) else ""
        lo = [rs[0] > 1.0 for rs in per_seed.values() if rs]  # the side at the smallest value
        item: dict[str, Any] = {"per": pv, "along": along.values, "crossings": cross}
        if found and len(cross) == len(found):
            mean, half = mean_ci(cross)
            item["mean"], item["ci95"] = mean, half
            first, then = (be.above, be.below) if all(lo) else (be.below, be.above)
            item["sentence"] = (
                f"Break-even {where} at about {_ci_text(mean, half, unit, 0.0)} "
                f"{be.along}: {first} below it, {then} above it."
            )
        elif found and not cross:
            side = be.above if all(s == 1 for _, s in found) else be.below
            if len({s for _, s in found}) > 1:
                side = "the seeds disagree on the side, with no crossing:"
            item["sentence"] = (
                f"No break-even {where} between {along.values[0]} and {along.values[-1]} "
                f"{be.along}: {side} throughout."
            )
        else:
            item["sentence"] = f"Break-even {where}: {len(cross)} of {len(found)} seeds cross " + (
                f"(at {', '.join(_fmt(x, unit) for x in cross)} {be.along})." if cross else "."
            )
        out.append(item)
    return out


def _has_label(point_label: str, parts: str) -> bool:
    """Whether a grid point's label holds every `name value` part of `parts`."""
    have = point_label.split(", ")
    return all(x in have for x in parts.split(", "))
