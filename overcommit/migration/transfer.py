"""Live migration, guest side: pre-copy rounds driven by the guest's real dirty pages, post-copy.

Pre-copy as QEMU does it. Round 1 sends every allocated frame: frames holding a resident page in
full, free frames as zero pages (`zero_page_bytes` each), ballooned frames not at all, and with
frontswap (Xen's policy) the guest's persistent pool pages, while its pool refuses puts. Each next
round sends the resident pages the guest dirtied during the previous one — written, or given new
content by a fault (first touch, swap-in) — taken from the guest's own touch sequence, whose
touches are spread evenly over the epoch's work time, so a round that ends inside an epoch splits
that epoch's writes at its end. When a round's dirty set could be sent within the downtime limit
at the bandwidth the migration has, the guest stops and the set is sent (the downtime); after
`max_rounds` rounds without getting there the migration is aborted. With auto-converge, a round
whose dirty set exceeds half the bytes it sent throttles the guest's CPU (20%, +10% per step, at
most 99%), from the next epoch on. Rounds and downtime are timed within epochs, not rounded to
them; the pause itself is charged to the guest as stall in the following epoch.

Post-copy starts as pre-copy; after `postcopy_after` rounds the guest switches to the destination
(no copy pause) with the last dirty set still at the source: a touch of such a page is a remote
fault (a stall of `fault_latency` plus the page's transfer), and a background push streams the
rest in page order at the migration's bandwidth until none is left. Those pages really stay in
the source host's Redis until then: this module marks what to write there (`stash`) and what to
read back (`fetch`); `overcommit.migration.remote` turns that into the store requests.

The planner (`overcommit.migration.planner`) gives each migration its bandwidth every window (its
own limit, and a fair share of each host's NIC) and moves the guest when this side says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RAM = 1  # guest page locations (nodes.kernel.types)
ZPOOL = 4


@dataclass
class MigrationOrder:
    """What the driver tells a guest about its migration (in `Directives.migration`)."""

    id: int
    destination: str
    mode: str
    bandwidth: float  # bytes per second this window
    postcopy_after: int = 1
    downtime_limit: float = 0.3
    max_rounds: int = 30
    auto_converge: bool = True
    throttle_initial: float = 0.2
    throttle_step: float = 0.1
    throttle_max: float = 0.99
    zero_page_bytes: int = 16
    fault_latency: float = 200e-6
    send_tmem: bool = False  # frontswap, Xen's policy: pool pages are sent in round 1


@dataclass
class MigrationState:
    """One guest's migration in progress, and its record."""

    order: MigrationOrder
    start: float
    page_size: int
    page_bytes: int = 0  # bytes one full page costs on the wire (its record in `full` mode)
    phase: str = "precopy"  # precopy -> done | aborted; precopy -> postcopy -> done
    rounds: int = 1
    round_left: float = 0.0  # bytes of the current round still to send
    round_bytes: float = 0.0  # bytes the current round sends
    bytes_sent: float = 0.0
    pages_sent: int = 0
    pages_resent: int = 0
    throttle: float = 0.0
    downtime: float = 0.0
    end: float | None = None
    switched: float | None = None  # post-copy: when the guest switched to the destination
    remote_faults: int = 0
    dirty: np.ndarray | None = None  # pages changed since the current round started (after
    # the switch: pages the guest changed at the destination)
    remote: np.ndarray | None = None  # post-copy: pages still at the source, in push order
    # post-copy's source store (overcommit.migration.remote): the pages to write there at
    # switch-over, those written and the versions they carry, the pages faulted or pushed
    # since the last read from it, the host whose Redis holds them, pages read from it
    stash: np.ndarray | None = None
    stash_pages: np.ndarray | None = None
    stash_versions: np.ndarray | None = None
    fetch: list[np.ndarray] = field(default_factory=list)
    source: str | None = None
    remote_read: int = 0
    # (end, pages, seconds, bytes) of each round sent, the stop-and-copy included
    rounds_log: list[tuple[float, int, float, float]] = field(default_factory=list)
    round_pages: int = 0  # pages the current round sends
    round_started: float = 0.0
    logged: int = 0  # rounds already reported in the event log
    checked: bool = False  # the destination's view was checked at switch-over
    sent: list[np.ndarray] = field(default_factory=list)  # pages of each round (streamed)
    received: np.ndarray | None = None  # the destination's view: version per page (-1: none)

    @property
    def active(self) -> bool:
        return self.phase in ("precopy", "postcopy")

    def record(self) -> dict[str, Any]:
        """The guest-side figures of the migration (the driver adds the rest)."""
        total = None if self.end is None else round(self.end - self.start, 9)
        return {
            "phase": self.phase,
            "total_seconds": total,
            "downtime_seconds": round(self.downtime, 9),
            "bytes_sent": int(round(self.bytes_sent)),
            "rounds": self.rounds,
            "pages_sent": self.pages_sent,
            "pages_resent": self.pages_resent,
            "throttle": round(self.throttle, 6),
            "remote_faults": self.remote_faults,
            "remote_read": self.remote_read,
            "remote_left": len(self.remote) if self.phase == "postcopy" else 0,
            "switched": self.switched,
            "end": self.end,
        }


