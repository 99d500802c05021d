"""Runners: the unit of work a runtime places somewhere — one guest, or one host's bookkeeping.

`GuestRunner` owns a `GuestModel` and runs it through a sync window of epochs, returning the
window's time-series rows, violations and events as plain arrays and tuples (cheap to send
between processes). `HostRunner` owns a `HostModel` and the mirrors of its guests: it plans the
window (the mechanism's grants) and combines its guests' window reports into the host's rows
and checks. Both are generators over store requests, like the models, so a runtime can drive
them with synchronous clients in one process or with asyncio clients inside Ray actors, and
get the same numbers either way.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.cluster import checkers
from overcommit.metrics import GUEST_COLUMNS, HOST_COLUMNS
from overcommit.nodes.guest import (
    COUNTERS,
    FRONTSWAP,
    RAM,
    SWAP,
    UNTOUCHED,
    EpochStats,
    GuestModel,
    Reply,
    Request,
    hist_percentile,
)
from overcommit.nodes.host import GuestState, HostModel
from overcommit.nodes.mechanism import Mechanism
from overcommit.profiles import DeviceQueue


# -- requests beyond one guest's batch --------------------------------------------------------
@dataclass
class ReadAll:
    """Read back every record a guest has in its host's pool and on its swap disk."""

    guest: str
    host: str
    disk: str
    tmem: bool


@dataclass
class PoolCounts:
    """Read a host pool's counters: host-wide `used` and each guest's count."""

    host: str
    guests: list[str]


@dataclass
class Freeze:
    host: str
    guests: list[str]
    frozen: bool


# -- what a window produces -------------------------------------------------------------------
@dataclass
class GuestWindow:
    """One guest's report for epochs [e0, e1)."""

    name: str
    rows: dict[str, np.ndarray]  # GUEST_COLUMNS, one value per epoch
    backed: np.ndarray  # frames the host backs, per epoch
    violations: list[tuple[int, str, str]] = field(default_factory=list)  # (epoch, check, msg)
    events: list[tuple[int, str, dict]] = field(default_factory=list)  # (epoch, kind, fields)
    dev_ops: int = 0
    dev_bytes: int = 0
    state: GuestState | None = None


@dataclass
class HostWindow:
    """One host's report for a window: its guests' reports and its own rows and checks."""

    name: str
    guests: list[GuestWindow]
    rows: dict[str, np.ndarray]
    violations: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def dev_ops(self) -> int:
        return sum(g.dev_ops for g in self.guests)

    @property
    def dev_bytes(self) -> int:
        return sum(g.dev_bytes for g in self.guests)


class GuestRunner:
    """Runs one guest model window by window."""

    def __init__(self, model: GuestModel) -> None:
        self.model = model

    @property
    def name(self) -> str:
        return self.model.name

    def state(self) -> GuestState:
        g = self.model
        return GuestState(
            name=g.name,
            alloc_pages=g.alloc_pages,
            maxmem_pages=g.maxmem_pages,
            backed=g.frames.backed_count,
            tmem_pages=g.tmem_pages,
            tmem_view=int(np.count_nonzero(g.slot == FRONTSWAP)),
            window_new_puts=g.window_new_puts,
            alive=g.alive,
            tmem_quota=g.tmem_quota,
            tmem_capacity=g.tmem_capacity,
        )

    def window(
        self, e0: int, e1: int, dt: float, device: DeviceQueue, quota: int, capacity: int
    ) -> Generator[Any, Any, GuestWindow]:
        g = self.model
        g.tmem_quota, g.tmem_capacity = quota, capacity
        g.window_new_puts = 0
        n = e1 - e0
        rows = {c: np.zeros(n, np.float64 if c.endswith("_s") else np.int64) for c in GUEST_COLUMNS}
        backed = np.zeros(n, np.int64)
        out = GuestWindow(g.name, rows, backed)
        for i, e in enumerate(range(e0, e1)):
            ooms, was_alive = g.counters["guest_oom_kills"], g.alive
            s: EpochStats = yield from g.epoch(e, e * dt, dt, device)
            _fill_row(rows, i, g, s)
            backed[i] = g.frames.backed_count
            out.dev_ops += s.dev_ops
            out.dev_bytes += s.dev_bytes
            out.violations += [(e, check, msg) for check, msg in s.violations]
            if g.counters["guest_oom_kills"] != ooms:
                out.events.append((e, "oom_kill", {"guest": g.name, "host": g.host}))
            if g.alive and not was_alive:
                out.events.append((e + 1, "restart", {"guest": g.name, "host": g.host}))
        out.violations += [(e1 - 1, "conservation", m) for m in g.frame_audit()]
        out.state = self.state()
        return out

    def drain(self) -> Generator[Any, Any, tuple[int, EpochStats]]:
        return (yield from self.model.drain_tmem())

    def finish(self) -> Generator[Any, Any, tuple[dict, list[tuple[str, str]], np.ndarray]]:
        """Read the guest's stores back and check them; returns (summary, violations, hist)."""
        g = self.model
        reply = yield ReadAll(g.name, g.host, g.disk, g.uses_tmem)
        tmem, swap = reply
        violations = [("integrity", m) for m in checkers.integrity(g, tmem, swap)]
        if g.counters["stale_reads"]:
            violations.append(
                ("integrity", f"{g.name}: {g.counters['stale_reads']} stale read(s) in the run")
            )
        if g.counters["lost_pages"]:
            violations.append(
                (
                    "lost_pages_explained",
                    f"{g.name}: {g.counters['lost_pages']} page(s) lost, unexplained by any fault",
                )
            )
        if g.peak_billed_pages > g.maxmem_pages and g.peak_tmem_pages:
            violations.append(
                (
                    "frontswap",
                    f"{g.name}: billed {g.peak_billed_pages} pages above maxmem {g.maxmem_pages}",
                )
            )
        return guest_summary(g), violations, g.hist.copy()


