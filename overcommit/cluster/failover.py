"""HA: the controller that restarts a dead host's guests on the survivors, and its record.

When a host fails, each of its guests becomes a *pending restart*. After `ha.detection` the
controller places them, highest `priority` first (then in failure and scenario order), by the
scenario's placement policy among surviving hosts its admission control allows: the guest's
`memory` must fit in what the host's members leave unreserved of its RAM less reserve (plus
its swap area under lazy host-swap, as at boot), and with `ha.count_tmem` the persistent tmem the
host holds counts as committed too. A placed guest starts once the host has the memory for it
*now* — its boot allocation fits beside what the host already promised (and, under host-swap,
its boot frames fit in free RAM) — which every window is judged from the host's state at the
previous window's end. Until then the host is told how many pages it lacks and reclaims them the
way its mechanism can (frontswap: the pool refuses puts and cooperative guests move pool pages
to their swap disks; balloon: inflate; host-swap: page others out; cached-disk, cleancache:
drop the caches). A guest not started `ha.restart_deadline` after its host failed fails to
restart, with the reason: no host admits it, or its host still lacked memory (and what held it).

The restarted guest is a new incarnation that boots fresh (`hosts.boot`) after `ha.boot_time`;
its accounting continues the dead incarnation's. Each host failure is an *episode*: recovery
time (failure to every guest restarted), restart failures, pages reclaimed and how long that
took, and the survivors' progress meanwhile (`summary.json` `failover`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.nodes.guest import COUNTERS, HIST_BINS, STALL_SOURCES, hist_percentile
from overcommit.nodes.host import boot_need
from overcommit.units import format_size

#: Failover figures in summary["totals"], counted by the driver as faults happen.
FAILOVER_COUNTERS: tuple[str, ...] = (
    "host_failures",
    "host_recoveries",
    "backend_failures",
    "guests_crashed",
    "tmem_pages_lost",
    "hswap_pages_lost",
    "cache_pages_lost",
    "ha_restarts",
    "restart_failures",
    "migrations_completed",
    "migrations_failed",
)


@dataclass
class HostStatus:
    """A host's memory at a window's end, in pages (see `HostRunner.status`)."""

    room: int  # RAM guest allocations may use (all but the reserve and the pools)
    reserved: int  # what its guests' allocations promise
    free: int
    tmem: int
    tmem_uncoop: int  # tmem billed to guests that ignore shrink requests
    cache: int
    ephemeral: int
    hswap_free: int
    headroom: int  # host-swap: the share of RAM the host keeps free


@dataclass
class Pending:
    guest: str
    episode: int
    failed: int  # epoch the host failed
    act: int  # first epoch the controller acts (after detection)
    deadline: int
    carry: dict
    target: str | None = None
    reclaim_from: int | None = None  # epoch the target host was first asked to reclaim
    need0: int = 0  # pages it lacked then
    need: int = 0  # pages it lacked at the last step


@dataclass
class Episode:
    index: int
    host: str
    epoch: int
    guests: list[str]
    restarted: dict[str, tuple[int, str]] = field(default_factory=dict)  # guest -> (epoch, host)
    failures: list[dict] = field(default_factory=list)
    reclaimed_pages: int = 0  # what the restarts lacked when reclaim began (the deficit)
    freed_pages: int = 0  # what the target hosts' mechanisms actually freed meanwhile
    reclaim_epochs: int = 0


def empty_status(sc: Any) -> HostStatus:
    """A host with no guests and nothing lent: all but its reserve is free."""
    ps = sc.page_size
    room = sc.hosts.ram // ps - sc.hosts.reserve // ps
    return HostStatus(
        room=room,
        reserved=0,
        free=room,
        tmem=0,
        tmem_uncoop=0,
        cache=0,
        ephemeral=0,
        hswap_free=sc.hosts.swap.size // ps,
        headroom=math.ceil(0.01 * room),
    )


def fresh_carry(spec: Any) -> dict[str, Any]:
    """The accounting of a guest that has not run a window yet."""
    return {
        "alive_seconds": 0.0,
        "work_seconds": 0.0,
        "stall_seconds": 0.0,
        "downtime_seconds": 0.0,
        "balloon_lag_seconds": 0.0,
        "incarnation": 0,
        "disk": f"{spec.name}#0",
        "files": bool(getattr(spec.workload, "file_cache", 0.0)),
        "counters": {k: 0 for k in COUNTERS},
        "stall_by_source": {k: 0.0 for k in STALL_SOURCES},
        "hist": np.zeros(HIST_BINS, np.int64),
        "peak_tmem_pages": 0,
        "peak_billed_pages": 0,
        "lost_tmem": 0,
        "lost_hswap": 0,
        "lost_cache": 0,
    }


class Controller:
    """Restarts failed hosts' guests; keeps the failover episodes. Deterministic."""

    def __init__(self, scenario: Any, plan: Any, min_detection: int = 1) -> None:
        sc = scenario
        self.sc = sc
        self.ps = sc.page_size
        self.dt = float(sc.epoch)
        self.ha = sc.ha
        self.specs = {s.name: s for s in plan.specs}
        self.order = {n: i for i, n in enumerate(plan.guest_names)}
        self.hosts = list(plan.host_names)
        self.features = plan.mechanism.guest_features
        self.pages_out = plan.mechanism.has("host-swap")
        self.eager = sc.hosts.boot == "eager"
        cap = sc.hosts.ram - sc.hosts.reserve
        if self.pages_out and not self.eager:
            cap += sc.hosts.swap.size
        self.capacity = cap  # bytes of reservations a host admits
        self.alive = {h: True for h in self.hosts}
        self.members: dict[str, list[str]] = {h: [] for h in self.hosts}
        for g in plan.guest_names:
            self.members[plan.placement[g]].append(g)
        self.where: dict[str, str | None] = dict(plan.placement)
        self.incoming: dict[str, list[str]] = {}  # live migrations on their way to each host
        # pages decided for a host (a restart, an incoming migration) that its last report does
        # not include yet: nobody else may count on them
        self.promised: dict[str, dict[str, int]] = {h: {} for h in self.hosts}
        self.draining: set[str] = set()  # hosts being evacuated: they take no new guests
        self.pending: list[Pending] = []
        self.episodes: list[Episode] = []
        self.given_up: list[Pending] = []
        # at least one sync window: a death the driver detects only when it next calls the
        # host (a real fault) then acts at the same epoch as the same failure replayed
        self.detect = max(min_detection, math.ceil(self.ha.detection / self.dt - 1e-9))
        self.deadline = max(1, math.ceil(self.ha.restart_deadline / self.dt - 1e-9))

    # -- faults ------------------------------------------------------------------------------
    def host_failed(self, host: str, e: int, carries: dict[str, dict]) -> Episode:
        """`host` died at epoch `e`; its guests (with their accounting) wait for a restart."""
        self.alive[host] = False
        guests = list(self.members[host])
        self.members[host] = []
        self.promised[host] = {}
        self.incoming.pop(host, None)
        ep = Episode(len(self.episodes), host, e, guests)
        self.episodes.append(ep)
        for g in guests:
            self.where[g] = None
            self.pending.append(
                Pending(g, ep.index, e, e + self.detect, e + self.deadline, carries[g])
            )
        for p in self.pending:  # guests that were to start there look elsewhere
            if p.target == host:
                p.target = None
        return ep

    def host_recovered(self, host: str, e: int) -> None:
        """`host` is back, empty; guests that failed to restart try again, with a new deadline."""
        self.alive[host] = True
        self.members[host] = []
        self.promised[host] = {}
        self.draining.discard(host)
        for p in self.given_up:
            p.act, p.deadline, p.target = e, e + self.deadline, None
            self.pending.append(p)
        self.given_up = []

    def down_since(self, guest: str, default: int) -> int:
        """The epoch the guest lost its host, if it is waiting for a restart (else `default`)."""
        for p in [*self.pending, *self.given_up]:
            if p.guest == guest:
                return p.failed
        return default

    def wake_epochs(self) -> set[int]:
        """Epochs at which the controller must act (windows are cut there)."""
        return {p.act for p in self.pending} | {p.deadline for p in self.pending}

    # -- one step ----------------------------------------------------------------------------
    def moved(self, guest: str, source: str, dest: str) -> None:
        """A live migration moved the guest."""
        if guest in self.members[source]:
            self.members[source].remove(guest)
        self.members[dest].append(guest)
        self.where[guest] = dest
        if guest in self.incoming.get(dest, []):
            self.incoming[dest].remove(guest)

    def guest_lost(self, guest: str, episode: int, e: int, carry: dict) -> None:
        """The guest died with a failed host though it ran elsewhere (a post-copy migration
        whose source failed): it joins that failure's restarts."""
        host = self.where.get(guest)
        if host is not None and guest in self.members[host]:
            self.members[host].remove(guest)
        self.where[guest] = None
        self.episodes[episode].guests.append(guest)
        self.pending.append(Pending(guest, episode, e, e + self.detect, e + self.deadline, carry))

    def avail(self, host: str, st: HostStatus) -> int:
        """Pages the host can give a new guest now: what its last report left (its free RAM
        under host-swap, else its room less what its guests' allocations promise), less what was
        promised since."""
        base = st.free - st.headroom if self.pages_out else st.room - st.reserved
        return base - sum(self.promised.get(host, {}).values())

    def promise(self, host: str, guest: str, pages: int) -> None:
        self.promised.setdefault(host, {})[guest] = pages

    def unpromise(self, host: str, guest: str) -> None:
        self.promised.get(host, {}).pop(guest, None)

    def reported(self, host: str, guests: list[str]) -> None:
        """The host's report of a window now includes these guests: their promises are kept."""
        mine = self.promised.get(host, {})
        for g in guests:
            mine.pop(g, None)

    def promised_pages(self) -> dict[str, dict[str, int]]:
        """Per host, the pages promised to each arriving guest and not yet reported (the host
        must not lend them while the guest is not among its own)."""
        return {h: dict(p) for h, p in self.promised.items() if p}

    def _reserved(self, host: str) -> int:
        own = sum(self.specs[g].memory for g in self.members[host])
        own += sum(self.specs[g].memory for g in self.incoming.get(host, []))
        return own + sum(self.specs[p.guest].memory for p in self.pending if p.target == host)

    def _admits(self, host: str, spec: Any, status: dict[str, HostStatus]) -> int:
        """Bytes the host's admission control leaves beyond the guest (negative: refused)."""
        left = self.capacity - self._reserved(host) - spec.memory
        if self.ha.count_tmem and host in status:
            left -= status[host].tmem * self.ps
        return left

    def _choose(self, p: Pending, status: dict[str, HostStatus]) -> str | None:
        spec = self.specs[p.guest]
        fits = [
            h
            for h in self.hosts
            if self.alive[h] and h not in self.draining and self._admits(h, spec, status) >= 0
        ]
        if not fits:
            return None
        pol = self.sc.placement
        if pol == "first-fit":
            return fits[0]
        if pol == "most-free":
            return max(
                fits, key=lambda h: (self.capacity - self._reserved(h), -self.hosts.index(h))
            )
        return min(fits, key=lambda h: (self._reserved(h) / self.capacity, self.hosts.index(h)))

    def step(
        self, e: int, status: dict[str, HostStatus]
    ) -> tuple[list[tuple[str, str, dict, float]], dict[str, int], list[tuple[str, str]]]:
        """Decide at epoch `e`: restarts (guest, host, carry, downtime), pages each host must
        reclaim, and restart failures (guest, reason)."""
        restarts: list[tuple[str, str, dict, float]] = []
        needs: dict[str, int] = {}
        failures: list[tuple[str, str]] = []
        avail = {h: self.avail(h, st) for h, st in status.items()}
        due = sorted(
            (p for p in self.pending if p.act <= e),
            key=lambda p: (-self.specs[p.guest].priority, p.failed, self.order[p.guest]),
        )
        for p in due:
            spec = self.specs[p.guest]
            if p.target is None or not self.alive[p.target] or p.target in self.draining:
                p.target = self._choose(p, status)
            if p.target is None:
                if e >= p.deadline:
                    failures.append((p.guest, self._no_host_reason(spec, status)))
                    self._give_up(p, e, failures[-1][1])
                continue
            h = p.target
            alloc, backed = boot_need(spec, self.features, self.ps, self.eager)
            want = backed if self.pages_out else alloc
            have = avail.get(h, 0)
            deficit = max(0, want - have)
            if self.pages_out and deficit == 0:  # the commitment must fit RAM + swap too
                st = status.get(h)
                if st is not None and st.reserved + alloc > st.room + st.hswap_free:
                    deficit = st.reserved + alloc - st.room - st.hswap_free
            p.need = deficit
            if deficit == 0:
                avail[h] = have - want
                restarts.append((p.guest, h, p.carry, (e - p.failed) * self.dt))
                self._started(p, h, e)
                self.promise(h, p.guest, want)
                continue
            avail[h] = 0
            if p.reclaim_from is None:
                p.reclaim_from, p.need0 = e, deficit
            if e >= p.deadline:
                failures.append((p.guest, self._lack_reason(p, status.get(h))))
                self._give_up(p, e, failures[-1][1])
                continue
            needs[h] = needs.get(h, 0) + deficit
        return restarts, needs, failures

    def freed(self, host: str, pages: int) -> None:
        """Pages `host`'s mechanisms freed in a window while it was asked to reclaim for a
        restart (pool pages shrunk to disk, balloon inflation, host swap-outs, cache drops):
        credited to the earliest episode reclaiming there."""
        if pages <= 0:
            return
        for p in sorted(self.pending, key=lambda p: p.episode):
            if p.target == host and p.reclaim_from is not None:
                self.episodes[p.episode].freed_pages += pages
                return

    def _started(self, p: Pending, host: str, e: int) -> None:
        self.pending.remove(p)
        self.members[host].append(p.guest)
        self.where[p.guest] = host
        ep = self.episodes[p.episode]
        ep.restarted[p.guest] = (e, host)
        if p.reclaim_from is not None:
            ep.reclaimed_pages += p.need0
            ep.reclaim_epochs = max(ep.reclaim_epochs, e - p.reclaim_from)

    def _give_up(self, p: Pending, e: int, reason: str) -> None:
        self.pending.remove(p)
        ep = self.episodes[p.episode]
        ep.failures.append({"guest": p.guest, "t": round(e * self.dt, 9), "reason": reason})
        if p.reclaim_from is not None:
            ep.reclaimed_pages += max(0, p.need0 - p.need)
            ep.reclaim_epochs = max(ep.reclaim_epochs, e - p.reclaim_from)
        p.reclaim_from = None
        p.target = None
        self.given_up.append(p)

    def _no_host_reason(self, spec: Any, status: dict[str, HostStatus]) -> str:
        alive = [h for h in self.hosts if self.alive[h]]
        if not alive:
            return "no host survives"
        parts = []
        for h in alive:
            left = self.capacity - self._reserved(h)
            tm = ""
            if self.ha.count_tmem and h in status:
                left -= status[h].tmem * self.ps
                tm = f" with tmem {format_size(status[h].tmem * self.ps)} counted"
            parts.append(f"{h} has {format_size(max(0, left))} unreserved{tm}")
        return f"admission: no surviving host admits {format_size(spec.memory)} (" + (
            ", ".join(parts) + ")"
        )

    def _lack_reason(self, p: Pending, st: HostStatus | None) -> str:
        ps = self.ps
        secs = (p.deadline - p.failed) * self.dt
        msg = (
            f"{p.target} still lacked {format_size(p.need * ps)} {secs:g}s after the failure "
            f"(reclaimed {format_size(max(0, p.need0 - p.need) * ps)} of "
            f"{format_size(p.need0 * ps)})"
        )
        if st is not None:
            held = []
            if st.tmem:
                held.append(
                    f"tmem {format_size(st.tmem * ps)} ({format_size(st.tmem_uncoop * ps)} "
                    "of it held by uncooperative guests)"
                )
            if st.cache:
                held.append(f"disk cache {format_size(st.cache * ps)}")
            held.append(f"guest allocations {format_size(st.reserved * ps)}")
            msg += "; held: " + ", ".join(held)
        return msg

    # -- the record --------------------------------------------------------------------------
    def summary(self, survivor_progress: list[float | None]) -> dict[str, Any]:
        """`summary.json` `failover`: one entry per host failure, and the aggregates."""
        eps = []
        for ep, prog in zip(self.episodes, survivor_progress, strict=True):
            done = len(ep.restarted) == len(ep.guests)
            last = max((e for e, _ in ep.restarted.values()), default=ep.epoch)
            eps.append(
                {
                    "host": ep.host,
                    "t": round(ep.epoch * self.dt, 9),
                    "guests": list(ep.guests),
                    "recovery_seconds": round((last - ep.epoch) * self.dt, 9) if done else None,
                    "restarted": {g: h for g, (_, h) in ep.restarted.items()},
                    "restart_failures": len(ep.failures),
                    "failures": list(ep.failures),
                    "reclaim_needed_bytes": ep.reclaimed_pages * self.ps,
                    "reclaimed_bytes": ep.freed_pages * self.ps,
                    "reclaim_seconds": round(ep.reclaim_epochs * self.dt, 9),
                    "survivor_progress_during_recovery": prog,
                }
            )
        recs = [x["recovery_seconds"] for x in eps]
        progs = [x["survivor_progress_during_recovery"] for x in eps]
        progs = [p for p in progs if p is not None]
        return {
            "episodes": eps,
            "recovery_seconds": (None if any(r is None for r in recs) else max(recs, default=0.0)),
            "restart_failures": sum(x["restart_failures"] for x in eps),
            "reclaim_needed_bytes": sum(x["reclaim_needed_bytes"] for x in eps),
            "reclaimed_bytes": sum(x["reclaimed_bytes"] for x in eps),
            "reclaim_seconds": round(sum(x["reclaim_seconds"] for x in eps), 9),
            "survivor_progress_during_recovery": (
                round(float(np.mean(progs)), 6) if progs else None
            ),
        }


