"""A game day's live dashboard: one page with report.html's run plots, updated as the day runs.

`Dashboard` serves two things over HTTP (aiohttp) on 127.0.0.1, from the process of the day's
driver (`overcommit.gameday.GameDayDriver`), so it lives exactly as long as the day:

- `/` the page: per-host memory stacked by use over time, guest progress over time (a panel
  per guest, or per host beyond MAX_GUEST_PANELS guests: mean, min–max band, slowest guest)
  with a vertical line at every marked event, the hosts' state and the event log, newest
  first. It fetches `/data` every second and draws the plots itself as inline SVG: no script,
  style sheet or font is fetched from anywhere else;
- `/data` the same as JSON, built by `data()` from the run's time series so far (the complete
  windows only) and its event log.

Every request needs the token in its query (`?token=...`, a random one per day, in the URL
`up` and `status` print); without it the answer is 403. The palette and the plots follow
`overcommit.report` (tests check the colours are the same).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import secrets
import socket
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from overcommit.cluster.live import LiveControl, LiveNodes, events_so_far
from overcommit.metrics import HOST_STACK, MARKER_KINDS, MIGRATION_COLOR, marker_color  # noqa: F401

MAX_POINTS = 400  # time-series points per line on the page
MAX_GUEST_PANELS = 24  # as report.html: more guests, one panel per host
MAX_EVENTS = 200  # newest events listed on the page
MAX_MARKERS = 200


def _round(values: np.ndarray, digits: int = 3) -> list[float | None]:
    return [None if not math.isfinite(v) else round(float(v), digits) for v in values]


def _rolling(x: np.ndarray, w: int) -> np.ndarray:
    """Sum over the last `w` rows (fewer at the start), along axis 0."""
    c = np.cumsum(x, axis=0)
    out = c.copy()
    out[w:] -= c[:-w]
    return out


def data(control: LiveControl, sc: Any, status: dict, nodes: LiveNodes | None = None) -> dict:
    """What the page shows: `status` (the driver's status without the per-guest details),
    the time series up to the last complete window, thinned to MAX_POINTS, and the events."""
    rec = control.recorder
    n = int(control.snapshot["epoch"]) if rec is not None else 0
    hosts = list(sc.host_names())
    out: dict[str, Any] = {
        "status": status,
        "epoch": n,
        "t": [],
        "stack": [{"col": c, "label": label, "color": color} for c, label, color in HOST_STACK],
        "hosts": [],
        "panels": [],
        "markers": [],
        "events": [],
    }
    snap_hosts = control.snapshot.get("hosts", {})
    if rec is None or n == 0:
        out["hosts"] = [{"name": h, "up": True, "series": {}} for h in hosts]
        return out
    dt = float(rec.dt)
    step = max(1, math.ceil(n / MAX_POINTS))
    idx = np.arange(n - 1, -1, -step)[::-1]  # the newest epoch is always drawn
    out["t"] = _round(idx * dt, 6)  # each epoch's start, as hosts.parquet's `t`
    mib = float(sc.page_size) / 2**20
    for j, h in enumerate(rec.host_names):
        series = {c: _round(rec.h[c][idx, j] * mib, 2) for c, _, _ in HOST_STACK if c in rec.h}
        up = snap_hosts.get(h, {}).get("up", True)
        out["hosts"].append({"name": h, "up": bool(up), "series": series})
    # progress: work over alive time in a moving window, as report.html draws it
    w = max(1, round(max(float(sc.sync_window), n * dt / 60) / dt))
    work = _rolling(rec.g["work_s"][:n], w)
    alive = _rolling(rec.g["alive"][:n] * dt, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        prog = np.where(alive > 0, work / alive, np.nan)
    out["window_seconds"] = round(w * dt, 6)
    snap_guests = control.snapshot.get("guests", {})
    last_host: dict[str, str] = {}
    for i, g in enumerate(rec.guest_names):
        on = snap_guests.get(g, {}).get("host")
        if on is None:  # down: the host it last ran on
            ran = rec.ghost[:n, i]
            ran = ran[ran >= 0]
            on = rec.host_names[int(ran[-1])] if len(ran) else rec.guest_host[i]
        last_host[g] = on
    gi = {g: i for i, g in enumerate(rec.guest_names)}
    if len(last_host) <= MAX_GUEST_PANELS:
        for g, h in last_host.items():
            out["panels"].append(
                {
                    "title": f"{g} (on {h})",
                    "guests": [g],
                    "lines": {"progress": _round(prog[idx, gi[g]])},
                }
            )
    else:
        by_host: dict[str, list[str]] = {}
        for g, h in last_host.items():
            by_host.setdefault(h, []).append(g)
        for h, gs in by_host.items():
            p = prog[:, [gi[g] for g in gs]]
            with np.errstate(invalid="ignore"), _quiet_nan():
                means = np.nanmean(p, axis=0)
                slow = gs[int(np.nanargmin(means))] if np.isfinite(means).any() else gs[0]
                lines = {
                    "min": _round(np.nanmin(p, axis=1)[idx]),
                    "max": _round(np.nanmax(p, axis=1)[idx]),
                    "mean": _round(np.nanmean(p, axis=1)[idx]),
                    "slowest": _round(prog[idx, gi[slow]]),
                }
            out["panels"].append(
                {"title": f"{h}: {len(gs)} guests (slowest {slow})", "guests": gs, "lines": lines}
            )
    events = events_so_far(control, nodes)
    marks = [e for e in events if marker_color(e["kind"])][:MAX_MARKERS]
    out["markers"] = [
        {"t": e["t"], "kind": e["kind"], "color": marker_color(e["kind"])} for e in marks
    ]
    out["events"] = [_event_row(e) for e in events[-MAX_EVENTS:][::-1]]
    out["events_total"] = len(events)
    return out


class _quiet_nan:
    """numpy warns on all-NaN slices (a host whose guests are all down); they draw nothing."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


def _event_row(e: dict) -> dict:
    skip = ("t", "epoch", "kind")
    text = ", ".join(f"{k}={_short(v)}" for k, v in e.items() if k not in skip)
    return {"t": e["t"], "kind": e["kind"], "text": text}


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= 80 else s[:77] + "..."


class Dashboard:
    """The page and its data on 127.0.0.1, served by aiohttp from a thread of this process.

    `payload()` builds `/data`'s JSON object on every request."""

    def __init__(self, payload: Callable[[], dict], title: str, host: str = "127.0.0.1") -> None:
        self.payload = payload
        self.title = title
        self.host = host
        self.token = secrets.token_urlsafe(18)
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Serve in a daemon thread; returns the page's URL (with its token)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        port = sock.getsockname()[1]
        started = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            from aiohttp import web

            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
                loop.run_until_complete(self._runner.setup())
                loop.run_until_complete(web.SockSite(self._runner, sock).start())
            except BaseException as exc:  # reported by start()
                failed.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="dashboard", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or failed:
            sock.close()
            raise RuntimeError(f"the dashboard did not start: {failed[0] if failed else 'timeout'}")
        self.url = f"http://{self.host}:{port}/?token={self.token}"
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; the port closes."""
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        try:
            fut.result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)

    def _app(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def need_token(request: web.Request, handler: Any) -> web.StreamResponse:
            given = request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.Response(
                    status=403, text="403: this page needs its token (?token=...)\n"
                )
            return await handler(request)

        async def page(request: web.Request) -> web.Response:
            body = PAGE.replace("__TITLE__", _html_escape(self.title))
            return web.Response(text=body, content_type="text/html", headers=_NO_CACHE)

        async def data_(request: web.Request) -> web.Response:
            body = json.dumps(self.payload(), allow_nan=False)
            return web.Response(text=body, content_type="application/json", headers=_NO_CACHE)

        app = web.Application(middlewares=[need_token])
        app.router.add_get("/", page)
        app.router.add_get("/data", data_)
        return app


_NO_CACHE = {"Cache-Control": "no-store"}


def _html_escape(s: str) -> str:
    import html

    return html.escape(s)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ · live</title>
<style>
body{font-family:sans-serif;margin:1.2em auto;padding:0 1.5em;color:#222;max-width:1400px;
line-height:1.4}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .3em}
#status{font-size:1.05em;margin:.3em 0 .6em}.ok{color:#227722}.bad{color:#b00}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:.6em 1.2em}
.panel h3{font-size:.95em;margin:.2em 0;font-weight:normal}
.panel.down h3{color:#b00}
svg{width:100%;height:auto;display:block;background:#fff}
svg text{font-size:11px;fill:#444}svg .grid line{stroke:#ddd}
.legend span{display:inline-block;margin-right:1em;font-size:.9em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
#events{font-family:monospace;font-size:.88em;max-height:28em;overflow-y:auto;padding-left:0;
list-style:none;border:1px solid #ddd}
#events li{padding:.1em .5em;border-bottom:1px solid #f0f0f0}
#events b{display:inline-block;min-width:11em}
</style></head>
<body data-epoch="-1">
<h1>__TITLE__</h1>
<p id="status">waiting for the first window…</p>
<h2>Host memory by use (MiB)</h2>
<div class="legend" id="stack-legend"></div>
<div class="grid" id="hosts"></div>
<h2>Guest progress</h2>
<div class="legend" id="marker-legend"></div>
<div class="grid" id="panels"></div>
<h2>Event log <small id="events-count"></small></h2>
<ol id="events"></ol>
<script>
"use strict";
const W = 640, H = 200, L = 46, R = 8, T = 8, B = 24;
const NS = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function nice(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}
function frame(xmax, ymax, yticks) {
  const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none"});
  const sx = x => L + (W - L - R) * x / xmax, sy = y => H - B - (H - B - T) * y / ymax;
  const g = el("g", {class: "grid"});
  for (const y of yticks) {
    g.appendChild(el("line", {x1: L, x2: W - R, y1: sy(y), y2: sy(y)}));
    svg.appendChild(el("text", {x: L - 4, y: sy(y) + 4, "text-anchor": "end"}, String(y)));
  }
  const dx = nice(xmax / 6);
  for (let x = 0; x <= xmax + 1e-9; x += dx) {
    g.appendChild(el("line", {x1: sx(x), x2: sx(x), y1: T, y2: H - B}));
    const label = String(+x.toFixed(3));
    svg.appendChild(el("text", {x: sx(x), y: H - 6, "text-anchor": "middle"}, label));
  }
  svg.insertBefore(g, svg.firstChild);
  return [svg, sx, sy];
}
function pts(ts, ys, sx, sy) {
  const out = [];
  ts.forEach((t, i) => {
    if (ys[i] !== null) out.push(`${sx(t).toFixed(1)},${sy(ys[i]).toFixed(1)}`);
  });
  return out;
}
function hostPanel(h, d, xmax) {
  const div = document.createElement("div");
  div.className = "panel host" + (h.up ? "" : " down");
  div.dataset.host = h.name; div.dataset.up = h.up;
  div.appendChild(Object.assign(document.createElement("h3"),
    {textContent: h.name + (h.up ? "" : " — down")}));
  const cols = d.stack.filter(s => h.series[s.col]);
  const n = d.t.length, base = new Array(n).fill(0);
  let ymax = 0;
  const tops = cols.map(s => { const top = base.map((b, i) => b + (h.series[s.col][i] || 0));
    top.forEach((v, i) => base[i] = v); ymax = Math.max(ymax, ...top); return top; });
  const step = nice((ymax || 1) / 4);
  ymax = Math.ceil((ymax || 1) / step) * step;
  const ticks = [];
  for (let y = 0; y <= ymax + 1e-9; y += step) ticks.push(+y.toFixed(6));
  const [svg, sx, sy] = frame(xmax, ymax, ticks);
  const below = new Array(n).fill(0);
  cols.forEach((s, k) => {
    const up = pts(d.t, tops[k], sx, sy), down = pts(d.t, below, sx, sy).reverse();
    svg.appendChild(el("polygon", {class: "area", "data-col": s.col, fill: s.color,
      points: up.concat(down).join(" ")}));
    tops[k].forEach((v, i) => below[i] = v);
  });
  svg.dataset.n = n;
  div.appendChild(svg);
  return div;
}
const LINE = {progress: ["#1f4e9c", 1.6], mean: ["#1f4e9c", 1.6], slowest: ["#d62728", 1],
              min: ["#1f4e9c", 0.5], max: ["#1f4e9c", 0.5]};
function guestPanel(p, d, xmax) {
  const div = document.createElement("div");
  div.className = "panel guest"; div.dataset.guests = p.guests.join(" ");
  div.appendChild(Object.assign(document.createElement("h3"), {textContent: p.title}));
  const [svg, sx, sy] = frame(xmax, 1.05, [0, 0.5, 1]);
  for (const m of d.markers) {
    svg.appendChild(el("line", {class: "marker", "data-kind": m.kind, x1: sx(m.t), x2: sx(m.t),
      y1: T, y2: H - B, stroke: m.color, "stroke-dasharray": "5,4", "stroke-width": 1.2}));
  }
  for (const name in p.lines) {
    const [color, width] = LINE[name];
    const line = el("polyline", {class: "line " + name, fill: "none", stroke: color,
      "stroke-width": width, points: pts(d.t, p.lines[name], sx, sy).join(" ")});
    line.dataset.n = p.lines[name].filter(v => v !== null).length;
    svg.appendChild(line);
  }
  div.appendChild(svg);
  return div;
}
function legend(id, items) {
  const box = document.getElementById(id);
  box.replaceChildren(...items.map(([label, color]) => {
    const s = document.createElement("span");
    const i = document.createElement("i"); i.style.background = color;
    s.append(i, label); return s; }));
}
function render(d) {
  const s = d.status, ok = s.checks.valid;
  const st = document.getElementById("status");
  st.innerHTML = "";
  st.append(`${s.scenario} · ${s.mechanism} · seed ${s.seed} · ${s.state} · ` +
    `${s.t.toFixed(1)} s / ${s.horizon} s emulated · pace ${s.pace} · checkers `);
  const v = document.createElement("span");
  v.className = ok ? "ok" : "bad";
  v.textContent = ok ? "ok" : "FAILED: " + s.checks.failed.join(", ");
  st.append(v);
  if (s.error) st.append(" · error: " + s.error);
  const xmax = Math.max(d.t.length ? d.t[d.t.length - 1] : 1, 1e-3);
  legend("stack-legend", d.stack.map(x => [x.label, x.color]));
  document.getElementById("hosts").replaceChildren(...d.hosts.map(h => hostPanel(h, d, xmax)));
  document.getElementById("panels").replaceChildren(...d.panels.map(p => guestPanel(p, d, xmax)));
  const kinds = {};
  d.markers.forEach(m => kinds[m.kind] = m.color);
  legend("marker-legend", [["guest progress (work over alive time in a " +
    (d.window_seconds || 0) + " s window)", "#1f4e9c"], ...Object.entries(kinds)]);
  document.getElementById("events").replaceChildren(...d.events.map(e => {
    const li = document.createElement("li");
    li.dataset.kind = e.kind;
    const b = document.createElement("b");
    b.textContent = `${e.t.toFixed(1)} s ${e.kind}`;
    li.append(b, " " + e.text); return li; }));
  document.getElementById("events-count").textContent =
    d.events_total ? `(${d.events_total} events, newest first)` : "";
  document.body.dataset.epoch = d.epoch;
  document.body.dataset.state = s.state;
}
async function tick() {
  try {
    const r = await fetch("data" + location.search, {cache: "no-store"});
    if (r.ok) render(await r.json());
  } catch (e) {
    document.getElementById("status").textContent = "the day is gone (" + e + ")";
    return;
  }
  setTimeout(tick, 1000);
}
tick();
</script>
</body></html>
"""
