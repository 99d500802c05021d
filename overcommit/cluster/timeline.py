"""The scenario's timeline inside a run: events in order (`_timeline`), the faults in force
(`_Faults`: slow storage, network drops), and how each event acts on the cluster
(`_apply_event`: host failures and recoveries, tmem backend failures, migrations,
evacuations, host reclaim), logged in the event log."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overcommit.cluster.chaos import chaos_events
from overcommit.cluster.failover import (
    Controller,
    HostStatus,
    empty_status,
)
from overcommit.config import EVENT_ACTIONS
from overcommit.nodes.guest import (
    EpochStats,
)
from overcommit.profiles import DeviceQueue


def _timeline(sc: Any, epochs: int) -> list[tuple[int, int, Any]]:
    """(epoch, order, event) of the scenario's events and its chaos schedule's, in order."""
    dt = sc.epoch
    events = [*sc.events, *chaos_events(sc)]
    return sorted(
        ((min(epochs - 1, math.ceil(ev.at / dt - 1e-9)), i, ev) for i, ev in enumerate(events)),
        key=lambda x: (x[0], x[1]),
    )


class _Faults:
    """The driver's state of modeled faults: slowed storage, hosts asked to reclaim."""

    def __init__(self, device: DeviceQueue) -> None:
        self.device = device
        self.base = device.profile
        self.slow: list[tuple[int, float]] = []  # (end epoch, factor)
        self.net: list[tuple[int, float]] = []  # network drops: (end epoch, factor)
        self.net_factor = 1.0
        self.needs: dict[str, int] = {}

    def slow_storage(self, end: int, factor: float) -> None:
        self.slow.append((end, factor))

    def apply(self, e: int) -> None:
        """Shared storage runs at the smallest factor of the slowdowns in force at `e`."""
        self.slow = [(end, f) for end, f in self.slow if end > e]
        self.net = [(end, f) for end, f in self.net if end > e]
        self.net_factor = min((f for _, f in self.net), default=1.0)
        factor = min((f for _, f in self.slow), default=1.0)
        p = self.base
        self.device.profile = (
            p
            if factor >= 1.0
            else dataclasses.replace(p, iops=p.iops * factor, bandwidth=p.bandwidth * factor)
        )

    def cuts(self) -> set[int]:
        return {end for end, _ in self.slow} | {end for end, _ in self.net}


@dataclass
class _EventContext:
    sc: Any
    runtime: Any
    ctl: Controller
    faults: _Faults
    carries: dict[str, dict]
    status: dict[str, HostStatus]
    fo: dict[str, int]
    log: Callable[..., None]
    e: int
    order: int
    real: Any = None  # RealFaults of a drill that removes Ray nodes
    mig: Any = None  # the running live migrations

    def emit(self, kind: str, sub: int = 0, **fields: Any) -> None:
        self.log(self.e, kind, (0, self.order * 100 + sub), **fields)


def _apply_event(ev: Any, ctx: _EventContext) -> EpochStats | None:
    """Apply one timeline event; returns the device load and violations it caused, if any."""
    runtime, ctl, e = ctx.runtime, ctx.ctl, ctx.e
    action, target = ev.action, ev.target
    tag = {"chaos": True} if ev._chaos else {}
    kind = EVENT_ACTIONS[action]
    if kind == "host" and not ctl.alive[target] and action != "recover_host":
        ctx.emit(action, host=target, skipped="the host is down", **tag)
        return None
    if action == "tmem_flush" and ctl.where.get(target) is None:
        ctx.emit(action, guest=target, skipped="the guest is down", **tag)
        return None
    if action == "tmem_freeze":
        runtime.set_frozen(target, True)
        ctx.emit(action, host=target)
    elif action == "tmem_thaw":
        runtime.set_frozen(target, False)
        ctx.emit(action, host=target)
    elif action == "tmem_flush":
        moved, stats = runtime.drain(target)
        spec = ctl.specs[target]
        ctx.emit(
            action,
            guest=target,
            host=ctl.where[target],
            pages_moved=moved,
            cooperative=spec.cooperative,
        )
        return stats
    elif action in ("host_reclaim", "host_release"):  # the host reads its timeline
        ctx.emit(action, host=target)
    elif action == "stop_cooperating":  # the guest reads its timeline
        ctx.emit(action, guest=target, host=ctl.where.get(target))
    elif action == "slow_storage":
        end = e + max(1, math.ceil(target.duration / ctx.sc.epoch - 1e-9))
        ctx.faults.slow_storage(end, target.factor)
        ctx.emit(action, factor=target.factor, duration=target.duration, **tag)
    elif action == "network":
        end = e + max(1, math.ceil(target.duration / ctx.sc.epoch - 1e-9))
        ctx.faults.net.append((end, target.factor))
        ctx.emit(action, factor=target.factor, duration=target.duration, **tag)
    elif action == "fail_host":
        if ctx.real is not None:  # a drill with real faults: remove the host's Ray node and
            ctx.real.kill(target)  # wait until the driver sees its actor dead
            runtime.await_death(target)
            tag = {**tag, "detected": "the host's Ray actor died"}
        _fail_host(target, ctx, tag)
    elif action == "recover_host":
        if ctl.alive[target]:
            ctx.emit(action, host=target, skipped="the host is up", **tag)
            return None
        if ctx.real is not None:
            ctx.real.revive(target)
        runtime.recover_host(target)
        ctl.host_recovered(target, e)
        ctx.status[target] = empty_status(ctx.sc)  # back empty: all its RAM is free
        ctx.fo["host_recoveries"] += 1
        ctx.emit(action, host=target, **tag)
    elif action == "tmem_backend_failure":
        _backend_failure(target, ctx, tag)
    elif action == "migrate":
        host = ctl.where.get(target)
        rec = ctx.mig.request(target, ev.to, ev.mode, e)
        mode = ev.mode or ctx.sc.migration.mode
        extra = {"refused": rec["outcome"]} if rec is not None else {}
        if rec is not None:
            ctx.mig.records.append(rec)
        ctx.emit(action, guest=target, host=host, to=ev.to, mode=mode, **extra)
    elif action == "evacuate":
        guests = ctx.mig.evacuate(target, e)
        ctx.emit(action, host=target, guests=guests)
    return None


