"""The live dashboard without Ray: its data from a real (inline) run driven by a LiveControl,
its server's token check, and its palette against report.html's.

The page in a browser, served by a real game day's driver, is tests/test_gameday_browser.py.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from overcommit import dashboard, report
from overcommit.cluster.engine import run_scenario
from overcommit.cluster.live import LiveControl
from overcommit.config import load_scenario_text

SCENARIO = """
name: dash
seed: 3
duration: 8s
epoch: 100ms
sync_window: 1s
runtime: {kind: inline}
mechanism: frontswap
placement: balanced
hosts: {count: 2, ram: 256MiB, reserve: 32MiB}
ha: {detection: 1s}
guests:
  - name: g
    count: 3
    memory: 48MiB
    maxmem: 64MiB
    swap: 64MiB
    workload: {kind: zipf, working_set: 56MiB, access_rate: 5k/s, skew: 0.3}
events:
  - {at: 3s, fail_host: host-2}
"""


@pytest.fixture(scope="module")
def live_run():
    sc = load_scenario_text(SCENARIO, "dash.yaml")
    control = LiveControl(None)
    result = run_scenario(sc, live=control)
    return sc, control, result


def test_palette_is_report_html_s():
    assert dashboard.HOST_STACK == report.HOST_STACK
    assert dashboard.MARKER_KINDS == report.MARKER_KINDS
    assert dashboard.MIGRATION_COLOR == report.MIGRATION_COLOR


def test_data_has_every_host_guest_and_event(live_run):
    sc, control, result = live_run
    d = dashboard.data(control, sc, {"state": "finished"})
    json.dumps(d, allow_nan=False)  # what the server sends
    assert d["epoch"] == 80 and d["t"][-1] == pytest.approx(7.9)
    assert len(d["t"]) == 80  # under MAX_POINTS: every epoch
    assert [h["name"] for h in d["hosts"]] == ["host-1", "host-2"]
    up = {h["name"]: h["up"] for h in d["hosts"]}
    assert up == {"host-1": True, "host-2": False}
    h1 = d["hosts"][0]["series"]
    assert set(h1) >= {"reserve_pages", "guest_frames", "tmem_pages", "free_pages"}
    assert all(len(v) == 80 for v in h1.values())
    assert h1["reserve_pages"][-1] == pytest.approx(32.0)  # MiB
    # host-2 failed at 3 s: its guest frames drop to nothing
    h2 = d["hosts"][1]["series"]["guest_frames"]
    assert h2[20] > 0 and h2[-1] == 0
    guests = [g for p in d["panels"] for g in p["guests"]]
    assert sorted(guests) == ["g-1", "g-2", "g-3"]
    for p in d["panels"]:
        prog = [v for v in p["lines"]["progress"] if v is not None]
        assert prog and all(0 <= v <= 1.0 + 1e-9 for v in prog)
    kinds = [m["kind"] for m in d["markers"]]
    assert "fail_host" in kinds and "ha_restart" in kinds
    fail = next(m for m in d["markers"] if m["kind"] == "fail_host")
    assert fail["t"] == pytest.approx(3.0) and fail["color"] == report.MARKER_KINDS["fail_host"]
    # the event log is the run's, newest first
    assert d["events_total"] == len(result.events)
    assert [e["kind"] for e in d["events"]] == [e["kind"] for e in result.events][::-1]


def test_many_points_are_thinned_keeping_the_newest(live_run):
    sc, control, _ = live_run
    old = dashboard.MAX_POINTS
    dashboard.MAX_POINTS = 30
    try:
        d = dashboard.data(control, sc, {})
    finally:
        dashboard.MAX_POINTS = old
    assert len(d["t"]) <= 30 and d["t"][-1] == pytest.approx(7.9)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_server_needs_the_token_and_stops(live_run):
    sc, control, _ = live_run
    calls = []

    def payload():
        calls.append(threading.current_thread().name)
        return dashboard.data(control, sc, {"state": "finished"})

    dash = dashboard.Dashboard(payload, "dash <test>")
    url = dash.start()
    base, query = url.split("?", 1)
    assert base.startswith("http://127.0.0.1:") and query == f"token={dash.token}"
    assert len(dash.token) >= 20
    try:
        for bad in (base, base + "?token=", base + "?token=" + dash.token[:-1] + "x"):
            assert _get(bad)[0] == 403, bad
            assert _get(bad.replace("/?", "/data?", 1) if "?" in bad else base + "data")[0] == 403
        assert calls == []  # refused before any data was built
        code, body = _get(url)
        assert code == 200
        page = body.decode()
        assert "<title>dash &lt;test&gt; · live</title>" in page
        assert "http" not in page.split("<script>", 1)[1].replace("http://www.w3.org", "")
        code, body = _get(base + "data?" + query)
        assert code == 200 and json.loads(body)["epoch"] == 80 and calls
    finally:
        dash.stop()
    port = int(base.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
