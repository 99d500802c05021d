"""A migrating guest's share of a runner's window: its record, the rounds streamed and the
switch-over check (`migration_window`), and post-copy's source store (`remote_epoch` after
each epoch, `remote_final` at the end of the run): the requests of
`overcommit.migration.remote` and the checkers' reading of what the source holds.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from overcommit.cluster import checkers
from overcommit.migration import remote


def remote_epoch(
    g: Any, e: int, audit: bool = False
) -> Generator[Any, Any, list[tuple[int, str, str]]]:
    """After epoch `e`: post-copy's writes to and reads from the source store, checked (with
    `audit`, the whole store is read back whatever its size)."""
    if not remote.due(g):
        return []
    found, held = yield from remote.epoch_io(g, audit)
    out = [(e, check, msg) for check, msg in found]
    if held is not None:
        out += [(e, "integrity", msg) for msg in checkers.remote_pages(g, held)]
    return out


def remote_final(g: Any) -> Generator[Any, Any, list[tuple[str, str]]]:
    """At the end of a run still in post-copy: the source store holds exactly the pages still
    remote, at their versions."""
    held = yield from remote.final_read(g)
    return [("integrity", msg) for msg in checkers.remote_pages(g, held)]


def migration_window(g: Any, out: Any, dt: float) -> None:
    """A migrating guest's window: its record, the rounds' pages (with the versions they
    carried) streamed to the destination, one event per round sent, and at switch-over a
    check that every page the destination should now hold carries its last version."""
    from overcommit.migration.transfer import stale_at_switch

    m = g.migration
    out.migration = m.record()
    out.stream = [(p, g.version[p]) for p in m.sent]
    for p, v in out.stream:
        m.received[p] = v
    m.sent = []
    for k in range(m.logged, len(m.rounds_log)):
        end, pages, secs, nbytes = m.rounds_log[k]
        out.events.append(
            (
                int(end / dt - 1e-9),
                "migration_round",
                {
                    "guest": g.name,
                    "round": k + 1,
                    "pages": pages,
                    "bytes": int(round(nbytes)),
                    "seconds": round(secs, 9),
                },
            )
        )
    m.logged = len(m.rounds_log)
    if m.phase in ("done", "postcopy") and not m.checked:
        m.checked = True
        stale = stale_at_switch(m, g.loc, g.version, g.pool is not None)
        if len(stale):
            out.violations.append(
                (
                    _switch_epoch(m, dt),
                    "integrity",
                    f"{g.name}: {len(stale)} page(s) the destination holds without their last "
                    f"version at switch-over (e.g. pages {stale[:5].tolist()})",
                )
            )


def _switch_epoch(m: Any, dt: float) -> int:
    """The epoch of a migration's switch-over."""
    t = m.switched if m.switched is not None else (m.end or 0.0)
    return int(t / dt - 1e-9)
