"""report.html for run, compare and sweep directories: valid HTML, nothing fetched from
elsewhere, and every embedded figure a real, non-blank PNG."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from overcommit.report import ReportError, marker_color, write_report

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "overcommit"]

# Two guests on one host; the host freezes its tmem at 2 s and thaws it at 4 s: both are
# drawn as markers on the progress plot.
EVENTFUL = """
name: eventful
seed: 1
duration: 6s
epoch: 100ms
sync_window: 500ms
runtime: {kind: inline}
mechanism: frontswap
hosts: {ram: 320MiB, reserve: 32MiB}
guests:
  - name: g
    count: 2
    memory: 64MiB
    maxmem: 96MiB
    workload: {kind: zipf, working_set: 96MiB, access_rate: 40k/s, write_fraction: 0.3}
events:
  - {at: 2s, tmem_freeze: host-1}
  - {at: 4s, tmem_thaw: host-1}
"""


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_report(path: Path, min_images: int) -> str:
    """Parse the page, refuse external references, decode every image; returns the text."""
    html = path.read_text()
    parser = _Collector()
    parser.feed(html)
    parser.close()
    tags = [t for t, _ in parser.tags]
    assert tags[:1] == ["html"] and "body" in tags
    images = 0
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name, value in attrs.items():
            if name in ("src", "href", "data", "poster") and value:
                assert not value.startswith(("http:", "https:", "//", "ftp:", "file:")), value
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,")
            img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            assert img.format == "PNG"
            pixels = np.asarray(img.convert("L"), dtype=float)
            assert pixels.shape[0] > 50 and pixels.shape[1] > 50
            assert pixels.var() > 100, "blank figure"
            images += 1
    assert "url(" not in html and "@import" not in html
    assert images >= min_images
    return " ".join(parser.text)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def eventful(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rep")
    config = d / "eventful.yaml"
    config.write_text(EVENTFUL)
    return config


def test_run_writes_report_by_default(eventful, tmp_path):
    out = tmp_path / "run"
    proc = cli("run", str(eventful), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    text = check_report(out / "report.html", min_images=2)
    assert "tmem_freeze" in text and "tmem_thaw" in text  # the marked events
    assert "conservation" in text and "progress" in text
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert {"tmem_freeze", "tmem_thaw"} <= {e["kind"] for e in events}

    again = tmp_path / "quiet"
    proc = cli("run", str(eventful), "--out", str(again), "--quiet", "--no-report")
    assert proc.returncode == 0 and not (again / "report.html").exists()
    # the report command writes it afterwards, for any run directory
    proc = cli("report", str(again))
    assert proc.returncode == 0, proc.stderr
    check_report(again / "report.html", min_images=2)


def test_compare_report_has_bars_with_confidence_intervals(eventful, tmp_path):
    out = tmp_path / "cmp"
    proc = cli(
        "compare", str(eventful), "--mechanisms", "none,frontswap", "--seeds", "2",
        "--duration", "5s", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = check_report(out / "report.html", min_images=3)  # bars, and each one's progress
    assert "±" in text and "frontswap" in text and "none" in text


def test_sweep_report(eventful, tmp_path):
    out = tmp_path / "sw"
    proc = cli(
        "sweep", str(eventful), "--grid", "guests.0.count=1,2", "--grid",
        "guests.0.maxmem=64MiB,96MiB", "--mechanisms", "none,frontswap", "--duration", "5s",
        "--goal", "progress >= 0.5", "--parallel", "2", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = check_report(out / "report.html", min_images=2)  # the curve and the heatmap
    assert "progress &gt;= 0.5" in (out / "report.html").read_text()
    assert "8 planned" in text


def test_report_of_a_directory_without_results_is_exit_2(tmp_path):
    with pytest.raises(ReportError, match="not a run, compare, drill or sweep directory"):
        write_report(tmp_path)
    proc = cli("report", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_marker_kinds():
    assert marker_color("fail_host") and marker_color("migrate_start")
    assert marker_color("migration_abort") and marker_color("restart")
    assert marker_color("boot") is None
