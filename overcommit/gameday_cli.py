"""The game-day commands: `overcommit up`, `inject`, `status`, `down` (see docs/gameday.md).

`register(app, helpers)` adds them to the command-line app; `helpers` hands over the shared
pieces of `overcommit.cli` (loading a scenario with located errors, the end-of-run table,
report.html) so this module never imports it. The work is in `overcommit.gameday`.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.table import Table

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _mib(pages: int, page_size: int = 4096) -> str:
    return f"{pages * page_size / 2**20:,.0f}"


def status_tables(st: dict) -> Group:
    """The hosts' table and the guests' table of one day's status."""
    t, horizon = st["t"], st["horizon"]
    checks = st["checks"]
    verdict = "[green]ok[/]" if checks["valid"] else "[red]FAILED: " + ", ".join(checks["failed"])
    title = (
        f"{st['name']} · {st['scenario']} · {st['mechanism']} · seed {st['seed']} · "
        f"{st['state']} · {t:,.1f}s/{horizon:,.0f}s emulated · pace {st['pace']} · "
        f"checkers {verdict}"
    )
    hosts = Table(title=title, title_justify="left")
    for col in ("host", "state", "RAM used MiB", "guest frames MiB", "tmem pool MiB",
                "host swap MiB", "free MiB", "guests"):  # fmt: skip
        hosts.add_column(col, justify="left" if col in ("host", "state", "guests") else "right")
    for name, h in st["hosts"].items():
        state = "up" if h["up"] else "[red]down[/]"
        if h.get("draining"):
            state += " (draining)"
        hosts.add_row(
            name,
            state,
            f"{_mib(h['used_pages'])}/{_mib(h['ram_pages'])}",
            _mib(h["guest_frames"]),
            f"{_mib(h['tmem_pages'])}/{_mib(h['tmem_capacity'])}",
            _mib(h["hswap_pages"]),
            _mib(h["free_pages"]),
            ", ".join(h["guests"]),
        )
    guests = Table(title_justify="left")
    for col in ("guest", "host", "RAM MiB", "tmem MiB", "swap MiB", "progress", "stall",
                "faults/s", "restarts", "migration"):  # fmt: skip
        guests.add_column(col, justify="left" if col in ("guest", "host", "migration") else "right")
    for name, g in st["guests"].items():
        mig = ""
        if g["migrating"]:
            mig = f"to {g['migrating']}" if isinstance(g["migrating"], str) else "running"
        elif g["migration_waiting"]:
            mig = "waiting"
        guests.add_row(
            name,
            g["host"] or "[red]down[/]",
            _mib(g["resident_pages"]),
            _mib(g["tmem_pages"]),
            _mib(g["swap_pages"]),
            f"{g['progress']:.3f}",
            f"{g['stall_seconds']:.2f}s",
            f"{g['faults_per_second']:,.0f}",
            str(g["restarts"]),
            mig,
        )
    lines = [hosts, guests, _dashboard_line(st)]
    if st.get("error"):
        lines.append(f"[red]error:[/] {st['error']}")
    return Group(*lines)


def _dashboard_line(st: dict) -> str:
    """Where the day's live dashboard is (from a status or the day's state record)."""
    if st.get("dashboard"):
        return f"dashboard: {st['dashboard']}"
    return f"dashboard: none ({st.get('dashboard_error') or 'not served'})"


def list_table(rows: list[dict]) -> Table:
    table = Table(title="game days")
    for col in ("name", "state", "emulated", "mechanism", "checkers", "pace", "address"):
        table.add_column(col, justify="right" if col == "emulated" else "left")
    for r in rows:
        emu = f"{r['t']:,.1f}s/{r['horizon']:,.0f}s" if "t" in r else ""
        ok = "" if "valid" not in r else ("ok" if r["valid"] else "FAILED")
        table.add_row(
            r["name"], r["state"], emu, r.get("mechanism", ""), ok, r["pace"], r["address"]
        )
    return table


