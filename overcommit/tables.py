"""The console's end-of-run table (`overcommit run`, `down`): one row per guest and a total
row, figures in the units a person reads."""

from __future__ import annotations

from rich.table import Table

from overcommit.report_text import duration

#: The run table's columns (headers as printed).
SUMMARY_COLUMNS = (
    "guest",
    "host",
    "progress",
    "stall",
    "p99 fault",
    "disk pages read",
    "disk pages written",
    "puts ok",
    "puts rejected",
    "OOM kills",
)


def summary_table(summary: dict) -> Table:
    """The compact end-of-run table: one row per guest and a total row. `puts ok` are the
    frontswap puts the pool stored, `puts rejected` those it refused (they went to swap)."""
    table = Table(
        title=f"{summary['scenario']['name']} · {summary['mechanism']} · "
        f"seed {summary['seed']} · {summary['emulated_seconds']:g}s emulated"
    )
    for col in SUMMARY_COLUMNS:
        table.add_column(col, justify="left" if col in ("guest", "host") else "right")

    def cells(c: dict, progress: float, stall: float, p99: float) -> list[str]:
        return [
            f"{progress:.3f}",
            duration(stall),
            duration(p99),
            str(c["disk_reads"]),
            str(c["disk_writes"]),
            str(c["frontswap_puts"]),
            str(c["frontswap_put_failures"]),
            str(c["guest_oom_kills"]),
        ]

    for name, g in summary["guests"].items():
        table.add_row(
            name,
            g["host"],
            *cells(g["counters"], g["progress"], g["stall_seconds"], g["fault_latency"]["p99"]),
        )
    t = summary["totals"]
    table.add_section()
    table.add_row(
        "total", "", *cells(t, t["progress"], t["stall_seconds"], t["fault_latency"]["p99"])
    )
    return table
