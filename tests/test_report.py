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


def test_guest_panels_hide_no_guest():
    """Four guests at the same progress are four panels, not one line over another; beyond
    MAX_GUEST_PANELS guests, one panel per host, still every guest in one panel."""
    from overcommit.report import MAX_GUEST_PANELS, guest_panels

    four = {f"g-{i}": "host-1" for i in range(1, 5)}
    panels = guest_panels(four)
    assert [gs for _, gs in panels] == [["g-1"], ["g-2"], ["g-3"], ["g-4"]]
    assert all("host-1" in title for title, _ in panels)
    many = {f"g-{i}": f"host-{i % 3}" for i in range(MAX_GUEST_PANELS + 6)}
    panels = guest_panels(many)
    assert len(panels) == 3
    assert sorted(g for _, gs in panels for g in gs) == sorted(many)


def test_human_units():
    from overcommit.report_text import duration, human, size

    assert duration(0.001122) == "1.12 ms" and duration(5.012e-07) == "501 ns"
    assert duration(3.4e-05) == "34 µs" and duration(68.1) == "68.1 s" and duration(0) == "0"
    assert duration(200) == "3 min 20 s"
    assert size(380 * 2**20) == "380 MiB" and size(2 * 2**30) == "2 GiB"
    assert size(1000 * 2**20) == "0.98 GiB" and size(512) == "512 B"
    assert human("fault_latency_p99", 0.001122) == "1.12 ms"
    assert human("progress", 0.440277) == "0.440 (44.0%)"
    assert human("disk_reads", 292486) == "292,486 (1.12 GiB)"
    assert human("disk_reads", 292486, None) == "292,486"
    assert human("reclaimed_bytes", 2**31) == "2 GiB"
    assert human("host_failures", 1) == "1"


def test_run_report_headline_groups_and_units(eventful, tmp_path):
    """The run page opens with a headline naming the mechanism, guests, progress and the main
    stall source; totals come in groups in human units, the rest folded into <details>."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [*CLI, "run", str(eventful), "--out", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    page = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    head = page.split("<p class='headline'>", 1)[1].split("</p>", 1)[0]
    assert head.startswith("frontswap with 2 guests on 1 host over 6 emulated seconds"), head
    assert f"progress {summary['totals']['progress']:.2f}" in head, head
    assert "of it " in head  # the main stall source
    for group in ("work", "memory traffic"):
        assert f"<h3>{group}</h3>" in page, group
    assert "<details><summary>all other totals" in page
    p99 = summary["totals"]["fault_latency"]["p99"]
    assert f"{p99:.4g}" not in page  # no raw seconds
    from overcommit.report_text import duration

    assert duration(p99) in page