def _fill_row(rows: dict[str, np.ndarray], i: int, g: GuestModel, s: EpochStats) -> None:
    bc = g.census
    rows["alive"][i] = int(s.alive)
    rows["work_s"][i] = s.work
    rows["stall_s"][i] = s.stall
    rows["touches"][i] = s.touches
    rows["faults"][i] = s.faults
    rows["disk_reads"][i] = s.disk_reads
    rows["disk_writes"][i] = s.disk_writes
    rows["tmem_puts"][i] = s.puts
    rows["tmem_put_failures"][i] = s.put_failures
    rows["tmem_gets"][i] = s.gets
    rows["untouched_pages"][i] = bc[UNTOUCHED]
    rows["resident_pages"][i] = bc[RAM]
    rows["frontswap_pages"][i] = bc[FRONTSWAP]
    rows["swap_pages"][i] = bc[SWAP]
    rows["tmem_pages"][i] = g.tmem_pages
    rows["free_frames"][i] = g.free_top


def _latency(hist: np.ndarray) -> dict[str, float]:
    return {
        "p50": hist_percentile(hist, 0.5),
        "p99": hist_percentile(hist, 0.99),
        "p99.9": hist_percentile(hist, 0.999),
    }


def guest_summary(g: GuestModel) -> dict:
    """The per-guest figures of summary.json."""
    return {
        "host": g.host,
        "progress": round(g.progress(), 6),
        "alive_seconds": round(g.alive_seconds, 6),
        "work_seconds": round(g.work_seconds, 6),
        "stall_seconds": round(g.stall_seconds, 9),
        "stall_pending_seconds": round(g.debt, 9),
        "downtime_seconds": round(g.downtime_seconds, 6),
        "stall_by_source": {k: round(v, 9) for k, v in g.stall_by_source.items()},
        "fault_latency": _latency(g.hist),
        "counters": {k: int(g.counters[k]) for k in COUNTERS},
        "memory_bytes": g.spec.memory,
        "maxmem_bytes": g.spec.maxmem,
        "footprint_pages": g.N,
        "pages_end": g.location_counts(),
        "tmem_pages_end": g.tmem_pages,
        "tmem_pages_peak": g.peak_tmem_pages,
        "tmem_clean_copies_end": int(
            np.count_nonzero((g.slot == FRONTSWAP) & (g.loc != FRONTSWAP))
        ),
    }


