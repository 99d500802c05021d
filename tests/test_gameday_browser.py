"""A game day's live dashboard as a person sees it: the page `up` prints, loaded in headless
Chromium from the day's driver on a real Ray, before and after `inject fail-host`. It shows
every host and every guest, its plots grow as the day runs, and after the injection the failed
host is shown down, a fail_host marker appears on the progress plots and the event log lists
the failure and the restart. Without the token the server answers 403.

Marked `browser`: deselected by default (pyproject's addopts), run with
`python -m pytest -q -m browser`. Without Chromium these tests fail, saying how to install it.
"""

from __future__ import annotations

import html.parser
import io
import json

import pytest
from PIL import Image
from test_gameday import (  # noqa: F401 - ray_head, env and config are fixtures
    assert_gone,
    cli,
    config,
    env,
    pids_of,
    ray_head,
    up,
    wait_for,
)
from test_report_browser import chromium

pytestmark = pytest.mark.browser


class _Elements(html.parser.HTMLParser):
    """Every element's tag and attributes, and the text of each <li>."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.items: list[str] = []
        self._li: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "li":
            self._li = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self._li is not None:
            self.items.append("".join(self._li))
            self._li = None

    def handle_data(self, data: str) -> None:
        if self._li is not None:
            self._li.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict]:
        """Elements with each attribute containing the value (`class_` is `class`,
        `data_kind` is `data-kind`)."""
        want = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            a
            for t, a in self.elements
            if t == tag and all(k in a and v in (a[k] or "") for k, v in want.items())
        ]


def browse(url: str, profile, *args: str, budget: int = 6000) -> str:
    """Chromium headless on the page (it fetches /data, then draws); the DOM it ends with."""
    import subprocess

    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget}",
        "--window-size=1300,1800",
        *(args or ("--dump-dom",)),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def page(url: str, profile) -> _Elements:
    p = _Elements()
    p.feed(browse(url, profile))
    return p


def test_dashboard_updates_after_an_injection(ray_head, env, config, tmp_path):  # noqa: F811
    chromium()  # fail first, with the install line, when there is no browser
    assert up(env, config, ray_head, "web", "--out", tmp_path / "run").returncode == 0
    pids = []
    try:
        st = wait_for(env, "web", lambda s: s["t"] >= 3)
        pids = pids_of(st)
        url = st["dashboard"]
        base = url.split("?", 1)[0]
        assert "403" in browse(base, tmp_path / "p0")  # no token, no page

        before = page(url, tmp_path / "p1")
        (body,) = before.find("body")
        assert int(body["data-epoch"]) > 0 and body["data-state"] == "running"
        hosts = {a["data-host"]: a for a in before.find("div", class_="panel host")}
        assert sorted(hosts) == ["host-1", "host-2", "host-3"]
        assert all(a["data-up"] == "true" for a in hosts.values())
        assert len(before.find("polygon", class_="area")) >= 3 * 4  # stacked uses per host
        guests = sorted(a["data-guests"] for a in before.find("div", class_="panel guest"))
        assert guests == ["g-1", "g-2", "g-3"]
        n_before = [int(a["data-n"]) for a in before.find("polyline", class_="progress")]
        assert len(n_before) == 3 and min(n_before) >= 20
        lines_before = [a["points"] for a in before.find("polyline", class_="progress")]
        (svg,) = before.find("svg", data_n="")[:1]  # a host panel's plot: its time points
        t_before = int(svg["data-n"])
        assert before.find("line", class_="marker", data_kind="fail_host") == []
        assert not any("fail_host" in li for li in before.items)

        cli(env, "inject", "web", "fail-host", "host-1", check=0)
        wait_for(env, "web", lambda s: s["guests"]["g-1"]["restarts"] >= 1)

        after = page(url, tmp_path / "p2")
        (body2,) = after.find("body")
        assert int(body2["data-epoch"]) > int(body["data-epoch"])
        hosts2 = {a["data-host"]: a for a in after.find("div", class_="panel host")}
        assert sorted(hosts2) == ["host-1", "host-2", "host-3"]
        assert hosts2["host-1"]["data-up"] == "false" and "down" in hosts2["host-1"]["class"]
        assert hosts2["host-2"]["data-up"] == "true"
        # the plots moved on: more time points, every progress line redrawn
        (svg2,) = after.find("svg", data_n="")[:1]
        assert int(svg2["data-n"]) > t_before
        lines_after = [a["points"] for a in after.find("polyline", class_="progress")]
        assert len(lines_after) == 3
        assert all(a != b for a, b in zip(lines_after, lines_before))
        assert len(after.find("line", class_="marker", data_kind="fail_host")) == 3  # per panel
        assert after.find("line", class_="marker", data_kind="ha_restart")
        items = after.items
        fail = next(li for li in items if " fail_host" in li)
        assert "host=host-1" in fail
        assert any(" ha_restart" in li and "guest=g-1" in li for li in items)
        assert items.index(fail) > next(i for i, li in enumerate(items) if " ha_restart" in li)

        # and it renders: a screenshot with the plots' colours in it
        shot = tmp_path / "live.png"
        browse(url, tmp_path / "p3", f"--screenshot={shot}")
        im = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
        colours = {c for _, c in im.getcolors(maxcolors=1 << 20) or []}
        assert (0x1F, 0x77, 0xB4) in colours and (0xD6, 0x27, 0x28) in colours  # frames, marker
    finally:
        p = cli(env, "down", "web", "--no-report")
        assert p.returncode in (0, 1), p.stderr
    assert_gone(pids)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["totals"]["host_failures"] == 1