def register(app: typer.Typer, helpers: dict[str, Any]) -> None:
    """Add `up`, `inject`, `status` and `down` to `app`. `helpers`: `load(config, overrides)`
    -> Scenario (exits 2 on a bad file), `print_summary(summary)`, `write_report(dir)`, and
    optionally `command_class`, the click command class the other commands use (help text
    like an ordinary tool's)."""
    cls = helpers.get("command_class")

    @app.command(cls=cls)
    def up(
        config: Path = typer.Argument(..., help="Scenario YAML file."),
        address: str | None = typer.Option(
            None,
            metavar="ADDR",
            help="Run on this Ray cluster (HOST:PORT, ray://HOST:PORT); default: a local Ray "
            "head started for game days, stopped by the last down.",
        ),
        pace: str = typer.Option(
            "1x",
            metavar="1x|10x|max",
            help="Emulated time per wall-clock time: 1x (wall clock), 10x, max.",
        ),
        name: str | None = typer.Option(
            None, metavar="NAME", help="Cluster name (default: the scenario's)."
        ),
        out_dir: Path | None = typer.Option(
            None,
            "--out",
            metavar="DIR",
            help="Run directory down writes (default: runs/<name>-<mechanism>-s<seed>-<time>).",
        ),
        foreground: bool = typer.Option(
            False,
            "--foreground",
            help="Stay attached: show the status, and end the day (as down) on Ctrl-C.",
        ),
        by: str | None = typer.Option(
            None, metavar="TEXT", help="Who starts the day (default: user@host)."
        ),
    ) -> None:
        """Start a scenario's cluster and keep it running (detached) until down."""
        from overcommit import gameday as gd
        from overcommit.cluster.live import parse_pace

        sc = helpers["load"](config, {})
        try:
            pace_value = parse_pace(pace)
            day = gd.check_name(name or sc.name)
        except (ValueError, gd.GameDayError) as exc:
            raise _fail(str(exc)) from None
        out_dir = out_dir or gd.default_out(sc, day)
        who = by or gd.who()
        try:
            rec, actor = gd.start_day(
                sc,
                config=config,
                name=day,
                address=address,
                pace=pace,
                pace_value=pace_value,
                out_dir=out_dir,
                foreground=foreground,
                by=who,
            )
        except gd.GameDayError as exc:
            raise _fail(str(exc)) from None
        out.print(
            f"cluster {day} is up on {rec['address']} ({sc.mechanism}, pace {pace}, horizon "
            f"{float(sc.duration):g}s); run directory at down: {rec['out']}",
            highlight=False,
            soft_wrap=True,
        )
        out.print(_dashboard_line(rec), highlight=False, soft_wrap=True)
        if not foreground:
            raise typer.Exit(0)
        raise typer.Exit(_foreground(day, rec, actor, who))

    def _foreground(day: str, rec: dict, actor: Any, who: str) -> int:
        import ray
        from rich.live import Live

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        try:
            with Live(console=err, transient=True, auto_refresh=False) as live:
                while True:
                    st = ray.get(actor.status.remote())
                    if err.is_terminal:
                        live.update(status_tables(st), refresh=True)
                    if st["state"] in ("finished", "failed"):
                        break
                    time.sleep(1.0)
        except KeyboardInterrupt:
            err.print(f"stopping {day} at the next window boundary", highlight=False)
        except Exception as exc:  # the driver died under us
            err.print(f"lost the driver: {exc}", highlight=False, markup=False)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the day end cleanly
        return _finish(day, rec, actor, who, report=True)

    def _finish(day: str, rec: dict, actor: Any, who: str, report: bool) -> int:
        from overcommit import gameday as gd

        payload = gd.end_day(day, rec, actor, who)
        if payload.get("error"):
            err.print(f"error: {day}: {payload['error']}", markup=False, highlight=False)
            return 2
        out_dir = Path(rec["out"])
        gd.write_day(payload, out_dir)
        helpers["print_summary"](payload["summary"])
        if report:
            helpers["write_report"](out_dir)
        out.print(f"run directory: {out_dir}", highlight=False)
        return int(payload["exit_code"])

    @app.command(cls=cls)
    def inject(
        name: str = typer.Argument(..., help="The cluster's name."),
        action: str = typer.Argument(
            ...,
            help="fail-host, recover-host, tmem-backend-failure, slow-storage, "
            "stop-cooperating, migrate, evacuate, host-reclaim (and the scenario file's other "
            "event actions, with dashes).",
        ),
        target: str | None = typer.Argument(None, help="The host or guest it applies to."),
        to: str | None = typer.Option(None, metavar="HOST", help="migrate: the destination host."),
        mode: str | None = typer.Option(
            None, metavar="precopy|postcopy", help="migrate: precopy or postcopy."
        ),
        factor: float | None = typer.Option(
            None, metavar="F", help="slow-storage: the speed factor."
        ),
        duration: str | None = typer.Option(
            None, metavar="D", help="slow-storage: how long (e.g. 30s)."
        ),
        by: str | None = typer.Option(
            None, metavar="TEXT", help="Who injects it (default: user@host)."
        ),
        real: bool = typer.Option(
            False,
            "--real",
            help="fail-host: remove the host's Ray node (hosts pinned one per node).",
        ),
    ) -> None:
        """Inject a fault or an operation into a running cluster at its next window."""
        import ray

        from overcommit import gameday as gd
        from overcommit.units import parse_duration

        try:
            secs = None if duration is None else parse_duration(duration)
        except ValueError as exc:
            raise _fail(f"--duration {duration!r}: {exc}") from None
        req = {
            "action": action,
            "target": target,
            "to": to,
            "mode": mode,
            "factor": factor,
            "duration": secs,
            "by": by or gd.who(),
            "real": real,
        }
        try:
            _, actor = gd.attach(name)
            answer = ray.get(actor.inject.remote(req))
        except gd.GameDayError as exc:
            raise _fail(str(exc)) from None
        if answer["error"]:
            raise _fail(f"{name}: {answer['error']}")
        q = answer["queued"]
        what = " ".join(x for x in (q["action"].replace("_", "-"), q["target"]) if x)
        out.print(
            f"{name}: {what} queued by {q['by']}; applied at the next window boundary after "
            f"{answer['after_t']:g}s emulated",
            highlight=False,
            soft_wrap=True,
        )

    @app.command(cls=cls)
    def status(
        name: str | None = typer.Argument(None, help="A cluster's name; none: list them."),
        watch: bool = typer.Option(False, "--watch", help="Refresh in place until Ctrl-C."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout, for scripts."),
        interval: float = typer.Option(
            1.0, metavar="S", help="--watch: seconds between refreshes."
        ),
    ) -> None:
        """Show a running cluster's hosts and guests, or list the running clusters."""
        import ray

        from overcommit import gameday as gd

        if name is None:
            rows = gd.list_days()
            if as_json:
                print(json.dumps(rows, indent=2))
            else:
                out.print(list_table(rows))
            return
        try:
            _, actor = gd.attach(name)
            st = ray.get(actor.status.remote())
        except gd.GameDayError as exc:
            raise _fail(str(exc)) from None
        if as_json:
            print(json.dumps(st, indent=2))
            return
        if not watch:
            out.print(status_tables(st))
            return
        from rich.live import Live

        try:
            with Live(status_tables(st), console=out, auto_refresh=False) as live:
                while st["state"] in ("running", "stopping"):
                    time.sleep(interval)
                    st = ray.get(actor.status.remote())
                    live.update(status_tables(st), refresh=True)
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            raise _fail(f"{name}: lost the driver: {exc}") from None

    @app.command(cls=cls)
    def down(
        name: str = typer.Argument(..., help="The cluster's name."),
        by: str | None = typer.Option(
            None, metavar="TEXT", help="Who ends the day (default: user@host)."
        ),
        no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
    ) -> None:
        """Stop a cluster at its next window, check it, and write its run directory."""
        from overcommit import gameday as gd

        try:
            rec, actor = gd.attach(name)
        except gd.GameDayError as exc:
            raise _fail(str(exc)) from None
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # half a down would lose the day
        raise typer.Exit(_finish(name, rec, actor, by or gd.who(), report=not no_report))
