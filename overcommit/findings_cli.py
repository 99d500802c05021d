"""`overcommit findings`: the command that runs the study set and writes the findings
(the work is in `overcommit.findings`, the pages in `overcommit.findings_report`)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import typer

from overcommit.config import ConfigError


def register(app: typer.Typer, helpers: dict[str, Any]) -> None:
    """Add `findings` to `app`. `helpers`: `command_class` (the click command class the other
    commands use), `fail(message)` -> typer.Exit (exit 2 with one line), `out` and `err`
    (the consoles)."""

    @app.command(
        cls=helpers["command_class"],
        short_help="Answer the 2010 frontswap thread's questions from runs.",
    )
    def findings(
        quick: bool = typer.Option(
            False, "--quick", help="One seed and short durations (same report shape)."
        ),
        seeds: int | None = typer.Option(
            None, metavar="N", min=1, help="Seeds per run (default: each study's; 1 with --quick)."
        ),
        out_dir: Path | None = typer.Option(
            None, "--out", metavar="DIR", help="Output directory (default: runs/findings-<time>)."
        ),
        only: str | None = typer.Option(
            None, metavar="a,b,...", help="Only these studies (their ids), e.g. a,c."
        ),
        studies_dir: Path | None = typer.Option(
            None,
            "--studies",
            metavar="DIR",
            help="Study YAML directory (default: configs/studies).",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    ) -> None:
        """Run the study set (configs/studies/*.yaml) and write findings.md, findings.json and
        findings.html: each question, who asked it, the answer with numbers and 95% CIs, a plot,
        the command that reruns it and the assumptions it rests on."""
        from overcommit.findings import STUDIES_DIR, StudyError, load_studies, run_findings
        from overcommit.findings_report import write_findings

        names = [x.strip() for x in (only or "").split(",") if x.strip()] or None
        try:
            studies = load_studies(studies_dir or STUDIES_DIR, names)
        except StudyError as exc:
            raise helpers["fail"](str(exc)) from None
        if out_dir is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out_dir = Path("runs") / f"findings-{stamp}"

        def on_point(sid: str, label: str) -> None:
            if not quiet:
                helpers["out"].print(f"study {sid} {label}".rstrip(), highlight=False)

        try:
            doc = run_findings(studies, out_dir, quick=quick, seeds=seeds, on_point=on_point)
        except ConfigError as exc:
            raise helpers["fail"](str(exc).splitlines()[0]) from None
        except KeyboardInterrupt:
            helpers["err"].print("interrupted; finished runs are in their directories")
            raise typer.Exit(130) from None
        md, _ = write_findings(out_dir, doc)
        helpers["out"].print(f"findings: {md}", highlight=False)
