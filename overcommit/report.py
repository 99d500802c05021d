"""`report.html`: one self-contained HTML page with plots for a run, compare or sweep directory.

`write_report(dir)` looks at what the directory holds — `summary.json` (a run), `compare.json`
(a compare), `drill.json` (a drill) or `sweep.json` (a sweep) — and writes `report.html` beside
it: tables, and
matplotlib figures (Agg, small, 80 dpi) embedded as `data:image/png;base64` images. The page
fetches nothing: no scripts, no style sheets, no images from elsewhere.

- run: per-host memory stacked by use over time (hosts.parquet: reserve, guest frames, tmem,
  ephemeral pool, disk cache, migration buffers, free), guest progress over time
  (guests.parquet: work over alive time in a moving window) with a vertical line at every event
  whose kind is in MARKER_KINDS or starts with `migrat`, and the totals and checks;
- compare (and drill): one bar chart per compared figure, mean per mechanism with its 95%
  confidence interval as an error bar (with several seeds), and each mechanism's first run's
  progress over time with its event markers;
- sweep: per goal metric (or progress without a goal), its mean over seeds against the goal
  axis, one line per mechanism with 95% confidence intervals and the goal's threshold; with two
  or more axes, a heatmap of the first metric per mechanism over the first two axes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

REPORT = "report.html"
DPI = 80
MAX_HOST_PANELS = 6
MAX_GUEST_LINES = 8
MAX_POINTS = 1500  # time-series points per line (longer series are thinned)

#: Event kinds drawn as vertical lines on the progress plot, with their colours. Any kind
#: starting with `migrat` (migration start, end, abort) is drawn too, in blue.
MARKER_KINDS: dict[str, str] = {
    "fail_host": "#d62728",
    "recover_host": "#2ca02c",
    "tmem_backend_failure": "#8c1515",
    "restart": "#ff7f0e",
    "oom_kill": "#9467bd",
    "host_oom_kill": "#e377c2",
    "tmem_freeze": "#7f7f7f",
    "tmem_thaw": "#bcbd22",
    "tmem_flush": "#17becf",
    "host_reclaim": "#8c564b",
    "host_release": "#c49c94",
}
MIGRATION_COLOR = "#1f77b4"
MAX_MARKERS = 200

#: The host memory uses stacked in the timeline, bottom to top (hosts.parquet columns).
HOST_STACK = (
    ("reserve_pages", "reserve", "#c7c7c7"),
    ("guest_frames", "guest frames", "#1f77b4"),
    ("tmem_pages", "tmem", "#ff7f0e"),
    ("ephemeral_pages", "ephemeral (cleancache)", "#bcbd22"),
    ("cache_pages", "disk cache", "#2ca02c"),
    ("buffer_pages", "migration buffers", "#9467bd"),
    ("free_pages", "free", "#e8f4e8"),
)

_CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.ok{color:#227722}.bad{color:#b00}.warn{color:#a60}
img{max-width:100%;display:block;margin:.4em 0}
"""


class ReportError(ValueError):
    """The directory holds nothing a report can be made from."""


def kind_of(directory: Path) -> str:
    """`run`, `compare`, `drill` or `sweep`, from the files the directory holds."""
    d = Path(directory)
    if (d / "summary.json").is_file():
        return "run"
    if (d / "compare.json").is_file():
        return "compare"
    if (d / "drill.json").is_file():
        return "drill"
    if (d / "sweep.json").is_file() or (d / "results.parquet").is_file():
        return "sweep"
    if not d.is_dir():
        raise ReportError(f"{d}: no such directory")
    raise ReportError(
        f"{d}: not a run, compare, drill or sweep directory (no summary.json, compare.json, "
        "drill.json or sweep.json)"
    )


def write_report(directory: str | Path) -> Path:
    """Write `report.html` into a run, compare or sweep directory; returns its path."""
    from overcommit.output import atomic_write

    d = Path(directory)
    kind = kind_of(d)
    bodies = {
        "run": _run_body,
        "compare": _compare_body,
        "drill": _drill_body,
        "sweep": _sweep_body,
    }
    body = bodies[kind](d)
    path = d / REPORT
    atomic_write(path, lambda f: f.write(body))
    return path


# ----------------------------------------------------------------------------------------------
# HTML and figures