def start(
    order: MigrationOrder,
    t: float,
    loc: np.ndarray,
    alloc_pages: int,
    ps: int,
    tmem_pages: int,
    page_bytes: int | None = None,
    zsize: np.ndarray | None = None,
    pool_frames: int = 0,
) -> MigrationState:
    """Round 1 begins at `t`: every allocated frame, and `tmem_pages` pool pages. A page
    costs `page_bytes` (default `ps`); a compressed pool's `pool_frames` frames go as the
    stored sizes `zsize` of the pages it holds, not as zero pages."""
    m = MigrationState(order, t, ps, page_bytes or ps)
    m.round_started = t
    resident = np.flatnonzero(loc == RAM)
    pooled = np.flatnonzero(zsize > 0) if zsize is not None else np.zeros(0, np.int64)
    only = pooled[loc[pooled] == ZPOOL]  # (the others are copies of resident pages)
    m.sent.append(np.union1d(resident, only) if len(only) else resident)
    m.pages_sent = m.round_pages = len(resident) + len(pooled) + tmem_pages
    zero = max(0, alloc_pages - len(resident) - (pool_frames if zsize is not None else 0))
    zbytes = float(zsize[pooled].sum()) if len(pooled) else 0.0
    m.round_left = m.round_bytes = float(
        (len(resident) + tmem_pages) * m.page_bytes + zbytes + zero * order.zero_page_bytes
    )
    m.dirty = np.zeros(len(loc), bool)
    m.received = np.full(len(loc), -1, np.int64)
    return m


def dirtying(
    pages: np.ndarray, writes: np.ndarray, loc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the touch sequence, pages) that dirty guest RAM: every write, and the first
    touch of each page not resident at the epoch's start (its frame gets new content)."""
    if len(pages) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    mark = writes.copy()
    nonres = loc[pages] != RAM
    if nonres.any():
        _, first = np.unique(pages, return_index=True)
        firsts = np.zeros(len(pages), bool)
        firsts[first] = True
        mark |= nonres & firsts
    pos = np.flatnonzero(mark)
    return pos, pages[pos]


