"""The docs cannot drift: README commands, CI script and the output reference stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from overcommit.cluster.checkers import CHECKS
from overcommit.cluster.engine import run_scenario
from overcommit.config import load_scenario, load_scenario_text
from overcommit.metrics import GUEST_COLUMNS, HOST_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
OUTPUT_DOC = (ROOT / "docs" / "output.md").read_text()


def first_code_block(text: str) -> list[str]:
    m = re.search(r"```[a-z]*\n(.*?)```", text, re.S)
    assert m, "no code block"
    return [ln for ln in m.group(1).splitlines() if ln.strip()]


def test_readme_opens_with_the_two_commands():
    before = README.split("```", 1)[0]
    assert before.strip().startswith("# overcommit") and before.count("\n") <= 3
    install_run, install_test = first_code_block(README)
    assert install_run.startswith("pip install -e . && overcommit run configs/")
    config = install_run.split("overcommit run ", 1)[1].strip()
    assert (ROOT / config).is_file()
    load_scenario(ROOT / config)
    assert install_test == "pip install -e '.[test]' && python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_test in ci.splitlines()


def test_every_shipped_config_loads_and_is_named_in_readme():
    for f in sorted((ROOT / "configs").glob("*.yaml")):
        load_scenario(f)
        assert f"configs/{f.name}" in README, f"{f.name} is not described in the README"


@pytest.fixture(scope="module")
def summary() -> dict:
    text = """
name: doc
duration: 2s
mechanism: frontswap
runtime: {kind: inline}
hosts: {ram: 256MiB, reserve: 16MiB}
guests:
  - {name: g, memory: 64MiB, maxmem: 96MiB,
     workload: {kind: zipf, working_set: 96MiB, access_rate: 50k/s}}
"""
    return run_scenario(load_scenario_text(text, "doc.yaml")).summary


def documented(name: str) -> bool:
    return f"`{name}`" in OUTPUT_DOC


def test_output_doc_covers_every_summary_key(summary):
    missing = [k for k in summary if not documented(k)]
    missing += [k for k in summary["totals"] if not documented(k)]
    missing += [k for k in summary["totals"]["stall_by_source"] if not documented(k)]
    missing += [k for k in next(iter(summary["guests"].values())) if not documented(k)]
    missing += [k for k in next(iter(summary["hosts"].values())) if not documented(k)]
    missing += [k for k in summary["run"] if not documented(k)]
    missing += [c for c in CHECKS if not documented(c)]
    assert not missing, f"undocumented in docs/output.md: {missing}"


def test_output_doc_covers_every_column_and_event_kind(summary):
    missing = [c for c in [*GUEST_COLUMNS, *HOST_COLUMNS] if not documented(c)]
    missing += [e["kind"] for e in summary["events"] if not documented(e["kind"])]
    assert not missing, f"undocumented in docs/output.md: {missing}"


def _cli_help(*args: str) -> str:
    from typer.testing import CliRunner

    from overcommit.cli import app

    res = CliRunner().invoke(app, [*args, "--help"], prog_name="overcommit", terminal_width=100)
    assert res.exit_code == 0, res.output
    return res.output


def _help_section(text: str, title: str) -> list[str]:
    """The lines of a click help section (`Options:`, `Commands:`) up to the next blank line."""
    lines = text.split(f"\n{title}:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [ln for ln in lines if ln.strip()]


def readme_commands() -> dict[str, str]:
    """The README's Commands block: command name -> its text (continuation lines joined)."""
    block = README.split("\n## Commands\n", 1)[1]
    entries: dict[str, str] = {}
    name = None
    for line in first_code_block(block):
        if line.startswith("overcommit "):
            name = line.split()[1]
            assert name not in entries, f"README Commands lists {name} twice"
            entries[name] = line
        else:
            assert name is not None and line.startswith(" "), line
            entries[name] += " " + line.strip()
    return entries


def test_readme_command_list_matches_the_cli():
    """Every command of `overcommit --help` is in the README's Commands block with its
    arguments and every option its `--help` lists, and the block names nothing the CLI lacks."""
    cli_cmds = [ln.split()[0] for ln in _help_section(_cli_help(), "Commands") if ln[2] != " "]
    readme = readme_commands()
    assert sorted(readme) == sorted(cli_cmds), (sorted(readme), sorted(cli_cmds))
    for cmd in cli_cmds:
        text = _cli_help(cmd)
        usage = text.split("\n", 1)[0]
        args = usage.split("[OPTIONS]", 1)[1].split()
        entry = readme[cmd]
        assert entry.split()[2 : 2 + len(args)] == args, (cmd, entry, args)
        opts = {
            m.group(1)
            for ln in _help_section(text, "Options")
            if (m := re.match(r"\s+(?:-\w, )?(--[a-z][a-z-]*)", ln))
        } - {"--help"}
        named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", entry))
        assert opts - named == set(), f"README Commands: {cmd} lacks {sorted(opts - named)}"
        assert named - opts == set(), f"README Commands: {cmd} has no {sorted(named - opts)}"