class HostRunner:
    """A host's bookkeeping: plans each window and checks what its guests report."""

    def __init__(self, host: HostModel, mechanism: Mechanism) -> None:
        self.host = host
        self.mechanism = mechanism

    @property
    def name(self) -> str:
        return self.host.name

    def plan(self, states: list[GuestState]) -> dict[str, tuple[int, int]]:
        """Refresh the guest mirrors and let the mechanism set each guest's (quota, cap)."""
        self.host.guests = states
        self.mechanism.plan_window(self.host)
        return {g.name: (g.tmem_quota, g.tmem_capacity) for g in states}

    def combine(self, e0: int, e1: int, guests: list[GuestWindow]) -> HostWindow:
        h = self.host
        n = e1 - e0
        rows = {c: np.zeros(n, np.int64) for c in HOST_COLUMNS}
        backed = sum((g.backed for g in guests), np.zeros(n, np.int64))
        tmem = sum((g.rows["tmem_pages"] for g in guests), np.zeros(n, np.int64))
        violations: list[tuple[int, str, str]] = []
        for i, e in enumerate(range(e0, e1)):
            b, t = int(backed[i]), int(tmem[i])
            rows["guest_frames"][i] = b
            rows["tmem_pages"][i] = t
            rows["free_pages"][i] = h.free_pages(b, t)
            violations += [(e, "conservation", m) for m in h.epoch_checks(b, t)]
        rows["ram_pages"][:] = h.ram_pages
        rows["reserve_pages"][:] = h.reserve_pages
        rows["cache_pages"][:] = h.cache_pages
        rows["buffer_pages"][:] = h.buffer_pages
        rows["tmem_capacity"][:] = h.tmem_capacity
        if h.frozen:
            for g in guests:
                puts = int(g.rows["tmem_puts"].sum())
                if puts:
                    violations.append(
                        (e1 - 1, "frontswap", f"{g.name}: {puts} put(s) succeeded while frozen")
                    )
        for g in guests:
            violations += g.violations
        self.host.guests = [g.state for g in guests]
        return HostWindow(h.name, guests, rows, violations)

    def check_counts(self, used: int, counts: dict[str, int]) -> list[str]:
        return checkers.pool_counters(self.name, used, counts, self.host.guests)

    def summary(self) -> dict:
        h = self.host
        ps = h.page_size
        return {
            "guests": [g.name for g in h.guests],
            "ram_bytes": h.ram_pages * ps,
            "reserve_bytes": h.reserve_pages * ps,
            "guest_frames_end": h.backed_pages(),
            "tmem_pages_end": h.tmem_pages(),
            "tmem_pages_peak": h.peak_tmem_pages,
            "free_pages_end": h.free_pages(),
            "free_pages_min": h.min_free_pages,
        }


# -- the store side of requests ---------------------------------------------------------------
class StoreOps:
    """Answers model requests with store adapters; written once for sync and async clients.

    `pool(host)` and `swap` return sync or async adapters; `_call` awaits when needed. Each
    method is a generator of adapter calls so `SyncExecutor` and `AsyncExecutor` share it.
    """

    def __init__(self, payload: str, page_size: int) -> None:
        self.payload = payload
        self.page_size = page_size

    def plan(self, req: Any, pool: Any, swap: Any) -> Generator[tuple[Any, ...], Any, Any]:
        """Yields (callable, args, kwargs) steps; returns the reply."""
        mode, ps = self.payload, self.page_size
        if isinstance(req, Request):
            rep = Reply()
            if req.tmem is not None:
                t = req.tmem
                if t.flush_area:
                    rep.area_flushed = yield (pool.flush_area, (req.guest,), {})
                if len(t.gets) or len(t.flushes) or t.puts is not None:
                    rep.tmem = yield (
                        pool.batch,
                        (req.guest,),
                        dict(
                            gets=t.gets,
                            flushes=t.flushes,
                            puts=t.puts,
                            quota=t.quota,
                            capacity=t.capacity,
                            exclusive_gets=t.exclusive_gets,
                            mode=mode,
                            page_size=ps,
                        ),
                    )
            if req.swap is not None:
                s = req.swap
                if s.drop:
                    rep.dropped = yield (swap.drop, (req.disk,), {})
                if len(s.reads) or len(s.frees) or s.writes is not None:
                    rep.swap = yield (
                        swap.batch,
                        (req.disk, req.guest),
                        dict(
                            reads=s.reads,
                            frees=s.frees,
                            writes=s.writes,
                            mode=mode,
                            page_size=ps,
                        ),
                    )
            return rep
        if isinstance(req, ReadAll):
            tm = None
            if req.tmem:
                tm = yield (pool.read_all, (req.guest, mode, ps), {})
            sw = yield (swap.read_all, (req.disk, req.guest, mode, ps), {})
            return tm, sw
        if isinstance(req, PoolCounts):
            used = yield (pool.used, (), {})
            counts = {}
            for g in req.guests:
                counts[g] = yield (pool.guest_count, (g,), {})
            return used, counts
        if isinstance(req, Freeze):
            for g in req.guests:
                yield ((pool.freeze if req.frozen else pool.thaw), (g,), {})
            return None
        raise TypeError(f"unknown store request {type(req).__name__}")


def host_of(req: Any) -> str:
    return req.host
