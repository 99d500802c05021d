"""docs/mechanisms.md's worked example runs: `my-mech`, defined and registered in the doc's
Python block, compares against `none` with a valid row that differs from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from overcommit.config import known_mechanisms, load_scenario_text
from overcommit.nodes.mechanism import build_mechanism

DOC = (Path(__file__).resolve().parents[1] / "docs" / "mechanisms.md").read_text()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.fixture(scope="module")
def example() -> dict:
    (block,) = python_blocks(DOC)
    ns: dict = {}
    exec(compile(block, "docs/mechanisms.md", "exec"), ns)
    return ns


def test_my_mech_row_is_valid_and_differs_from_none(example):
    rows = example["cmp"]["mechanisms"]
    assert set(rows) == {"none", "my-mech"}
    mine, base = rows["my-mech"], rows["none"]
    assert mine["valid"] and base["valid"]
    assert mine["mean"]["disk_pages"] != base["mean"]["disk_pages"]
    assert mine["mean"]["progress"] != base["mean"]["progress"]


def test_registered_name_validates_and_combines(example):
    assert "my-mech" in known_mechanisms()
    mech = build_mechanism("my-mech+balloon")
    assert mech.has("my-mech") and "proactive_reclaim" in mech.guest_features
    text = example["scenario"].replace("mechanism: none", "mechanism: my-mech+balloon")
    assert load_scenario_text(text, "t.yaml").mechanism == "my-mech+balloon"


def test_unknown_mechanism_is_still_refused():
    text = (
        "name: t\nduration: 1s\nmechanism: no-such-mech\nhosts: {ram: 256MiB}\n"
        "guests:\n  - {name: g, memory: 64MiB, workload: {kind: zipf, working_set: 32MiB}}\n"
    )
    with pytest.raises(Exception, match="no-such-mech"):
        load_scenario_text(text, "t.yaml")
