"""report.html as a person sees it: a real run's report (a host failure and its guests'
restarts) loaded in headless Chromium at 1300 px. Every plot has loaded and is not blank, spans
(nearly) the content width, and the headline names the failed host and the restarted guests.

Marked `browser`: deselected by default (pyproject's addopts), run with
`python -m pytest -q -m browser`. Without Chromium these tests fail, saying how to install it.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
INSTALL = (
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver"
)
WIDTH = 1300

#: Reads the laid-out page once everything has loaded and appends it as JSON in <pre id=m>.
MEASURE = """
<script>
window.addEventListener('load', () => {
  const b = document.body, cs = getComputedStyle(b);
  const content = b.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const imgs = [...document.querySelectorAll('img')].map(i => ({
    alt: i.alt, complete: i.complete, natural: i.naturalWidth,
    width: i.getBoundingClientRect().width}));
  const h = document.querySelector('p.headline');
  const pre = document.createElement('pre');
  pre.id = 'm';
  pre.textContent = JSON.stringify({viewport: window.innerWidth, content, imgs,
                                    headline: h ? h.textContent : null});
  b.appendChild(pre);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"Chromium is needed for the browser tests; install it with: {INSTALL}")


def headless(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless on a local file, with nothing fetched from the network."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def failover_run(tmp_path_factory) -> Path:
    """configs/node-death.yaml, short: host-1 fails at 5 s, its guests restart at 15 s."""
    chromium()  # fail first, with the install line, when there is no browser
    out = tmp_path_factory.mktemp("browser") / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "overcommit",
            "run",
            "configs/node-death.yaml",
            "--runtime",
            "inline",
            "--duration",
            "20s",
            "--set",
            "events.0.at=5s",
            "--set",
            "ha.detection=1s",
            "--set",
            "page_size=64KiB",
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: the scenario's hypothesis not met
    assert (out / "report.html").is_file(), proc.stderr
    return out


def test_run_report_in_chromium_at_1300px(failover_run, tmp_path):
    report = (failover_run / "report.html").read_text()
    events = [json.loads(line) for line in (failover_run / "events.jsonl").read_text().splitlines()]
    fails = [e for e in events if e["kind"] == "fail_host"]
    restarts = [e for e in events if e["kind"] == "ha_restart"]
    assert fails and restarts, [e["kind"] for e in events]

    page = tmp_path / "measured.html"
    page.write_text(report.replace("</body>", MEASURE + "</body>"))
    dom = headless(page, tmp_path / "profile", f"--window-size={WIDTH},900", "--dump-dom").stdout
    assert '<pre id="m">' in dom, dom[-2000:]
    import html

    m = json.loads(html.unescape(dom.split('<pre id="m">', 1)[1].split("</pre>", 1)[0]))
    assert m["viewport"] == WIDTH, m["viewport"]
    assert m["content"] > 0.85 * WIDTH, m["content"]  # the page uses the window's width
    assert len(m["imgs"]) >= 2, m["imgs"]  # guest progress and host memory
    for img in m["imgs"]:
        assert img["complete"] and img["natural"] > 0, img
        assert img["width"] >= 0.9 * m["content"], (img, m["content"])

    # what the browser decoded is a real picture: many colours, not one flat fill
    srcs = [s.split("'", 1)[0] for s in report.split("src='data:image/png;base64,")[1:]]
    assert len(srcs) == len(m["imgs"])
    for src in srcs:
        im = Image.open(io.BytesIO(base64.b64decode(src))).convert("RGB")
        assert im.width >= WIDTH * 0.9, im.size  # drawn for the page's width, not scaled up
        colours = im.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 16, f"blank plot: {len(colours)} colours"

    headline = m["headline"]
    assert headline, "no headline"
    f = fails[0]
    assert f"{f['host']} failed at {f['t']:g} s" in headline, headline
    assert "restarted" in headline, headline
    for e in restarts:
        assert e["guest"] in headline and e["host"] in headline, (e, headline)

    # and a screenshot of the whole page renders
    shot = tmp_path / "page.png"
    headless(page, tmp_path / "profile2", f"--window-size={WIDTH},2400", f"--screenshot={shot}")
    im = Image.open(shot).convert("RGB")
    assert im.width == WIDTH and len(im.getcolors(maxcolors=1 << 20) or range(100)) > 16
