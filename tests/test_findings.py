"""`overcommit findings`: every shipped study validates, and a CI-sized study set (two tiny
studies in a test directory, `--quick --seeds 2`) produces findings.md whose sentences carry
the numbers of the runs kept under --out (recomputed here from their summary.json)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from overcommit.findings import (
    STUDIES_DIR,
    _ci_text,
    _vary_points,
    load_studies,
    validate_study,
)

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """\
  name: tiny
  seed: 4
  duration: 3s
  page_size: 64KiB
  runtime: {kind: inline}
  hosts: {ram: 512MiB, reserve: 64MiB}
  shared_storage: {device: san}
  guests:
    - name: app
      count: 2
      memory: 64MiB
      maxmem: 128MiB
      swap: 256MiB
      workload: {kind: zipf, working_set: 112MiB, access_rate: 8k/s, skew: 0.6}
"""

RATIO = f"""\
id: a
question: "Is frontswap better than a host-cached swap disk?"
asked_by: {{name: Avi Kivity, quote: "why not implement this as an ordinary swap device"}}
scenario: |
{SCENARIO}
mechanisms: [frontswap, cached-disk]
answer: {{figure: progress, second: fault_latency_p99, kind: ratio, of: frontswap,
          over: cached-disk}}
assumptions: [devices.san, costs.io_exit]
quick: {{duration: 2s}}
"""

EACH = f"""\
id: b
question: "How much does each mechanism stall a guest?"
asked_by: {{name: Dan Magenheimer, quote: "a synchronous page-oriented pseudo-RAM"}}
scenario: |
{SCENARIO}
mechanisms: [frontswap, none]
answer:
  figure: guests.app-1.stall_seconds
  words: {{guests.app-1.stall_seconds: "stall of app-1|s"}}
assumptions: [devices.san]
quick: {{duration: 2s}}
"""

LATER = """\
id: z
status: not-answered
question: "Is a host RAM disk as good?"
asked_by: {name: Avi Kivity, quote: "an ordinary swap device"}
reason: "no host RAM disk device yet"
"""


def test_every_shipped_study_and_its_scenarios_validate() -> None:
    studies = load_studies(STUDIES_DIR)
    assert len(studies) >= 8
    assert [s.id for s in studies] == sorted({s.id for s in studies})
    for st in studies:
        if st.status != "answered":
            assert st.reason
            continue
        # every point, full and quick, under every mechanism: known and fitting the scenario
        assert validate_study(st) == 2 * len(st.mechanisms) * (
            1 if st.vary is None else len(_vary_points(st.vary))
        )


def test_validate_checks_a_study_file(tmp_path) -> None:
    """`overcommit validate` on a shipped study checks it and every scenario it runs; a study
    whose mechanism is unknown fails with one line and exit 2."""
    ok = subprocess.run(
        [sys.executable, "-m", "overcommit", "validate", str(STUDIES_DIR / "a-xx-for-yy.yaml")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert ok.returncode == 0 and "study a: ok" in ok.stdout, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    text = (STUDIES_DIR / "a-xx-for-yy.yaml").read_text()
    bad.write_text(
        text.replace(
            "mechanisms: [frontswap, cached-disk]", "mechanisms: [frontswap, cached-disk, nope]"
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "overcommit", "validate", str(bad)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "nope" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def findings_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    base = tmp_path_factory.mktemp("findings")
    studies = base / "studies"
    studies.mkdir()
    (studies / "a.yaml").write_text(RATIO)
    (studies / "b.yaml").write_text(EACH)
    (studies / "z.yaml").write_text(LATER)
    (studies / "c.yaml").write_text(EACH.replace("id: b", "id: c"))  # not selected
    out = base / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "overcommit", "findings", "--quick", "--seeds", "2", "--only",
         "a,b,z", "--studies", str(studies), "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    return proc, out


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_findings_writes_each_selected_question_with_numbers(findings_run) -> None:
    proc, out = findings_run
    assert proc.returncode == 0, proc.stderr
    md = (out / "findings.md").read_text()
    assert (out / "findings.html").read_text().startswith("<!DOCTYPE html>")
    doc = json.loads((out / "findings.json").read_text())
    assert [s["id"] for s in doc["studies"]] == ["a", "b", "z"]
    assert "## (a) Is frontswap better than a host-cached swap disk?" in md
    assert "## (b) How much does each mechanism stall a guest?" in md
    assert "(c)" not in md
    assert 'Asked by Avi Kivity: "why not implement this as an ordinary swap device"' in md
    assert "## Not yet answered" in md and "no host RAM disk device yet" in md
    assert "overcommit findings --only a --quick --seeds 2" in md
    assert "| `devices.san` | read 1000 us, write 1000 us, 20000 IOPS, 400 MB/s |" in md
    assert (out / "a.png").stat().st_size > 1000


def test_sentences_carry_the_runs_numbers(findings_run) -> None:
    """Two numbers recomputed from the kept runs: the per-seed progress ratio of frontswap
    over cached-disk (mean and 95% CI over the two seeds) and the mean stall of app-1."""
    proc, out = findings_run
    assert proc.returncode == 0, proc.stderr
    md = (out / "findings.md").read_text()
    answer_a = re.search(r"\*\*Answer\.\*\* (.*)", md.split("## (a)")[1]).group(1)
    answer_b = re.search(r"\*\*Answer\.\*\* (.*)", md.split("## (b)")[1]).group(1)

    ratios = []
    for seed in (4, 5):
        fs = _summary(out / "a" / "all" / f"frontswap-s{seed}")
        cd = _summary(out / "a" / "all" / f"cached-disk-s{seed}")
        assert fs["valid"] and cd["valid"] and fs["seed"] == seed
        ratios.append(fs["totals"]["progress"] / cd["totals"]["progress"])
    mean = sum(ratios) / 2
    half = 12.706 * abs(ratios[0] - ratios[1]) / 2  # t(1) * s / sqrt(2), s = |d| / sqrt(2)
    want = f"frontswap gets {mean:.2f}x ({max(0, mean - half):.2f}–{mean + half:.2f}) the work done"
    assert want in answer_a, (want, answer_a)
    assert "fault latency" in answer_a

    stalls = [
        _summary(out / "b" / "all" / f"none-s{seed}")["guests"]["app-1"]["stall_seconds"]
        for seed in (4, 5)
    ]
    m = sum(stalls) / 2
    h = 12.706 * abs(stalls[0] - stalls[1]) / 2
    want_b = f"none {_ci_text(m, h, 's', 0.0)}"
    assert want_b in answer_b, (want_b, answer_b)
    assert m > 0 and h > 0  # the tiny scenario does reach pressure, differently per seed
    assert re.search(r"none [\d.]+ \([\d.]+–[\d.]+\) m?s", answer_b), answer_b


def test_a_bad_study_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(RATIO.replace("over: cached-disk", "over: balloon"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "overcommit", "findings", "--studies", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "a.yaml" in proc.stderr and "answer.of and answer.over" in proc.stderr
    assert "Traceback" not in proc.stderr
