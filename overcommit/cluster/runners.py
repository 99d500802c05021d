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

import functools
import math
from array import array
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.cluster import checkers
from overcommit.cluster.failover import HostStatus, hist_latency
from overcommit.cluster.migrating import migration_window, remote_epoch, remote_final
from overcommit.cluster.storeops import ReadAll, StoreReadback
from overcommit.metrics import GUEST_COLUMNS, HOST_COLUMNS
from overcommit.nodes.frontswap import share_identical
from overcommit.nodes.guest import (
    COUNTERS,
    FILE,
    FRONTSWAP,
    RAM,
    SWAP,
    UNTOUCHED,
    ZPOOL,
    EpochStats,
    GuestModel,
    Request,
    SwapOps,
)
from overcommit.nodes.host import Directives, GuestState, HostModel, HostUse
from overcommit.nodes.host_swap import HEADROOM
from overcommit.nodes.mechanism import Mechanism
from overcommit.profiles import DeviceQueue

# Every guest recounts its ledgers from its page and frame tables when a window crosses a
# multiple of this many epochs (30 s at the default epoch, and at the end); every epoch it
# checks the ledgers.
AUDIT_EPOCHS = 300
_E = np.empty(0, np.uint32)


@dataclass
class Boot:
    """How a restarted guest boots: at epoch `epoch` (time `t`), after `downtime` seconds
    without a host, taking `boot_time` seconds before its workload runs."""

    epoch: int
    t: float
    downtime: float
    boot_time: float = 0.0


# -- what a window produces -------------------------------------------------------------------
@dataclass
class GuestWindow:
    """One guest's report for epochs [e0, e1).

    Its time series travel as two blocks (`block`: each epoch's `_row` values by column;
    `fblock`: work and stall), two arrays to pickle across processes rather than one per
    column; `rows` and `backed` are views of them, built where they are read."""

    name: str
    block: np.ndarray  # int64 (len(_ROW), epochs)
    fblock: np.ndarray  # float64 (len(_FLOATS), epochs)
    violations: list[tuple[int, str, str]] = field(default_factory=list)  # (epoch, check, msg)
    events: list[tuple[int, str, dict]] = field(default_factory=list)  # (epoch, kind, fields)
    dev_ops: int = 0
    dev_bytes: int = 0
    hswap_ops: int = 0  # operations and bytes on the host's swap device
    hswap_bytes: int = 0
    state: GuestState | None = None
    carry: dict | None = None  # the guest's accounting at the window's end (see GuestModel.carry)
    migration: dict | None = None  # a live migration's record (see overcommit.migration.transfer)
    stream: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (pages, versions)
    # its rounds sent this window

    @functools.cached_property
    def rows(self) -> dict[str, np.ndarray]:
        """`GUEST_COLUMNS`, one value per epoch (views of the blocks)."""
        blocks = (self.block, self.fblock)
        return {c: blocks[c.endswith("_s")][_AT[c]] for c in GUEST_COLUMNS}

    @property
    def backed(self) -> np.ndarray:
        """Frames the host backs with RAM, per epoch."""
        return self.block[-1]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("rows", None)  # views: rebuilt from the blocks on the other side
        return state


def _stack(guests: list[GuestWindow]) -> tuple[np.ndarray, np.ndarray]:
    """Several guests' blocks of one window stacked: (guests, rows, epochs), ints and floats."""
    return np.stack([g.block for g in guests]), np.stack([g.fblock for g in guests])


