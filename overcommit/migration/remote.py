"""Post-copy's pages at the source, guest side: the store requests that write them there at
switch-over and read them back when the guest faults on them or the push moves them.

At switch-over the pages the guest has not sent yet stay in its source host's Redis, as page
records at the versions the guest had when it switched (`overcommit.stores.postcopy`). Every
epoch after that, the pages the epoch faulted on (`transfer._postcopy`: a remote fault, its
stall as before) and those the background push moved are read from there and deleted, in one
atomic call routed to the SOURCE host's store (`RemoteOps.host`), whichever host the guest now
runs on. Every record read must be there and carry the version the guest stashed (a missing
page counts as lost, a wrong one as a stale read), and the hash must then hold exactly as many
pages as are still remote: none once the push is over, so no hash is left behind. At
switch-over, every epoch while the hash is small (`FULL_CHECK_BYTES`; a larger one each audit
interval) and at the end of a run still in post-copy, the whole hash is read back for the
checkers (`checkers.remote_pages`). Like the epoch, these are generators over requests: the
model never touches Redis.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.stores.codec import RecordBatch, record_len

_E = np.empty(0, np.uint32)
#: the whole source store is read back every epoch while its records take at most this many
#: bytes (larger ones: at switch-over, each audit interval and at the end of the run)
FULL_CHECK_BYTES = 1 << 20


@dataclass
class RemoteOps:
    """One guest's operations on the pages its post-copy migration left at its source: in
    order, `stash` (write), `fetch` (read and delete), then `read_all` or a count. `host` is
    the source host, whose Redis serves the request (not the host the guest runs on)."""

    guest: str
    host: str
    migration: int
    stash: RecordBatch | None = None
    fetch: np.ndarray = field(default_factory=lambda: _E)
    read_all: bool = False
    drop: bool = False


@dataclass
class RemoteReply:
    stashed: int = 0  # pages new to the hash
    fetched: Any = None  # SwapBatchResult of the fetch
    left: int = 0  # pages the hash holds afterwards
    held: RecordBatch | None = None  # with read_all: every record it holds
    dropped: int = 0


def due(g: Any) -> bool:
    """Whether the guest's migration has pages to write to or read from its source store."""
    m = g.migration
    return m is not None and (m.stash is not None or bool(m.fetch))


def expected(m: Any, pages: np.ndarray) -> np.ndarray:
    """The versions the guest stashed for `pages` (all of them stashed)."""
    return m.stash_versions[np.searchsorted(m.stash_pages, pages)]


def epoch_io(
    g: Any, audit: bool = False
) -> Generator[RemoteOps, RemoteReply, tuple[list, RecordBatch | None]]:
    """After an epoch: write the remote pages to the source at switch-over, read back those
    faulted or pushed, and read the whole hash back for the checkers at switch-over, when it
    is small (`FULL_CHECK_BYTES`) or with `audit`. Returns (violations (check, message), the
    whole hash when read)."""
    m = g.migration
    stash = None
    if m.stash is not None:
        m.source = g.host  # the switch-over epoch runs on the source
        m.stash_pages = np.sort(m.stash)
        m.stash_versions = g.version[m.stash_pages].copy()
        if len(m.stash_pages):
            stash = g._batch(m.stash_pages, m.stash_versions)
        m.stash = None
    pages = np.concatenate(m.fetch) if m.fetch else np.zeros(0, np.int64)
    m.fetch = []
    if stash is None and not len(pages):
        return [], None
    left = len(m.remote) if m.remote is not None and m.phase == "postcopy" else 0
    small = left * record_len(g.name, g.payload, g.page_size) <= FULL_CHECK_BYTES
    whole = stash is not None or audit or small
    req = RemoteOps(g.name, m.source, m.order.id, stash, pages.astype(np.uint32), read_all=whole)
    rep = yield req
    out: list[tuple[str, str]] = []
    where = f"the post-copy pages at {m.source}"
    if stash is not None and rep.stashed != len(stash):
        out.append(
            (
                "integrity",
                f"{g.name}: {rep.stashed} of {len(stash)} page(s) written to {where} were new",
            )
        )
    if len(pages):
        f = rep.fetched
        m.remote_read += int(np.count_nonzero(f.found))
        g._check_read(pages, f.found, f.got, where, out, expected(m, pages))
    if rep.left != left:
        out.append(
            (
                "integrity",
                f"{g.name}: {where} hold {rep.left} page(s), {left} still to move"
                + (" (a hash left behind)" if left == 0 else ""),
            )
        )
    return out, rep.held


def final_read(g: Any) -> Generator[RemoteOps, RemoteReply, RecordBatch | None]:
    """At the end of a run still in post-copy: every record of the source store."""
    m = g.migration
    if m is None or m.phase != "postcopy" or m.source is None or m.stash_pages is None:
        return None
    rep = yield RemoteOps(g.name, m.source, m.order.id, read_all=True)
    return rep.held
