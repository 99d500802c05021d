"""Golden results: every shipped scenario (shortened, inline, fixed seed) and every mechanism on
the four comparison scenarios give byte-identical outputs to `tests/golden/golden.json`.

A change that moves a result regenerates that file (`python tests/golden/golden.py`) in the
same commit, and its message names the figures that moved and why.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "overcommit_golden", Path(__file__).parent / "golden" / "golden.py"
)
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

WANT = json.loads(golden.GOLDEN.read_text())
CASES = golden.cases()


def test_every_case_has_a_golden_digest_and_every_shipped_config_a_case() -> None:
    ids = {golden.case_id(*c) for c in CASES}
    assert ids == set(WANT), "regenerate with: python tests/golden/golden.py"
    shipped = {p.name for p in (golden.ROOT / "configs").glob("*.yaml")} - set(golden.EXCLUDED)
    assert shipped <= set(golden.SHORT), "a shipped config has no short form in golden.py"


@pytest.mark.parametrize("case", CASES, ids=[golden.case_id(*c) for c in CASES])
def test_outputs_match_golden(case: tuple, tmp_path: Path) -> None:
    got = golden.run_case(*case, tmp_path / "run")
    want = WANT[golden.case_id(*case)]
    moved = [name for name in want if got[name] != want[name]]
    assert not moved, (
        f"{golden.case_id(*case)}: {', '.join(moved)} changed; if the change is meant, "
        "regenerate tests/golden/golden.json and name what moved in the commit message"
    )
