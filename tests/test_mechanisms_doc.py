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
def example():
    from overcommit.config import mechanisms as config_mechanisms
    from overcommit.nodes import mechanism as nodes_mechanism

    saved = (
        dict(config_mechanisms._REGISTERED),
        dict(config_mechanisms._REGISTERED_CONFLICTS),
        dict(nodes_mechanism._REGISTERED),
    )
    (block,) = python_blocks(DOC)
    ns: dict = {}
    exec(compile(block, "docs/mechanisms.md", "exec"), ns)
    yield ns
    # the example's registration is process-wide: later tests see only the built-ins
    config_mechanisms._REGISTERED = saved[0]
    config_mechanisms._REGISTERED_CONFLICTS = saved[1]
    nodes_mechanism._REGISTERED.clear()
    nodes_mechanism._REGISTERED.update(saved[2])


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


def test_paging_core_names_no_mechanism():
    kernel = Path(__file__).resolve().parents[1] / "overcommit" / "nodes" / "kernel"
    modules = ("frontswap", "host_swap", "balloon", "selfballoon", "cached_disk", "zswap")
    modules += ("page_sharing", "cleancache")
    for f in sorted(kernel.glob("*.py")):
        src = f.read_text()
        for m in modules:
            assert f"overcommit.nodes.{m}" not in src, f"{f.name} imports nodes.{m}"
        assert not re.search(r"\bin (self|g)\.features\b", src), f"{f.name} tests a feature"
        for attr in ("uses_tmem", "pool", "cache", "balloon", "selfballoon", "billing"):
            assert not re.search(rf"\b(self|g)\.{attr} is (not )?None", src), (f.name, attr)


def test_combinations_compose_hooks_in_a_fixed_order():
    from overcommit.nodes.mechanism import guest_hooks

    a = build_mechanism("page-sharing+balloon+zswap+host-swap").guest_features
    b = build_mechanism("host-swap+zswap+balloon+page-sharing").guest_features
    names = [type(h).__name__ for h in guest_hooks(a)]
    assert names == [type(h).__name__ for h in guest_hooks(b)]
    assert names == ["CompressedSwapGuest", "BalloonGuest", "PageSharingGuest", "HostSwapGuest"]
    sb = [
        type(h).__name__
        for h in guest_hooks(build_mechanism("frontswap+selfballoon").guest_features)
    ]
    assert sb == ["SelfballoonGuest", "FrontswapGuest", "BalloonGuest"]