def untouched_changes(
    pages: np.ndarray, changed: np.ndarray, readahead: int
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, pages) for frames whose content changed this epoch without a touch of
    their own (`changed`: pages read ahead, brought back by unuse, stored into a compressed
    pool): at the first touch of their readahead cluster, else at the epoch's start."""
    if len(changed) == 0:
        return np.zeros(0, np.int64), changed
    pos = np.zeros(len(changed), np.int64)
    if len(pages):
        clusters, first = np.unique(pages // readahead, return_index=True)
        c = changed // readahead
        i = np.minimum(np.searchsorted(clusters, c), len(clusters) - 1)
        hit = clusters[i] == c
        pos[hit] = first[i[hit]]
    return pos, changed


def _held(loc: np.ndarray, zsize: np.ndarray | None) -> np.ndarray:
    """Frames the destination must mirror: resident pages, and a compressed pool's pages."""
    return (loc == RAM) | (loc == ZPOOL) if zsize is not None else loc == RAM


def _bytes(m: MigrationState, pages: np.ndarray, loc: np.ndarray, zs: np.ndarray | None) -> float:
    """Bytes sending `pages` costs: resident ones whole, pool ones as their stored size."""
    if zs is None or len(pages) == 0:
        return float(len(pages) * m.page_bytes)
    inpool = loc[pages] == ZPOOL
    return float((len(pages) - int(np.count_nonzero(inpool))) * m.page_bytes) + float(
        zs[pages[inpool]].sum()
    )


def advance(
    m: MigrationState,
    t: float,
    dt: float,
    busy_from: float,
    pages: np.ndarray,
    pos: np.ndarray,
    dpages: np.ndarray,
    loc: np.ndarray,
    zsize: np.ndarray | None = None,
) -> float:
    """Run the migration through epoch [t, t + dt), the guest's touches `pages` (in time
    order) spread over [busy_from, t + dt); `dpages` changed content at touch positions
    `pos` (ascending); `loc` is where pages are at the epoch's end. Returns the pause
    (stop-and-copy downtime, or post-copy remote fault stalls) the guest owes."""
    o = m.order
    bw = max(1.0, o.bandwidth)
    end = t + dt
    if m.phase == "postcopy":
        m.dirty[dpages] = True  # changed at the destination
        return _postcopy(m, t, dt, pages, bw)
    if m.phase != "precopy":
        return 0.0
    n = max(1, len(pages))
    times = busy_from + (pos + 0.5) * ((end - busy_from) / n)
    k = 0
    tau = t
    while True:
        finish = tau + m.round_left / bw
        if finish >= end:
            sent = bw * (end - tau)
            m.round_left -= sent
            m.bytes_sent += sent
            m.dirty[dpages[k:]] = True
            return 0.0
        m.bytes_sent += m.round_left
        j = k + int(np.searchsorted(times[k:], finish, side="left"))
        m.dirty[dpages[k:j]] = True
        k = j
        nxt = np.flatnonzero(m.dirty & _held(loc, zsize))
        nb = _bytes(m, nxt, loc, zsize)
        m.rounds_log.append((finish, m.round_pages, finish - m.round_started, m.round_bytes))
        if o.mode == "postcopy" and m.rounds >= o.postcopy_after:
            m.phase = "postcopy"
            m.switched = finish
            m.remote = m.stash = nxt
            m.dirty[:] = False
            m.dirty[dpages[k:]] = True  # changed at the destination
            if len(nxt) == 0:
                m.phase, m.end = "done", finish
                return 0.0
            span = end - busy_from
            after = int(np.ceil((finish - busy_from) * n / span - 0.5)) if span > 0 else n
            return _postcopy(m, finish, end - finish, pages[max(0, after) :], bw)
        if nb / bw <= o.downtime_limit:
            m.downtime = nb / bw
            m.bytes_sent += nb
            m.pages_resent += len(nxt)
            m.sent.append(nxt)
            m.rounds_log.append((finish + m.downtime, len(nxt), m.downtime, nb))
            m.phase = "done"
            m.end = finish + m.downtime
            m.dirty[:] = False
            m.dirty[dpages[k:]] = True  # changed at the destination, after the stop
            return m.downtime
        if m.rounds >= o.max_rounds:
            m.phase = "aborted"
            m.end = finish
            return 0.0
        if o.auto_converge and nb > 0.5 * m.round_bytes:
            m.throttle = (
                o.throttle_initial
                if m.throttle == 0
                else min(o.throttle_max, m.throttle + o.throttle_step)
            )
        m.rounds += 1
        m.pages_resent += len(nxt)
        m.sent.append(nxt)
        m.round_left = m.round_bytes = nb
        m.round_pages = len(nxt)
        m.round_started = finish
        m.dirty[:] = False
        tau = finish


def stale_at_switch(
    m: MigrationState,
    loc: np.ndarray,
    version: np.ndarray,
    pool: bool,
    received: np.ndarray | None = None,
) -> np.ndarray:
    """Pages the destination should hold at switch-over but whose last version it never got
    (`received`: the versions it holds, -1 for none; default the guest's own account):
    resident (and compressed-pool) pages neither changed after the switch nor left at the
    source for post-copy."""
    if received is None:
        received = m.received
    held = (loc == RAM) | (loc == ZPOOL) if pool else loc == RAM
    held &= ~m.dirty
    if m.remote is not None and len(m.remote):
        held[m.remote] = False
    want = np.flatnonzero(held)
    return want[received[want] != version[want]]


def _postcopy(m: MigrationState, t: float, dt: float, pages: np.ndarray, bw: float) -> float:
    """One epoch (or its rest) of post-copy: remote faults on touched pages, then the push."""
    o, ps = m.order, m.page_bytes
    remote = m.remote if m.remote is not None else np.zeros(0, np.int64)
    stall = 0.0
    if len(remote) and len(pages):
        hit = np.isin(remote, pages)
        nf = int(np.count_nonzero(hit))
        if nf:
            m.remote_faults += nf
            stall = nf * (o.fault_latency + ps / bw)
            m.bytes_sent += nf * ps
            m.pages_resent += nf
            m.sent.append(remote[hit])
            m.fetch.append(remote[hit])
            remote = remote[~hit]
    can = int(bw * dt // ps)
    if can >= len(remote):
        m.bytes_sent += len(remote) * ps
        m.pages_resent += len(remote)
        m.sent.append(remote)
        m.fetch.append(remote)
        m.end = t + len(remote) * ps / bw
        m.phase = "done"
        m.remote = remote[:0]
        return stall
    m.bytes_sent += can * ps
    m.pages_resent += can
    m.sent.append(remote[:can])
    m.fetch.append(remote[:can])
    m.remote = remote[can:]
    return stall


def zsizes(g: Any) -> np.ndarray | None:
    """A guest's compressed pool's stored size per page, None without one."""
    pool = getattr(g, "pool", None)
    return pool.size if pool is not None else None


def epoch(g: Any, ep: Any) -> None:
    """The migration through epoch `ep` of guest `g`, after its frames changed: the touches'
    marks (`ep.mig_marks`, taken where pages were at the epoch's start) and every frame given
    content without a touch of its own (readahead, unuse, stores into a compressed pool).
    The pause the guest owes is charged to it as migration stall."""
    m = g.migration
    pages = ep.pages
    pos, dpages = getattr(ep, "mig_marks", (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    zs = zsizes(g)
    changed = getattr(ep, "incoming", np.zeros(0, np.int64))
    if len(changed):
        changed = np.setdiff1d(changed, ep.uniq)
    if zs is not None and len(ep.stored):
        changed = np.union1d(changed, ep.stored)
    if len(changed):
        cpos, cpages = untouched_changes(pages, changed, g.readahead)
        pos = np.concatenate([pos, cpos])
        dpages = np.concatenate([dpages, cpages])
        order = np.argsort(pos, kind="stable")
        pos, dpages = pos[order], dpages[order]
    pause = advance(m, ep.t, ep.dt, ep.busy_from, pages, pos, dpages, g.loc, zs)
    if pause:  # stop-and-copy or remote faults: the guest owes the time
        g.debt += pause
        g.stall_seconds += pause
        g.stall_by_source["migration"] += pause


def takeover_problem(g: Any, received: np.ndarray | None) -> tuple[str | None, int]:
    """Check the state of guest `g` that arrived at switch-over against the versions that
    streamed (`received`, -1: none): no streamed page newer than it (versions only grow), and
    every page the destination holds at the version that streamed (`stale_at_switch`).
    Returns (what is wrong, or None; the streamed pages checked)."""
    if received is None:
        received = np.full(g.N, -1, np.int64)
    seen = received >= 0
    checked = int(np.count_nonzero(seen))
    newer = np.flatnonzero(seen & (received > g.version))
    if len(newer):
        return (
            f"{g.name}: {len(newer)} streamed page(s) newer than the state that arrived "
            f"(e.g. pages {newer[:5].tolist()})",
            checked,
        )
    if g.migration is None:
        return None, checked
    stale = stale_at_switch(g.migration, g.loc, g.version, g.pool is not None, received)
    if len(stale):
        return (
            f"{g.name}: {len(stale)} page(s) the state that arrived holds at a version that "
            f"did not stream (e.g. pages {stale[:5].tolist()})",
            checked,
        )
    return None, checked
