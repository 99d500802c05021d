"""`report.html`: one self-contained HTML page with plots for a run, compare or sweep directory.

`write_report(dir)` looks at what the directory holds — `summary.json` (a run), `compare.json`
(a compare), `drill.json` (a drill) or `sweep.json` (a sweep) — and writes `report.html` beside
it: a two-sentence headline (`overcommit.report_text`), tables in human units, and
matplotlib figures (Agg, 13 inches wide at 100 dpi, drawn at the page's full width with
legible fonts) embedded as `data:image/png;base64` images. The page fetches nothing: no
scripts, no style sheets, no images from elsewhere.

- run: per-host memory stacked by use over time (hosts.parquet: reserve, guest frames, tmem,
  ephemeral pool, disk cache, free), guest progress over time
  (guests.parquet: work over alive time in a moving window), one small panel per guest so that
  no guest hides another (per host, mean with min–max band and the slowest guest, beyond
  MAX_GUEST_PANELS guests), with a vertical line at every event whose kind is in MARKER_KINDS
  or starts with `migrat`, and the totals by group and checks;
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

from overcommit.metrics import HOST_STACK, MARKER_KINDS, MIGRATION_COLOR, marker_color  # noqa: F401

REPORT = "report.html"
DPI = 100
WIDTH = 13.0  # inches: 1300 px, shown at the page's full width
MAX_HOST_PANELS = 6
MAX_GUEST_LINES = 8
MAX_GUEST_PANELS = 24  # more guests: one panel per host (mean, min–max band, slowest guest)

#: matplotlib settings for every figure: fonts legible at the page's width.
RC = {
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
MAX_POINTS = 1500  # time-series points per line (longer series are thinned)

MAX_MARKERS = 200


_CSS = """
body{font-family:sans-serif;margin:1.5em auto;padding:0 1.5em;color:#222;max-width:1400px;
line-height:1.4}
h1{font-size:1.5em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.6em}
h3{font-size:1em;margin:1em 0 .2em}
p.headline{font-size:1.2em;margin:.4em 0 .8em;max-width:60em}
table{border-collapse:collapse;font-size:.95em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.ok{color:#227722}.bad{color:#b00}.warn{color:#a60}
img.plot{width:100%;height:auto;display:block;margin:.4em 0}
details{margin:.8em 0}summary{cursor:pointer;color:#345}
.wide{max-width:100%;overflow-x:auto}
.groups{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}
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
    import matplotlib

    with matplotlib.rc_context(RC):
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

    out = [
        "<div class='wide'><table><tr>"
        + "".join(cell("th", i, h) for i, h in enumerate(header))
        + "</tr>"
    ]
    for r in rows:
        out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


class _Raw(str):
    """HTML that is not escaped again."""


def _headline(sentences: list[str]) -> str:
    text = " ".join(x for x in sentences if x)
    return f"<p class='headline'>{html.escape(text)}</p>"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img class='plot' alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


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


def _run_body(d: Path) -> str:
    import pandas as pd

    from overcommit.report_text import run_headline

    summary = json.loads((d / "summary.json").read_text())
    sc = summary.get("scenario") or {}
    name = sc.get("name", d.name)
    events = _read_events(d, summary)
    hosts_path, guests_path = d / "hosts.parquet", d / "guests.parquet"
    guests = pd.read_parquet(guests_path) if guests_path.is_file() else None
    parts = [
        f"<h1>{html.escape(name)} · {html.escape(str(summary.get('mechanism')))} · seed "
        f"{summary.get('seed')}</h1>",
        _aborted_banner(summary),
        _headline(run_headline(summary, events, guests)),
        _verdict(summary),
    ]
    if guests is not None:
        parts += ["<h2>Guest progress</h2>", _progress(guests, sc, events)]
    if hosts_path.is_file():
        parts += ["<h2>Host memory</h2>", _host_memory(pd.read_parquet(hosts_path), sc)]
    parts += ["<h2>Totals</h2>", _totals(summary)]
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
    cols = 2 if len(shown) > 3 else 1
    rows = math.ceil(len(shown) / cols)
    fig = _figure(WIDTH, 2.6 * rows + 0.9)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    handles = None
    for ax, host in zip(axes, shown):
        h = hosts[hosts["host"] == host]
        h = h.iloc[:: _thin(len(h))]
        cols_ = [(c, label, color) for c, label, color in HOST_STACK if c in h]
        ys = [h[c].to_numpy() * page / 2**20 for c, _, _ in cols_]
        polys = ax.stackplot(
            h["t"].to_numpy(),
            *ys,
            labels=[label for _, label, _ in cols_],
            colors=[color for _, _, color in cols_],
            linewidth=0,
        )
        handles = handles or (polys, [label for _, label, _ in cols_])
        ax.set_ylabel("MiB")
        ax.set_title(host, loc="left")
        ax.margins(x=0)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    if handles:
        fig.legend(*handles, loc="outside upper center", ncols=len(handles[1]), frameon=False)
    for ax in axes[-cols:]:
        ax.set_xlabel("emulated time (s)")
    note = ""
    if len(names) > len(shown):
        note = f"<p>First {len(shown)} of {len(names)} hosts shown.</p>"
    return _img(fig, "host memory by use over time") + note


def guest_panels(last_host: dict[str, str]) -> list[tuple[str, list[str]]]:
    """The progress plot's panels as (title, guests): one per guest (guest -> the host it ran
    on at the end, in order), or with more than MAX_GUEST_PANELS guests one per host. Every
    guest is in exactly one panel."""
    if len(last_host) <= MAX_GUEST_PANELS:
        return [(f"{g} (on {h} at the end)", [g]) for g, h in last_host.items()]
    by_host: dict[str, list[str]] = {}
    for g, h in last_host.items():
        by_host.setdefault(h, []).append(g)
    return [(f"{h}: {len(gs)} guests", gs) for h, gs in by_host.items()]


def _progress(guests: Any, sc: dict, events: list[dict]) -> str:
    """Guest progress over time: a panel per guest (no guest hides behind another), or with
    more than MAX_GUEST_PANELS guests a panel per host with the mean, the min–max band and the
    slowest guest; event markers in every panel, one legend above."""
    import numpy as np

    epoch = float(sc.get("epoch", 0.1))
    duration = float(guests["t"].max() + epoch) if len(guests) else 0.0
    w = max(1, round(max(float(sc.get("sync_window", 1.0)), duration / 60) / epoch))
    names = list(dict.fromkeys(guests["guest"]))
    series: dict[str, tuple[Any, Any]] = {}
    last_host: dict[str, str] = {}
    for g in names:
        x = guests[guests["guest"] == g]
        work = x["work_s"].rolling(w, min_periods=1).sum().to_numpy()
        alive = (x["alive"] * epoch).rolling(w, min_periods=1).sum().to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            series[g] = (x["t"].to_numpy(), np.where(alive > 0, work / alive, np.nan))
        hosts = x["host"][x["alive"] > 0] if "alive" in x else x["host"]
        last_host[g] = str(hosts.iloc[-1]) if len(hosts) else str(x["host"].iloc[-1])
    panels = guest_panels(last_host)
    cols = 1 if len(panels) == 1 else 2 if len(panels) in (2, 4) else 3
    rows = math.ceil(len(panels) / cols)
    fig = _figure(WIDTH, (3.2 if rows == 1 else 2.3) * rows + 1.0)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    legend: dict[str, Any] = {}
    marks = [e for e in events if marker_color(e["kind"])][:MAX_MARKERS]
    for ax, (title, gs) in zip(axes, panels):
        if len(gs) == 1:
            t, p = series[gs[0]]
            k = _thin(len(t))
            (line,) = ax.plot(t[::k], p[::k], linewidth=1.6, color="#1f4e9c")
            legend.setdefault("guest progress", line)
        else:
            t = series[gs[0]][0]
            n = min(len(series[g][1]) for g in gs)
            stack = np.vstack([series[g][1][:n] for g in gs])
            t, k = t[:n], _thin(n)
            band = ax.fill_between(
                t[::k],
                np.nanmin(stack, axis=0)[::k],
                np.nanmax(stack, axis=0)[::k],
                alpha=0.25,
                color="#1f4e9c",
            )
            (mean,) = ax.plot(t[::k], np.nanmean(stack, axis=0)[::k], color="#1f4e9c")
            slow = gs[int(np.nanargmin(np.nanmean(stack, axis=1)))]
            (low,) = ax.plot(t[::k], series[slow][1][:n][::k], color="#d62728", linewidth=1)
            legend.setdefault("min–max over the host's guests", band)
            legend.setdefault("mean", mean)
            legend.setdefault("slowest guest", low)
            title += f" (slowest {slow})"
        for e in marks:
            kind = e["kind"]
            lv = ax.axvline(e["t"], color=marker_color(kind), linestyle="--", linewidth=1.1)
            legend.setdefault(kind, lv)
        ax.set_title(title, loc="left")
        ax.set_ylim(-0.02, 1.05)
        ax.margins(x=0)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("progress")
    for ax in axes[max(0, len(panels) - cols) : len(panels)]:  # the lowest panel of each column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("emulated time (s)")
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="outside upper center",
        ncols=min(len(legend), 6),
        frameon=False,
        title=f"progress: work over alive time in a {w * epoch:g} s window",
    )
    return _img(fig, "guest progress over time with event markers")


def _totals(summary: dict) -> str:
    """The totals in human units, grouped; every other total folded into <details>."""
    from overcommit.report_text import STALL_WORDS, grouped_totals, human

    page = int((summary.get("scenario") or {}).get("page_size", 4096))
    t = summary.get("totals", {})
    groups, rest = grouped_totals(t)
    out = ["<div class='groups'>"]
    for group, rows in groups.items():
        if group == "work":
            by = t.get("stall_by_source") or {}
            total = sum(v for v in by.values() if v) or 1.0
            rows = list(rows) + [
                (f"stall: {STALL_WORDS.get(k, k)}", (k, v, v / total))
                for k, v in sorted(by.items(), key=lambda kv: -(kv[1] or 0))
                if v and v / total >= 0.01
            ]
        if not rows:
            continue
        cells = []
        for k, v in rows:
            if isinstance(v, tuple):
                cells.append([k, f"{human('stall_seconds', v[1])} ({v[2] * 100:.0f}%)"])
            else:
                cells.append([k, human(k, v, page)])
        out.append(f"<div><h3>{html.escape(group)}</h3>{_table(['figure', 'value'], cells)}</div>")
    out.append("</div>")
    out.append(
        f"<details><summary>all other totals ({len(rest)})</summary>"
        + _table(["figure", "value"], [[k, human(k, v, page)] for k, v in rest])
        + "</details>"
    )
    return "\n".join(out)


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
    from overcommit.report_text import compare_headline

    parts = [
        f"<h1>{label} · {html.escape(str(report.get('scenario')))}</h1>",
        _headline(compare_headline(report, label)),
        f"<p>{len(mechs)} mechanism(s), seeds {html.escape(str(report.get('seeds')))}; bars "
        "are means, error bars the 95% confidence interval (with several seeds).</p>",
    ]
    if mechs and figs:
        cols = 2
        rows_n = math.ceil(len(figs) / cols)
        tall = max(len(m) for m in mechs) * 0.09  # room for the rotated mechanism names
        fig = _figure(WIDTH, 0.6 + (2.4 + tall) * rows_n)
        axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
        names = list(mechs)
        for ax, f in zip(axes, figs):
            means = [_float(mechs[m]["mean"].get(f)) for m in names]
            errs = [(mechs[m].get("ci95") or {}).get(f) for m in names]
            scale, unit = _unit_of(f, means)
            means = [v * scale for v in means]
            yerr = [e * scale if e is not None else 0.0 for e in errs] if any(errs) else None
            ax.bar(range(len(names)), means, yerr=yerr, capsize=4, color="#4c72b0")
            note = ", modelled per fault" if f.startswith("fault_latency") else ""
            ax.set_title(f + (f" ({unit}{note})" if unit or note else ""), loc="left")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right")
        for ax in axes[len(figs) :]:
            ax.set_visible(False)
        parts.append(_img(fig, "compared figures per mechanism with 95% confidence intervals"))
    header = ["mechanism", *figs, "verdict"]
    rows = []
    for m, v in mechs.items():
        row: list[Any] = [m]
        for f in figs:
            mean, half = v["mean"].get(f), (v.get("ci95") or {}).get(f)
            row.append(_cell(f, mean) + (f" ± {_cell(f, half)}" if half is not None else ""))
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


def _cell(name: str, v: Any) -> str:
    """A compared figure in human units (progress as a plain fraction)."""
    from overcommit.report_text import human

    if name == "progress" and v is not None:
        return f"{v:.3f}"
    return human(name, v, None)


def _unit_of(name: str, values: list[float]) -> tuple[float, str]:
    """(scale, unit) to plot a compared figure in: seconds as ms or µs when small."""
    finite = [abs(v) for v in values if not math.isnan(v)]
    top = max(finite) if finite else 0.0
    if "bytes" in name:
        return (2**-30, "GiB") if top >= 2**30 else (2**-20, "MiB")
    if "latency" in name or name.endswith("_seconds"):
        if 0 < top < 1e-3:
            return 1e6, "µs"
        if 0 < top < 1:
            return 1e3, "ms"
        return 1.0, "s"
    return 1.0, ""


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
    from overcommit.capacity import answer_lines
    from overcommit.report_text import sweep_headline

    answers_text = answer_lines(meta) if meta.get("answers") else []
    parts = [
        f"<h1>sweep · {html.escape(str(meta.get('scenario')))}</h1>",
        _headline(sweep_headline(meta, answers_text)),
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
    fig = _figure(WIDTH, 4.2)
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
    ax.legend(frameon=False, loc="best")
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
    fig = _figure(WIDTH, 3.8 if len(mechs) > 2 else 4.5)
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
        ax.set_xticklabels([_fmt(v) for v in xs])
        ax.set_yticks(range(len(ys)))
        ax.set_yticklabels([_fmt(v) for v in ys])
        ax.set_xlabel(axis)
        ax.set_ylabel(other)
        ax.set_title(m)
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _img(fig, f"{metric} heatmap")