@dataclass
class HostWindow:
    """One host's report for a window: its guests' reports and its own rows and checks."""

    name: str
    guests: list[GuestWindow]
    rows: dict[str, np.ndarray]
    violations: list[tuple[int, str, str]] = field(default_factory=list)
    status: Any = None  # HostStatus at the window's end (for the HA controller)

    @functools.cached_property
    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """The guests' blocks stacked (`_stack`), built once: the host's totals, the driver's
        recording and the pickled report all read this one copy."""
        return _stack(self.guests)

    @functools.cached_property
    def guest_rows(self) -> dict[str, np.ndarray]:
        """The guests' rows: column -> (guests, epochs), in `guests` order (views of
        `blocks`)."""
        if not self.guests:
            return {}
        blocks = self.blocks
        return {c: blocks[c.endswith("_s")][:, _AT[c]] for c in GUEST_COLUMNS}

    def __getstate__(self) -> dict:
        """Pickled (a host actor's report to the driver) with its guests' blocks and latency
        histograms stacked: three arrays for the host rather than three per guest."""
        state = self.__dict__.copy()
        state.pop("guest_rows", None)
        gs = self.guests
        if not gs:
            state.pop("blocks", None)
            return state
        state["blocks"] = self.blocks
        hist = [i for i, g in enumerate(gs) if g.carry is not None and "hist" in g.carry]
        if hist:
            state["_hists"] = (hist, np.stack([gs[i].carry["hist"] for i in hist]))
        bare = []
        for g in gs:
            b = object.__new__(GuestWindow)
            b.__dict__.update(g.__dict__)
            b.__dict__.pop("rows", None)
            b.block = b.fblock = None
            bare.append(b)
        for i in hist:
            bare[i].carry = {**gs[i].carry, "hist": None}
        state["guests"] = bare
        return state

    def __setstate__(self, state: dict) -> None:
        hists = state.pop("_hists", None)
        self.__dict__.update(state)  # `blocks` stays cached: the guests' blocks are its views
        if "blocks" in state:
            for g, block, fblock in zip(self.guests, *state["blocks"]):
                g.block, g.fblock = block, fblock
        if hists is not None:
            for i, hist in zip(*hists):
                self.guests[i].carry["hist"] = hist

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
        cache = g.cache
        keys = counts = sizes = None
        unkeyed = 0
        if g.billing is not None and g.billing.dedup:
            keys, counts, sizes, unkeyed = g.billing.report(np.flatnonzero(g.slot == FRONTSWAP))
        return GuestState(
            name=g.name,
            alloc_pages=g.alloc_pages,
            maxmem_pages=g.maxmem_pages,
            memory_pages=g.memory_pages,
            nframes=g.nframes,
            min_alloc=g.min_alloc,
            backed=g.frames.backed_count,
            hswapped=g.frames.hswapped_count,
            tmem_pages=g.tmem_pages,
            tmem_view=int(g.slot_census[FRONTSWAP]),  # the slot ledger (audited each 300 epochs)
            tmem_billed=g.tmem_billed,
            tmem_keys=keys,
            tmem_key_counts=counts,
            tmem_key_sizes=sizes,
            tmem_unkeyed_bytes=unkeyed,
            window_new_puts=g.window_new_puts,
            alive=g.alive,
            cooperative=g.cooperative,
            active_pages=g.active_pages(),
            cache_pages=cache.count if cache is not None else 0,
            cache_dirty=cache.dirty if cache is not None else 0,
            cache_demand=cache.demand if cache is not None else 0,
            ephemeral_pages=g.eph_pages,
            ephemeral_demand=g.eph_demand,
            file_pages=g.workload.file_pages if g.cleancache else 0,
            alloc_goal=g.selfballoon.goal_alloc if g.selfballoon is not None else None,
            swap_pages=g.swap_slots,
            next_epoch=g.next_epoch,
            merged=g.frames.merged_count,
            candidates=_ksm_candidates(g),
            merged_keys=np.unique(g.frames.mkey[g.frames.mkey != 0]) if g.sharing else None,
        )

    def window(
        self, e0: int, e1: int, dt: float, device: DeviceQueue, directives: Directives
    ) -> Generator[Any, Any, GuestWindow]:
        """Run epochs [e0, e1) under the host's directives for this window."""
        g = self.model
        if g.cooperative and _stopped_cooperating(g, e0):
            g.stop_cooperating()
        g.start_window(e0, directives)
        n = e1 - e0
        out = GuestWindow(g.name, _NO_BLOCK, _NO_BLOCK)
        ints: list = []  # each epoch's `_row` values, one after the other
        floats: list[float] = []  # each epoch's work and stall
        violations = out.violations
        dev_ops = dev_bytes = hswap_ops = hswap_bytes = 0
        for e in range(e0, e1):
            c = g.counters
            ooms, hooms, was_alive = c["guest_oom_kills"], c["host_oom_kills"], g.alive
            shrink = (yield from g.shrink_tmem(device, dt)) if g.shrink_left else None
            s: EpochStats = yield from g.epoch(e, e * dt, dt, device)
            if g.migration is not None:  # post-copy: pages to or from the source's store
                audit = (e + 1) % AUDIT_EPOCHS == 0
                violations += yield from remote_epoch(g, e, audit)
            if shrink is not None:  # the reclaim's writes load the device like the epoch's
                s.disk_writes += shrink.disk_writes
                s.dev_ops += shrink.dev_ops
                s.dev_bytes += shrink.dev_bytes
                s.violations += shrink.violations
            ints += _row(g, s)
            floats += (s.work, s.stall)
            dev_ops += s.dev_ops
            dev_bytes += s.dev_bytes
            hswap_ops += s.hswap_ops
            hswap_bytes += s.hswap_bytes
            if s.violations:
                violations += [(e, check, msg) for check, msg in s.violations]
            c = g.counters
            if c["guest_oom_kills"] != ooms:
                out.events.append((e, "oom_kill", {"guest": g.name, "host": g.host}))
            if c["host_oom_kills"] != hooms:
                out.events.append((e, "host_oom_kill", {"guest": g.name, "host": g.host}))
            if g.alive and not was_alive:
                out.events.append((e + 1, "restart", {"guest": g.name, "host": g.host}))
        out.block, out.fblock = _columns(ints, floats, n)
        out.dev_ops, out.dev_bytes = dev_ops, dev_bytes
        out.hswap_ops, out.hswap_bytes = hswap_ops, hswap_bytes
        g.next_epoch = e1
        if e0 // AUDIT_EPOCHS != e1 // AUDIT_EPOCHS:  # recount the ledgers from the tables
            out.violations += [(e1 - 1, "conservation", m) for m in g.conservation(full=True)]
        out.state = self.state()
        out.carry = g.carry()
        if g.migration is not None:
            migration_window(g, out, dt)
        return out

    def leave_source(self, flush_tmem: bool) -> Generator[Any, Any, dict]:
        """A migrating guest's memory leaves its source's stores (GuestModel.leave_source)."""
        return (yield from self.model.leave_source(flush_tmem))

    def arrive(self, dest: str, records: Any) -> Generator[Any, Any, dict]:
        """...and arrives at `dest` (GuestModel.arrive)."""
        return (yield from self.model.arrive(dest, records))

    def release_host_stores(self) -> Generator[Any, Any, None]:
        yield from self.model.release_host_stores()

    def crash(self, t: float, reboot: float) -> Generator[Any, Any, None]:
        """The guest crashes where it runs (pages it could not fault in are gone) and reboots
        in place after `reboot` seconds: its host's stores and disks are dropped first."""
        yield from self.model.release_host_stores()
        yield from self.model.crash(t, reboot)

    def backend_lost(self, t: float, reboot: float) -> Generator[Any, Any, dict[str, int]]:
        """The host's Redis died under this guest (see GuestModel.backend_lost)."""
        return (yield from self.model.backend_lost(t, reboot))

    def adopt(self, carry: dict, boot: Boot) -> Generator[Any, Any, None]:
        """Boot as a later incarnation: continue `carry`'s accounting and drop the disks of
        the incarnation that died (shared storage still holds them)."""
        g = self.model
        g.adopt(carry, boot.downtime)
        g.next_epoch = boot.epoch
        if boot.boot_time > 0:
            g.alive = False
            g.down_until = boot.t + boot.boot_time
        old = Request(g.name, g.host, carry["disk"], swap=SwapOps(_E, _E, None, drop=True))
        if carry["files"]:
            old.files = SwapOps(_E, _E, None, drop=True)
        yield old

    def drain(self) -> Generator[Any, Any, tuple[int, EpochStats]]:
        return (yield from self.model.drain_tmem())

    def finish(self) -> Generator[Any, Any, tuple[dict, list[tuple[str, str]], np.ndarray]]:
        """Read the guest's stores back and check them; returns (summary, violations, hist)."""
        g = self.model
        reply = yield ReadAll(
            g.name,
            g.host,
            g.disk,
            g.uses_tmem,
            hswap=g.host_swap,
            cache=g.cache is not None,
            files=g.has_files,
            eph=g.cleancache,
            cache_store=getattr(g.cache, "store", "dcache"),
        )
        back = reply if isinstance(reply, StoreReadback) else StoreReadback(*reply)
        violations = [("integrity", m) for m in checkers.integrity(g, back.tmem, back.swap, back)]
        violations += [("conservation", m) for m in g.conservation(full=True)]
        if g.migration is not None:  # a run that ends in post-copy: what the source holds
            violations += yield from remote_final(g)
        if g.counters["stale_reads"]:
            violations.append(
                ("integrity", f"{g.name}: {g.counters['stale_reads']} stale read(s) in the run")
            )
        if g.counters["lost_pages"]:
            violations.append(
                (
                    "no_missing_pages",
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


def _stopped_cooperating(g: GuestModel, epoch: int) -> bool:
    """Whether a `stop_cooperating` event for the guest is due at or before `epoch` (the guest
    reads its timeline from the scenario, so no runtime call is needed)."""
    sc = g.settings
    for ev in getattr(sc, "events", None) or ():
        if getattr(ev, "stop_cooperating", None) == g.name and _epoch_of(sc, ev.at) <= epoch:
            return True
    return False


def _epoch_of(sc: Any, at: float) -> int:
    dt = float(sc.epoch)
    return min(math.ceil(at / dt - 1e-9), max(0, math.ceil(sc.duration / dt - 1e-9) - 1))


def _ksm_candidates(g: GuestModel) -> np.ndarray | None:
    if not g.sharing:
        return None
    if not g.ksm_candidates:
        return np.zeros(0, np.uint64)
    return np.unique(np.concatenate(g.ksm_candidates))


#: the integer columns in the order `_row` gives their values, then the frames the host
#: backs (`GuestWindow.backed`); the float columns (`_s`) are each epoch's work and stall
_ROW = tuple(
    """
    alive touches faults disk_reads disk_writes tmem_puts tmem_put_failures tmem_gets
    untouched_pages resident_pages frontswap_pages swap_pages tmem_pages tmem_billed
    free_frames alloc_pages balloon_pages balloon_target host_frames hswap_frames
    host_swap_ins double_swaps cache_pages cache_dirty zpool_pages zpool_held zpool_stale
    zpool_bytes zpool_frames merged_frames file_pages file_reads ephemeral_pages
    cleancache_hits backed
    """.split()  # noqa: SIM905 - 35 names: a list literal takes a line each
)
_FLOATS = ("work_s", "stall_s")
_AT = {c: k for k, c in enumerate(_ROW)} | {c: k for k, c in enumerate(_FLOATS)}
assert set(_ROW[:-1]) | set(_FLOATS) == set(GUEST_COLUMNS) and len(_AT) == len(GUEST_COLUMNS) + 1
_NO_BLOCK = np.zeros((0, 0))  # a window's blocks until its epochs have run


def _row(g: GuestModel, s: EpochStats) -> tuple:
    """One epoch's integer values, in `_ROW`'s order (its time-series row, less work and
    stall, and the frames the host backs)."""
    bc = g.census.tolist()  # six numbers: indexing a list is cheaper than the array
    fr = g.frames
    pool, cache, balloon = g.pool, g.cache, g.balloon
    return (
        int(s.alive),
        s.touches,
        s.faults,
        s.disk_reads,
        s.disk_writes,
        s.puts,
        s.put_failures,
        s.gets,
        bc[UNTOUCHED],
        bc[RAM],
        bc[FRONTSWAP],
        bc[SWAP],
        g.tmem_pages,
        g.tmem_billed,
        g.free_top,
        g.nframes - g.balloon_n,  # alloc_pages
        g.balloon_n,
        balloon.wanted if balloon is not None else 0,
        fr.backed_count,
        fr.hswapped_count,
        s.host_swap_ins,
        s.double_swaps,
        cache.count if cache is not None else 0,
        cache.dirty if cache is not None else 0,
        bc[ZPOOL] if pool is not None else 0,
        pool.live_pages if pool is not None else 0,
        pool.stale_pages if pool is not None else 0,
        pool.stored_bytes() if pool is not None else 0,
        pool.frames if pool is not None else 0,
        fr.merged_count,
        bc[FILE],
        s.file_reads,
        g.eph_pages,
        s.cleancache_hits,
        fr.backed_count,
    )


def _columns(ints: list, floats: list[float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """A window's blocks (`GuestWindow.block`, `fblock`: one row per `_ROW` column, then per
    float column) from its epochs' `_row` values and their work and stall, one conversion
    each."""
    try:  # Python ints (or numpy's): exact, in one pass
        flat = np.frombuffer(array("q", ints), np.int64)
    except TypeError:  # a float value: numpy truncates it as an element assignment does
        flat = np.array(ints, np.int64)
    block = flat.reshape(n, len(_ROW)).T.copy()
    fblock = np.array(floats, np.float64).reshape(n, len(_FLOATS)).T.copy()
    return block, fblock


def guest_summary(g: GuestModel) -> dict:
    """The per-guest figures of summary.json."""
    return {
        "host": g.host,
        "incarnation": g.incarnation,
        "progress": round(g.progress(), 6),
        "alive_seconds": round(g.alive_seconds, 6),
        "work_seconds": round(g.work_seconds, 6),
        "stall_seconds": round(g.stall_seconds, 9),
        "stall_pending_seconds": round(g.debt, 9),
        "downtime_seconds": round(g.downtime_seconds, 6),
        "stall_by_source": {k: round(v, 9) for k, v in g.stall_by_source.items()},
        "fault_latency": hist_latency(g.hist),
        "counters": {k: int(g.counters[k]) for k in COUNTERS},
        "memory_bytes": g.spec.memory,
        "maxmem_bytes": g.spec.maxmem,
        "footprint_pages": g.N,
        "pages_end": g.location_counts(),
        "tmem_pages_end": g.tmem_pages,
        "tmem_billed_end": g.tmem_billed,
        "tmem_pages_peak": g.peak_tmem_pages,
        "tmem_clean_copies_end": int(
            np.count_nonzero((g.slot == FRONTSWAP) & (g.loc != FRONTSWAP))
        ),
        "frames": g.nframes,
        "alloc_pages_end": g.alloc_pages,
        "balloon_lag_seconds": round(g.balloon_lag_seconds, 9),
        "zpool_bytes_end": g.pool.stored_bytes() if g.pool is not None else 0,
        "zpool_frames_end": g.pool.frames if g.pool is not None else 0,
    }


class HostRunner:
    """A host's bookkeeping: plans each window and checks what its guests report."""

    def __init__(self, host: HostModel, mechanism: Mechanism) -> None:
        self.host = host
        self.mechanism = mechanism

    @property
    def name(self) -> str:
        return self.host.name

    def plan(
        self,
        states: list[GuestState],
        orders: dict[str, Any] | None = None,
        promised: dict[str, int] | None = None,
    ) -> dict[str, Directives]:
        """Refresh the guest mirrors and let the mechanism set each guest's directives for
        the next window (plain data, sent to wherever the guest runs); `orders` are the live
        migrations of its guests (a migrating guest's pool refuses puts)."""
        h = self.host
        h.guests = states
        here = {g.name for g in states}
        h.promised = sum(p for g, p in (promised or {}).items() if g not in here)
        h.refresh()
        h.granted = 0
        h.reclaiming = h.reclaim_need > 0
        if states:
            h.reclaiming = h.reclaiming or _reclaiming_at(h, min(g.next_epoch for g in states))
        for g in states:
            g.plan.hswap_capacity = h.hswap_pages_cap
        if h.tmem_dedup and self.mechanism.guest_uses_tmem:
            share_identical(h)  # content several pool pages hold: stored once from now on
        h.lendable_at_plan = h.lendable()
        self.mechanism.plan_window(h)
        for g in states:
            order = (orders or {}).get(g.name)
            g.plan.migration = order
            if order is not None:
                g.plan.tmem_quota = min(g.plan.tmem_quota, g.tmem_billed)  # frozen: no puts
        return {g.name: g.plan for g in states}

    def combine(self, e0: int, e1: int, guests: list[GuestWindow]) -> HostWindow:
        h = self.host
        n = e1 - e0
        rows = {c: np.zeros(n, np.int64) for c in HOST_COLUMNS}

        blocks = _stack(guests) if guests else None  # also the report's (`HostWindow.blocks`)
        # every column's total by epoch, the guests' blocks summed once
        totals = blocks[0].sum(axis=0) if guests else np.zeros((len(_ROW), n), np.int64)

        def total(col: str) -> np.ndarray:
            return totals[_AT[col]]

        # host RAM backing guests: resident frames, less those merged onto shared frames
        backed = totals[-1] - total("merged_frames")
        # the persistent pool's RAM: what each guest is billed, and the host's shared store
        tmem = total("tmem_billed") + h.tmem_shared_pages
        cache, hswap = total("cache_pages"), total("hswap_frames")
        eph = total("ephemeral_pages")
        violations: list[tuple[int, str, str]] = []
        for i, e in enumerate(range(e0, e1)):
            use = HostUse(
                int(backed[i]),
                int(tmem[i]),
                int(cache[i]),
                int(eph[i]),
                h.shared_pages,
                int(hswap[i]),
            )
            rows["guest_frames"][i] = use.backed + use.shared  # shared frames count once
            rows["tmem_pages"][i] = use.tmem
            rows["ephemeral_pages"][i] = use.ephemeral
            rows["cache_pages"][i] = use.cache
            rows["hswap_pages"][i] = use.hswap
            rows["shared_pages"][i] = use.shared
            rows["free_pages"][i] = h.free_pages(use)
            violations += [(e, "conservation", m) for m in h.epoch_checks(use)]
        rows["ram_pages"][:] = h.ram_pages
        rows["reserve_pages"][:] = h.reserve_pages
        rows["tmem_capacity"][:] = h.tmem_capacity
        rows["ephemeral_capacity"][:] = h.ephemeral_capacity
        rows["tmem_stored"][:] = total("tmem_pages")
        rows["tmem_shared_pages"][:] = h.tmem_shared_pages
        rows["lendable_pages"][:] = h.lendable_at_plan
        rows["mem_state"][:] = STATE_CODES.get(h.state, 0)
        rows["up"][:] = 1
        if h.frozen:
            for g in guests:
                puts = int(g.rows["tmem_puts"].sum())
                if puts:
                    violations.append(
                        (e1 - 1, "frontswap", f"{g.name}: {puts} put(s) succeeded while frozen")
                    )
        if h.hswap_device is not None:
            ops = sum(g.hswap_ops for g in guests)
            nbytes = sum(g.hswap_bytes for g in guests)
            h.hswap_device.close_window(ops, nbytes, n * h.epoch_seconds)
        for g in guests:
            violations += g.violations
        h.guests = [g.state for g in guests]
        h.refresh()
        out = HostWindow(h.name, guests, rows, violations, self.status())
        if blocks is not None:
            out.blocks = blocks  # fills the cached property: the stack is built once
        return out

    def status(self) -> HostStatus:
        """The host's memory now, for the HA controller."""
        h = self.host
        room = h.guest_room()
        return HostStatus(
            room=room,
            reserved=h.reserved_pages(),
            free=h.free_pages(),
            tmem=h.tmem_pages(),
            tmem_uncoop=sum(g.tmem_billed for g in h.guests if not g.cooperative),
            cache=h.cache_pages,
            ephemeral=h.ephemeral_pages,
            hswap_free=max(0, h.hswap_pages_cap - sum(g.hswapped for g in h.guests)),
            headroom=math.ceil(HEADROOM * max(0, room)),
        )

    def check_counts(self, used: int, counts: dict[str, int]) -> list[str]:
        return checkers.pool_counters(self.name, used, counts, self.host.guests)

    def summary(self) -> dict:
        h = self.host
        ps = h.page_size
        return {
            "alive": True,
            "guests": [g.name for g in h.guests],
            "ram_bytes": h.ram_pages * ps,
            "reserve_bytes": h.reserve_pages * ps,
            "guest_frames_end": h.backed_pages(),
            "tmem_pages_end": h.tmem_pages(),
            "tmem_stored_end": sum(g.tmem_pages for g in h.guests),
            "tmem_shared_pages_end": h.tmem_shared_pages,
            "tmem_pages_peak": h.peak_tmem_pages,
            "hswap_pages_peak": h.peak_hswap_pages,
            "cache_pages_end": h.cache_pages,
            "ephemeral_pages_end": h.ephemeral_pages,
            "free_pages_end": h.free_pages(),
            "free_pages_min": h.min_free_pages,
        }


STATE_CODES = {"": 0, "high": 0, "clear": 1, "soft": 2, "hard": 3, "low": 4}


def _reclaiming_at(host: HostModel, epoch: int) -> bool:
    """Whether a `host_reclaim` event (and no later `host_release`) is in force for the host
    at `epoch`; the host reads its timeline from the scenario, so no runtime call is needed."""
    sc = host.settings
    if sc is None or not getattr(sc, "events", None):
        return host.reclaiming
    state = False
    for ev in sc.events:  # in timeline order: the latest event at or before the epoch counts
        if _epoch_of(sc, ev.at) > epoch:
            continue
        if getattr(ev, "host_reclaim", None) == host.name:
            state = True
        elif getattr(ev, "host_release", None) == host.name:
            state = False
    return state