def hist_latency(hist: np.ndarray) -> dict[str, float]:
    """The fault-latency percentiles summary.json reports, from a histogram."""
    return {
        "p50": hist_percentile(hist, 0.5),
        "p99": hist_percentile(hist, 0.99),
        "p99.9": hist_percentile(hist, 0.999),
    }


def down_summary(spec: Any, carry: dict[str, Any], down: float) -> dict[str, Any]:
    """The per-guest figures of a guest without a host at the run's end: its last
    incarnation's accounting, down since its host failed (same keys as a running guest's)."""
    alive = carry["alive_seconds"]
    hist = np.asarray(carry["hist"], np.int64)
    return {
        "host": None,
        "incarnation": carry["incarnation"],
        "progress": round(carry["work_seconds"] / alive, 6) if alive else 0.0,
        "alive_seconds": round(alive, 6),
        "work_seconds": round(carry["work_seconds"], 6),
        "stall_seconds": round(carry["stall_seconds"], 9),
        "stall_pending_seconds": 0.0,
        "downtime_seconds": round(carry["downtime_seconds"] + down, 6),
        "stall_by_source": {k: round(v, 9) for k, v in carry["stall_by_source"].items()},
        "fault_latency": hist_latency(hist),
        "counters": {k: int(carry["counters"][k]) for k in COUNTERS},
        "memory_bytes": spec.memory,
        "maxmem_bytes": spec.maxmem,
        "footprint_pages": 0,
        "pages_end": dict.fromkeys(("untouched", "ram", "frontswap", "swap", "zpool", "file"), 0),
        "tmem_pages_end": 0,
        "tmem_billed_end": 0,
        "tmem_pages_peak": carry["peak_tmem_pages"],
        "tmem_clean_copies_end": 0,
        "frames": 0,
        "alloc_pages_end": 0,
        "balloon_lag_seconds": round(carry["balloon_lag_seconds"], 9),
        "zpool_bytes_end": 0,
        "zpool_frames_end": 0,
    }