def _page(title: str, parts: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    def cell(tag: str, i: int, v: Any) -> str:
        cls = " class='l'" if i < left else ""
        return f"<{tag}{cls}>{v if isinstance(v, _Raw) else html.escape(str(v))}</{tag}>"

    out = ["<table><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class _Raw(str):
    """HTML that is not escaped again."""


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _thin(n: int) -> int:
    return max(1, math.ceil(n / MAX_POINTS))


# ----------------------------------------------------------------------------------------------
# Run


def _read_events(d: Path, summary: dict) -> list[dict]:
    path = d / "events.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return list(summary.get("events") or [])


def marker_color(kind: str) -> str | None:
    """The colour of an event kind's vertical line, or None when it is not drawn."""
    if kind in MARKER_KINDS:
        return MARKER_KINDS[kind]
    if kind.startswith("migrat"):
        return MIGRATION_COLOR
    return None


def _run_body(d: Path) -> str:
    import pandas as pd

    summary = json.loads((d / "summary.json").read_text())
    sc = summary.get("scenario") or {}
    name = sc.get("name", d.name)
    events = _read_events(d, summary)
    parts = [
        f"<h1>{html.escape(name)} · {html.escape(str(summary.get('mechanism')))} · seed "
        f"{summary.get('seed')}</h1>",
        _aborted_banner(summary),
        _verdict(summary),
    ]
    hosts_path, guests_path = d / "hosts.parquet", d / "guests.parquet"
    if hosts_path.is_file():
        parts += ["<h2>Host memory</h2>", _host_memory(pd.read_parquet(hosts_path), sc)]
    if guests_path.is_file():
        parts += [
            "<h2>Guest progress</h2>",
            _progress(pd.read_parquet(guests_path), sc, events),
        ]
    parts += ["<h2>Totals</h2>", _totals_table(summary)]
    parts += ["<h2>Checks</h2>", _checks_table(summary)]
    shown = [e for e in events if marker_color(e["kind"])]
    if shown:
        parts.append("<h2>Marked events</h2>")
        parts.append(
            _table(
                ["t (s)", "kind", "details"],
                [
                    [
                        f"{e['t']:g}",
                        e["kind"],
                        ", ".join(
                            f"{k}={v}" for k, v in e.items() if k not in ("t", "epoch", "kind")
                        ),
                    ]
                    for e in shown[:MAX_MARKERS]
                ],
                left=3,
            )
        )
    return _page(f"overcommit run {name}", parts)


def _aborted_banner(summary: dict) -> str:
    """A run that stopped early says so first, with its reason ("" for a complete run)."""
    if summary.get("status", "complete") == "complete":
        return ""
    last = summary.get("last_epoch")
    upto = "no epoch completed" if last is None else f"series up to epoch {last}"
    return (
        "<p class='bad' role='alert' style='border:2px solid #b00;padding:.5em'>"
        f"<b>RUN ABORTED</b> — {html.escape(str(summary.get('reason')))} "
        f"({upto}, {_fmt(summary.get('emulated_seconds'))} s emulated)</p>"
    )


def _verdict(summary: dict) -> str:
    valid = summary.get("valid")
    v = "<span class='ok'>valid</span>" if valid else "<span class='bad'>INVALID</span>"
    hyp = summary.get("hypothesis")
    h = ""
    if hyp is not None:
        cls = "ok" if hyp["status"] == "met" else "warn"
        conds = "; ".join(
            f"{x['condition']} (value {_fmt(x['value'])})" for x in hyp.get("details", [])
        )
        h = f" · hypothesis: <span class='{cls}'>{hyp['status']}</span> — {html.escape(conds)}"
    secs = summary.get("emulated_seconds")
    return f"<p>verdict: {v}{h} · {_fmt(secs)} s emulated</p>"


def _host_memory(hosts: Any, sc: dict) -> str:
    page = sc.get("page_size", 4096)
    names = list(dict.fromkeys(hosts["host"]))
    shown = names[:MAX_HOST_PANELS]
    fig = _figure(7.5, 1.9 * len(shown) + 0.4)
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    for ax, host in zip(axes, shown):
        h = hosts[hosts["host"] == host]
        h = h.iloc[:: _thin(len(h))]
        cols = [(c, label, color) for c, label, color in HOST_STACK if c in h]
        ys = [h[c].to_numpy() * page / 2**20 for c, _, _ in cols]
        ax.stackplot(
            h["t"].to_numpy(),
            *ys,
            labels=[label for _, label, _ in cols],
            colors=[color for _, _, color in cols],
            linewidth=0,
        )
        ax.set_ylabel("MiB")
        ax.set_title(host, fontsize=9, loc="left")
        ax.margins(x=0)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    axes[-1].set_xlabel("emulated time (s)")
    note = ""
    if len(names) > len(shown):
        note = f"<p>First {len(shown)} of {len(names)} hosts shown.</p>"
    return _img(fig, "host memory by use over time") + note


def _progress(guests: Any, sc: dict, events: list[dict]) -> str:
    import numpy as np

    epoch = float(sc.get("epoch", 0.1))
    duration = float(guests["t"].max() + epoch) if len(guests) else 0.0
    w = max(1, round(max(float(sc.get("sync_window", 1.0)), duration / 60) / epoch))
    fig = _figure(7.5, 2.8)
    ax = fig.subplots()
    names = list(dict.fromkeys(guests["guest"]))
    series = {}
    for g in names:
        x = guests[guests["guest"] == g]
        work = x["work_s"].rolling(w, min_periods=1).sum().to_numpy()
        alive = (x["alive"] * epoch).rolling(w, min_periods=1).sum().to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            series[g] = (x["t"].to_numpy(), np.where(alive > 0, work / alive, np.nan))
    if len(names) <= MAX_GUEST_LINES:
        for g, (t, p) in series.items():
            k = _thin(len(t))
            ax.plot(t[::k], p[::k], linewidth=1, label=g)
    else:
        t = next(iter(series.values()))[0]
        stack = np.vstack([p for _, p in series.values()])
        k = _thin(len(t))
        ax.fill_between(
            t[::k],
            np.nanmin(stack, axis=0)[::k],
            np.nanmax(stack, axis=0)[::k],
            alpha=0.25,
            label="min–max over guests",
        )
        ax.plot(t[::k], np.nanmean(stack, axis=0)[::k], linewidth=1.2, label="mean over guests")
    seen: set[str] = set()
    for e in [e for e in events if marker_color(e["kind"])][:MAX_MARKERS]:
        kind = e["kind"]
        ax.axvline(
            e["t"],
            color=marker_color(kind),
            linestyle="--",
            linewidth=0.9,
            label=None if kind in seen else kind,
        )
        seen.add(kind)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel(f"progress ({w * epoch:g} s window)")
    ax.set_xlabel("emulated time (s)")
    ax.margins(x=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    return _img(fig, "guest progress over time with event markers")


_TOTALS_SHOWN = (
    "progress",
    "stall_seconds",
    "downtime_seconds",
    "fault_latency_p99",
    "disk_reads",
    "disk_writes",
    "frontswap_puts",
    "frontswap_put_failures",
    "lost_pages",
    "guest_oom_kills",
    "host_oom_kills",
    "double_swaps",
    "balloon_lag_seconds",
    "restart_failures",
)


def _totals_table(summary: dict) -> str:
    t = summary.get("totals", {})
    rows = [[k, _fmt(t[k])] for k in _TOTALS_SHOWN if k in t]
    rows += [[k, _fmt(v)] for k, v in t.items() if k not in _TOTALS_SHOWN and _num(v) and v]
    return _table(["figure", "value"], rows)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _checks_table(summary: dict) -> str:
    rows = []
    for k, c in (summary.get("checks") or {}).items():
        ok = _Raw("<span class='ok'>ok</span>" if c["ok"] else "<span class='bad'>FAILED</span>")
        ev = "; ".join(str(x) for x in (c.get("evidence") or [])[:3])
        rows.append([k, ok, c.get("violations", 0), ev])
    return _table(["checker", "result", "violations", "evidence"], rows, left=2)


# ----------------------------------------------------------------------------------------------
# Compare


def _drill_body(d: Path) -> str:
    return _compare_body(d, "drill.json", "drill")


def _compare_body(d: Path, name: str = "compare.json", label: str = "compare") -> str:
    import pandas as pd

    report = json.loads((d / name).read_text())
    mechs = report.get("mechanisms", {})
    figs = report.get("figures", [])
    parts = [
        f"<h1>{label} · {html.escape(str(report.get('scenario')))}</h1>",
        f"<p>{len(mechs)} mechanism(s), seeds {html.escape(str(report.get('seeds')))}; bars "
        "are means, error bars the 95% confidence interval (with several seeds).</p>",
    ]
    if mechs and figs:
        cols = 2
        rows_n = math.ceil(len(figs) / cols)
        fig = _figure(8, 1.1 + 2.1 * rows_n)
        axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
        names = list(mechs)
        for ax, f in zip(axes, figs):
            means = [_float(mechs[m]["mean"].get(f)) for m in names]
            errs = [(mechs[m].get("ci95") or {}).get(f) for m in names]
            yerr = [e if e is not None else 0.0 for e in errs] if any(errs) else None
            ax.bar(range(len(names)), means, yerr=yerr, capsize=3, color="#4c72b0")
            ax.set_title(f, fontsize=9, loc="left")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
            ax.tick_params(axis="y", labelsize=7)
        for ax in axes[len(figs) :]:
            ax.set_visible(False)
        parts.append(_img(fig, "compared figures per mechanism with 95% confidence intervals"))
    header = ["mechanism", *figs, "verdict"]
    rows = []
    for m, v in mechs.items():
        row: list[Any] = [m]
        for f in figs:
            mean, half = v["mean"].get(f), (v.get("ci95") or {}).get(f)
            row.append(_fmt(mean) + (f" ± {_fmt(half)}" if half is not None else ""))
        row.append(v.get("verdict"))
        rows.append(row)
    parts += ["<h2>Figures</h2>", _table(header, rows)]
    runs = []
    for m, v in mechs.items():
        runs += [[m, r["seed"], r["dir"], r.get("exit_code")] for r in v.get("runs", [])]
    parts += ["<h2>Runs</h2>", _table(["mechanism", "seed", "directory", "exit"], runs, left=3)]
    # each mechanism's first run over time, with its fault, restart and migration markers
    shown = 0
    for m, v in mechs.items():
        run = next(iter(v.get("runs", [])), None)
        rd = Path(run["dir"]) if run else None
        if rd is not None and not rd.is_absolute() and not rd.exists():
            rd = d / rd.name
        if rd is None or not (rd / "guests.parquet").is_file() or shown >= MAX_HOST_PANELS:
            continue
        summary = json.loads((rd / "summary.json").read_text())
        parts.append(f"<h2>{html.escape(m)}, seed {run['seed']}: guest progress</h2>")
        guests = pd.read_parquet(rd / "guests.parquet")
        parts.append(_progress(guests, summary.get("scenario") or {}, _read_events(rd, summary)))
        shown += 1
    return _page(f"overcommit {label} {report.get('scenario')}", parts)


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


# ----------------------------------------------------------------------------------------------
# Sweep


def _sweep_body(d: Path) -> str:
    import pandas as pd

    from overcommit.compare import mean_ci

    meta = json.loads((d / "sweep.json").read_text()) if (d / "sweep.json").is_file() else {}
    rows = pd.read_parquet(d / "results.parquet") if (d / "results.parquet").is_file() else None
    if rows is not None and meta.get("keys"):
        rows = rows[rows["key"].isin(set(meta["keys"]))]
    grid = meta.get("grid") or {}
    axis = meta.get("axis") or (next(iter(grid)) if grid else None)
    goal = meta.get("goal")
    from overcommit.config import parse_conditions

    conds = parse_conditions(goal) if goal else []
    metrics = list(dict.fromkeys(c.name for c in conds)) or ["progress"]
    runs = meta.get("runs", {})
    parts = [
        f"<h1>sweep · {html.escape(str(meta.get('scenario')))}</h1>",
        "<p>"
        + html.escape(
            f"grid {', '.join(f'{k} = {v}' for k, v in grid.items())}; mechanisms "
            f"{', '.join(meta.get('mechanisms', []))}; seeds {meta.get('seeds')}; runs: "
            f"{runs.get('planned')} planned, {runs.get('executed')} executed, "
            f"{runs.get('skipped')} skipped, {runs.get('failed')} failed"
        )
        + "</p>",
    ]
    if goal:
        parts.append(f"<p>goal: <code>{html.escape(goal)}</code></p>")
    answers = meta.get("answers")
    if answers:
        from overcommit.capacity import answer_lines

        parts += ["<h2>Answer</h2>", "<ul>"]
        parts += [f"<li>{html.escape(line)}</li>" for line in answer_lines(meta)]
        parts.append("</ul>")
    if rows is not None and len(rows) and axis in rows:
        done = rows[rows["status"] == "done"] if "status" in rows else rows
        others = [p for p in grid if p != axis and p in done]
        for metric in metrics:
            if metric not in done:
                continue
            thresholds = [c for c in conds if c.name == metric]
            parts.append(f"<h2>{html.escape(metric)} against {html.escape(axis)}</h2>")
            parts.append(_sweep_curve(done, axis, others, metric, thresholds, mean_ci))
        if others and metrics[0] in done:
            parts.append(f"<h2>{html.escape(metrics[0])} over {axis} and {others[0]}</h2>")
            parts.append(_sweep_heatmap(done, axis, others[0], metrics[0]))
        show = [
            c for c in [*grid, "mechanism", "seed", "status", "valid", *metrics, "dir"] if c in rows
        ]
        table_rows = [[_fmt(r[c]) for c in show] for r in rows[show].to_dict("records")]
        parts += ["<h2>Runs</h2>", _table(show, table_rows, left=0)]
    return _page(f"overcommit sweep {meta.get('scenario')}", parts)


def _axis_positions(values: list[Any]) -> tuple[list[float], list[str] | None]:
    if all(_num(v) for v in values):
        return [float(v) for v in values], None
    return list(range(len(values))), [str(v) for v in values]


def _sweep_curve(
    done: Any, axis: str, others: list[str], metric: str, thresholds: list, mean_ci: Any
) -> str:
    fig = _figure(8.5, 3)
    ax = fig.subplots()
    try:
        values = sorted(done[axis].dropna().unique().tolist())
    except TypeError:
        values = list(dict.fromkeys(done[axis].dropna().tolist()))
    xs, labels = _axis_positions(values)
    by = ["mechanism", *others]
    groups = list(done.groupby(by, sort=False))
    if len(groups) > MAX_GUEST_LINES:  # too many lines: one per mechanism, over the other axes
        by = ["mechanism"]
        groups = list(done.groupby(by, sort=False))
    for gkey, sub in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        m = ", ".join([str(gkey[0]), *(f"{p}={_fmt(v)}" for p, v in zip(by[1:], gkey[1:]))])
        px, py, pe = [], [], []
        for x, v in zip(xs, values):
            vals = [float(y) for y in sub[sub[axis] == v][metric] if y is not None]
            vals = [y for y in vals if not math.isnan(y)]
            if not vals:
                continue
            mean, half = mean_ci(vals)
            px.append(x)
            py.append(mean)
            pe.append(half or 0.0)
        if px:
            ax.errorbar(px, py, yerr=pe if any(pe) else None, marker="o", capsize=3, label=m)
    for c in thresholds:
        ax.axhline(c.value, color="#b00", linestyle=":", linewidth=1, label=str(c))
    if labels is not None:
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
    elif all(isinstance(v, int) or float(v).is_integer() for v in values):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(axis)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _img(fig, f"{metric} against {axis}")


def _sweep_heatmap(done: Any, axis: str, other: str, metric: str) -> str:
    import numpy as np

    mechs = list(dict.fromkeys(done["mechanism"]))
    xs = sorted(done[axis].dropna().unique().tolist(), key=str)
    ys = sorted(done[other].dropna().unique().tolist(), key=str)
    if all(_num(v) for v in xs):
        xs = sorted(xs)
    if all(_num(v) for v in ys):
        ys = sorted(ys)
    fig = _figure(3.2 * len(mechs) + 0.8, 2.8)
    axes = fig.subplots(1, len(mechs), squeeze=False)[0]
    for ax, m in zip(axes, mechs):
        sub = done[done["mechanism"] == m]
        z = np.full((len(ys), len(xs)), np.nan)
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                vals = sub[(sub[axis] == xv) & (sub[other] == yv)][metric].astype(float)
                if len(vals):
                    z[i, j] = vals.mean()
        im = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([_fmt(v) for v in xs], fontsize=7)
        ax.set_yticks(range(len(ys)))
        ax.set_yticklabels([_fmt(v) for v in ys], fontsize=7)
        ax.set_xlabel(axis, fontsize=8)
        ax.set_ylabel(other, fontsize=8)
        ax.set_title(m, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _img(fig, f"{metric} heatmap")