def _emit_crash(
    ctx: _EventContext, order: int, guest: str, host: str | None, reason: str, **extra: Any
) -> None:
    """Log a guest's crash with what its carried accounting says it lost."""
    c = ctx.carries[guest]
    ctx.emit(
        "guest_crash",
        order,
        guest=guest,
        host=host,
        reason=reason,
        tmem_pages_lost=c["lost_tmem"],
        hswap_pages_lost=c["lost_hswap"],
        **extra,
    )


def _fail_host(target: str, ctx: _EventContext, tag: dict[str, Any]) -> None:
    """The host dies now: its guests crash, with what only it held; HA takes over."""
    runtime, ctl, e, action = ctx.runtime, ctx.ctl, ctx.e, "fail_host"
    lost_remote = [] if ctx.mig is None else ctx.mig.host_failed(target, e)
    guests = list(ctl.members[target])
    runtime.fail_host(target)
    ctx.status.pop(target, None)
    ctl.host_failed(target, e, {g: ctx.carries[g] for g in guests})
    lost_t = sum(ctx.carries[g]["lost_tmem"] for g in guests)
    lost_h = sum(ctx.carries[g]["lost_hswap"] for g in guests)
    ctx.fo["host_failures"] += 1
    ctx.fo["guests_crashed"] += len(guests)
    ctx.fo["tmem_pages_lost"] += lost_t
    ctx.fo["hswap_pages_lost"] += lost_h
    ctx.emit(
        action,
        host=target,
        guests=guests,
        tmem_pages_lost=lost_t,
        hswap_pages_lost=lost_h,
        **tag,
    )
    for k, g in enumerate(guests):
        _emit_crash(ctx, 1 + k, g, target, "host failed")
    episode = len(ctl.episodes) - 1
    for k, (g, what, info) in enumerate(lost_remote):
        if what == "drop":  # the destination died in post-copy: the source drops what it held
            runtime.drop_remote(g, info["source"], info["migration"])
            continue
        if what != "lost":
            runtime.cancel_migration(g)
            continue
        host = ctl.where.get(g)
        runtime.crash_guest(g)
        ctl.guest_lost(g, episode, e, ctx.carries[g])
        c = ctx.carries[g]
        ctx.fo["guests_crashed"] += 1
        ctx.fo["tmem_pages_lost"] += c["lost_tmem"]
        ctx.fo["hswap_pages_lost"] += c["lost_hswap"]
        _emit_crash(
            ctx,
            500 + k,
            g,
            host,
            "post-copy source failed",
            remote_pages_lost=info["remote_lost"],
        )


def _backend_failure(target: str, ctx: _EventContext, tag: dict[str, Any]) -> None:
    """The host's Redis dies and comes back empty; guests with pages only there crash."""
    runtime, ctl, action = ctx.runtime, ctx.ctl, "tmem_backend_failure"
    lost = runtime.backend_failure(target, ctx.e * ctx.sc.epoch, ctx.sc.ha.boot_time)
    crashed = [g for g in ctl.members[target] if lost[g]["crashed"]]
    for g in crashed:  # a guest that crashed is no longer migrating
        if ctx.mig is not None:
            ctx.mig.cancel(g, ctx.e, "failed: the guest crashed", runtime)
    ctx.fo["backend_failures"] += 1
    ctx.fo["guests_crashed"] += len(crashed)
    for g in ctl.members[target]:
        ctx.fo["tmem_pages_lost"] += lost[g]["tmem"] if lost[g]["crashed"] else 0
        ctx.fo["hswap_pages_lost"] += lost[g]["hswap"] if lost[g]["crashed"] else 0
        ctx.fo["cache_pages_lost"] += lost[g]["cache"] if lost[g]["crashed"] else 0
    ctx.emit(action, host=target, guests_crashed=crashed, **tag)
    for k, g in enumerate(crashed):
        ctx.emit(
            "guest_crash",
            1 + k,
            guest=g,
            host=target,
            reason="tmem backend failed",
            tmem_pages_lost=lost[g]["tmem"],
            hswap_pages_lost=lost[g]["hswap"],
            cache_pages_lost=lost[g]["cache"],
        )
    # post-copy guests that left pages in that Redis lose them: they crash where they run
    for k, (g, pages) in enumerate(
        [] if ctx.mig is None else ctx.mig.source_store_lost(target, ctx.e)
    ):
        host = ctl.where.get(g)
        runtime.crash_in_place(g, ctx.e * ctx.sc.epoch, ctx.sc.ha.boot_time)
        ctx.fo["guests_crashed"] += 1
        ctx.emit(
            "guest_crash",
            600 + k,
            guest=g,
            host=host,
            reason="post-copy source failed",
            tmem_pages_lost=0,
            hswap_pages_lost=0,
            remote_pages_lost=pages,
        )
