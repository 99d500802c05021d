"""`overcommit findings`: every shipped study validates, and a CI-sized study set (two tiny
studies in a test directory, `--quick --seeds 2`) produces findings.md whose sentences carry
the numbers of the runs kept under --out (recomputed here from their summary.json)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from overcommit.findings import (
    STUDIES_DIR,
    StudyError,
    _ci_text,
    _vary_points,
    break_even,
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


GRID = f"""\
id: j
question: "How many pages per exit make batching beat a hypercall per page?"
asked_by: {{name: Avi Kivity, quote: "How baked in is the synchronous requirement?"}}
scenario: |
{SCENARIO}
mechanisms: [frontswap, ramdisk]
vary:
  grid:
    - {{name: batch, set: [guests.0.swap_cluster, guests.0.readahead], values: [1, 32]}}
    - {{name: exit, set: [costs.io_exit], values: [1us, 20us]}}
answer:
  figure: stall_seconds
  kind: ratio
  of: frontswap
  over: ramdisk
  break_even: {{along: exit, per: batch, above: batching wins, below: frontswap wins}}
"""


def test_the_ramdisk_and_exits_questions_are_answered() -> None:
    by_id = {s.id: s for s in load_studies(STUDIES_DIR)}
    i, j = by_id["i"], by_id["j"]
    assert i.status == j.status == "answered"
    assert {"frontswap", "ramdisk", "cached-disk"} <= set(i.mechanisms)
    assert j.answer.break_even is not None and j.vary.grid is not None
    paths = {p for a in j.vary.grid for p in a.set}
    assert {"costs.io_exit", "guests.0.swap_cluster"} <= paths


def test_a_grid_makes_every_combination_a_point(tmp_path: Path) -> None:
    (tmp_path / "j.yaml").write_text(GRID)
    (st,) = load_studies(tmp_path)
    points = _vary_points(st.vary)
    assert [label for _, label in points] == [
        "batch 1, exit 1us",
        "batch 1, exit 20us",
        "batch 32, exit 1us",
        "batch 32, exit 20us",
    ]
    assert points[1][0] == {
        "guests.0.swap_cluster": 1,
        "guests.0.readahead": 1,
        "costs.io_exit": "20us",
    }
    assert validate_study(st) == 2 * 2 * 4
    (tmp_path / "j.yaml").write_text(GRID.replace("along: exit", "along: nope"))
    with pytest.raises(StudyError, match="break_even"):
        load_studies(tmp_path)


def test_break_even_interpolates_where_the_ratio_crosses_one(tmp_path: Path) -> None:
    """Per seed, on the log of the exit cost: a ratio of 2 at 1 us and 0.5 at 20 us crosses
    1 two thirds of the way from log(1 us) to log(20 us) (linear in the ratio)."""
    (tmp_path / "j.yaml").write_text(GRID)
    (st,) = load_studies(tmp_path)

    def point(label: str, per_seed: list[float]) -> dict:
        return {"label": label, "ratio": {"seeds": [1, 2], "per_seed": per_seed}}

    points = [
        point("batch 1, exit 1us", [0.9, 0.8]),
        point("batch 1, exit 20us", [0.2, 0.3]),
        point("batch 32, exit 1us", [2.0, 2.0]),
        point("batch 32, exit 20us", [0.5, 0.5]),
    ]
    b1, b32 = break_even(st, points)
    assert b1["crossings"] == [] and "No break-even with batch 1" in b1["sentence"]
    assert "frontswap wins throughout" in b1["sentence"]
    x = math.exp(math.log(1e-6) + (2 / 3) * (math.log(20e-6) - math.log(1e-6)))
    assert b32["crossings"] == pytest.approx([x, x])
    assert b32["mean"] == pytest.approx(x)
    want = f"Break-even with batch 32 at about {x * 1e6:.3g} us (every seed) exit: batching "
    assert b32["sentence"].startswith(want), b32["sentence"]
    assert b32["sentence"].endswith("frontswap wins above it.")
