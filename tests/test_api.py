"""The notebook API: the README's Python example runs as written, and the API's pieces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import overcommit

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = python_blocks(README)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    result, cmp, rows = ns["result"], ns["cmp"], ns["rows"]
    assert isinstance(result, overcommit.Result) and result.valid
    assert isinstance(result.timeseries, pd.DataFrame) and len(result.timeseries) > 0
    assert {"guest", "work_s", "stall_s"} <= set(result.timeseries.columns)
    assert {"host", "free_pages"} <= set(result.hosts.columns)
    assert "boot" in set(result.events["kind"])
    assert set(cmp["mechanisms"]) == {"none", "frontswap"}
    assert len(rows) == 10 and set(rows["mechanism"]) == {"none", "frontswap"}
    answer = rows.attrs["sweep"]["answers"]["frontswap"][0]
    assert answer["best"] == 4  # 4 guests of 64 MiB fit in 256 MiB, a 5th cannot be placed
    printed = capsys.readouterr().out
    assert "frontswap" in printed


def test_config_forms_and_overrides(tmp_path):
    text = (
        "name: api\nduration: 1s\nruntime: {kind: inline}\nhosts: {ram: 256MiB}\nguests:\n"
        "  - {name: g, memory: 64MiB, workload: {kind: zipf, working_set: 32MiB, "
        "access_rate: 5k/s}}\n"
    )
    path = tmp_path / "api.yaml"
    path.write_text(text)
    from_text = overcommit.load(text)
    assert overcommit.load(path) == from_text == overcommit.load(str(path))
    assert overcommit.load(from_text) is from_text
    res = overcommit.run(path, seed=5, mechanism="frontswap", out_dir=tmp_path / "r",
                         overrides={"guests.0.count": 2})  # fmt: skip
    assert res.summary["seed"] == 5 and res.summary["mechanism"] == "frontswap"
    assert len(res.summary["guests"]) == 2 and res.exit_code == 0
    assert (tmp_path / "r" / "summary.json").is_file()
    assert res.report() == tmp_path / "r" / "report.html"


def test_import_is_lazy():
    code = (
        "import sys, overcommit; "
        "assert not {'pandas', 'ray', 'matplotlib', 'overcommit.api'} & set(sys.modules), "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'ray', 'overcommit'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert callable(overcommit.compare) and overcommit.compare.figures  # module and function
