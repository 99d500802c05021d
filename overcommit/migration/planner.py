"""Live migration, cluster side: admission, evacuation, bandwidth, moving guests, failures.

The driver (`overcommit.cluster.engine`) keeps one `Migrations` and calls it every window. It is
handed the driver's HA controller (`ctl`: where guests run, which hosts are alive, admission and
promised pages) and the runtime (`move_guest`, `cancel_migration`) as plain objects, so this
module imports nothing from `overcommit.cluster`.

A `migrate: GUEST, to: HOST` event starts one migration; `evacuate: HOST` queues every guest of
the host and keeps at most `migration.concurrency` migrations running out of it, each to the host
the placement policy picks among the others. A migration starts once the destination admits the
guest (its `memory` within the destination's admission room, counted there from then on) and has
the memory for its allocation now; until then the destination reclaims like a host restarting a
failed guest (`overcommit.cluster.failover`), and after `migration.deadline` the request fails.

While any migration runs, windows are one epoch long. Each window every running migration gets
its bandwidth: its own limit (`migration.bandwidth`), and an equal share of the NIC
(`migration.nic`) of its source and of its destination among the migrations each carries, in or
out; the smallest of the three. The guest side (`overcommit.migration.transfer`) runs the rounds.
When it reports the migration done (or switched to post-copy), the guest's memory leaves the
source's stores and arrives in the destination's (`GuestModel.leave_source` / `arrive`), and from
the next window the guest runs on the destination. Failures: the source dies during pre-copy —
the guest dies with it; the destination dies during pre-copy — the migration is abandoned and
the guest runs on at the source; either dies during post-copy — the guest is lost (it crashes
and the HA controller restarts it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from overcommit.migration.transfer import MigrationOrder
from overcommit.nodes.host import boot_need


@dataclass
class Running:
    id: int
    guest: str
    source: str
    dest: str
    mode: str
    start: int  # epoch the request arrived
    began: int | None = None  # epoch round 1 started
    moved: bool = False  # the guest runs on the destination (done, or post-copy)
    evacuation: str | None = None
    last: dict | None = None  # the guest side's last record
    moved_info: dict | None = None
    remote_lost: int = 0  # post-copy: pages still at the source when it failed


class Migrations:
    """The running migrations and the record of finished ones."""

    def __init__(self, scenario: Any, plan: Any, ctl: Any) -> None:
        self.sc = scenario
        self.cfg = scenario.migration
        self.dt = float(scenario.epoch)
        self.ps = scenario.page_size
        self.ctl = ctl
        self.tmem = plan.mechanism.guest_uses_tmem
        self.running: dict[str, Running] = {}
        self.waiting: list[Running] = []  # requested, destination not ready yet
        self.queues: dict[str, list[str]] = {}  # evacuations: host -> guests still to move
        self.records: list[dict] = []
        self.finishing: list[tuple[str, float]] = []  # (source, end): moved, pause not over
        self.next_id = 0
        self.deadline = max(1, math.ceil(self.cfg.deadline / self.dt - 1e-9))

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting or any(self.queues.values()) or self.finishing)

    # -- requests ------------------------------------------------------------------------------
    def request(
        self, guest: str, dest: str | None, mode: str | None, e: int, evac: str | None = None
    ):
        """Queue a migration of `guest` to `dest` (None: by placement policy)."""
        src = self.ctl.where.get(guest)
        mode = mode or self.cfg.mode
        r = Running(self.next_id, guest, src or "", dest or "", mode, e, evacuation=evac)
        self.next_id += 1
        if src is None:
            return self._refuse(r, e, "the guest has no host (down)")
        if guest in self.running or any(w.guest == guest for w in self.waiting):
            return self._refuse(r, e, "the guest is already migrating")
        if dest is not None and dest == src:
            return self._refuse(r, e, f"the guest already runs on {dest}")
        if dest is not None and not self.ctl.alive.get(dest, False):
            return self._refuse(r, e, f"the destination {dest} is down")
        if dest is not None and dest in self.ctl.draining:
            return self._refuse(r, e, f"the destination {dest} is being evacuated")
        self.waiting.append(r)
        return None

    def evacuate(self, host: str, e: int) -> list[str]:
        """Move every guest off `host`, `concurrency` at a time."""
        busy = {*self.running, *(w.guest for w in self.waiting)}
        guests = [g for g in self.ctl.members[host] if g not in busy]
        self.queues[host] = list(guests)
        self.ctl.draining.add(host)
        return guests

    def _refuse(self, r: Running, e: int, reason: str) -> dict:
        return self._record(r, e, f"refused: {reason}")

    # -- each window ---------------------------------------------------------------------------
    def step(
        self, e: int, status: dict[str, Any], features: Any, held: dict[str, int]
    ) -> tuple[list[dict], dict[str, int]]:
        """Start what can start; returns (records of refusals, pages each destination lacks)."""
        done: list[dict] = []
        needs: dict[str, int] = {}
        now = e * self.dt
        self.finishing = [(h, end) for h, end in self.finishing if end > now + 1e-9]
        for host, queue in self.queues.items():  # evacuations: keep `concurrency` going
            out = sum(1 for r in [*self.running.values(), *self.waiting] if r.source == host)
            out += sum(1 for h, _ in self.finishing if h == host)
            while queue and out < self.cfg.concurrency:
                g = queue.pop(0)
                if self.ctl.where.get(g) != host:  # it left (crashed, moved) meanwhile
                    continue
                rec = self.request(g, None, None, e, evac=host)
                if rec is not None:
                    done.append(rec)
                else:
                    out += 1
        for r in list(self.waiting):
            spec = self.ctl.specs[r.guest]
            if not self.ctl.alive.get(r.source, False) or self.ctl.where.get(r.guest) != r.source:
                self.waiting.remove(r)
                done.append(self._record(r, e, "refused: the guest's host failed"))
                continue
            if not r.dest:
                r.dest = self._choose(r, status) or ""
            if not r.dest or not self.ctl.alive.get(r.dest, False):
                if e - r.start >= self.deadline:
                    self.waiting.remove(r)
                    done.append(self._record(r, e, "refused: no host admits the guest"))
                    r.dest = ""
                continue
            if self.ctl._admits(r.dest, spec, status) < 0:
                self.waiting.remove(r)
                done.append(self._record(r, e, f"refused: {r.dest}'s admission control"))
                continue
            alloc, _ = boot_need(spec, features, self.ps, True)
            if self.tmem and self.cfg.tmem == "xen":  # its pool pages come along
                alloc += held.get(r.guest, 0)
            st = status.get(r.dest)
            have = self.ctl.avail(r.dest, st) if st else 0
            if have >= alloc:
                self.waiting.remove(r)
                r.began = e
                self.running[r.guest] = r
                self.ctl.incoming.setdefault(r.dest, []).append(r.guest)
                self.ctl.promise(r.dest, r.guest, alloc)
            elif e - r.start >= self.deadline:
                self.waiting.remove(r)
                done.append(self._record(r, e, f"refused: {r.dest} lacked memory"))
            else:
                needs[r.dest] = needs.get(r.dest, 0) + alloc - max(0, have)
        return done, needs

    def _choose(self, r: Running, status: dict[str, Any]) -> str | None:
        spec = self.ctl.specs[r.guest]
        hosts = [
            h
            for h in self.ctl.hosts
            if h != r.source
            and self.ctl.alive[h]
            and h not in self.ctl.draining
            and self.ctl._admits(h, spec, status) >= 0
        ]
        if not hosts:
            return None
        pol = self.sc.placement
        reserved = self.ctl._reserved
        if pol == "first-fit":
            return hosts[0]
        if pol == "most-free":
            return max(
                hosts, key=lambda h: (self.ctl.capacity - reserved(h), -self.ctl.hosts.index(h))
            )
        return min(hosts, key=lambda h: (reserved(h) / self.ctl.capacity, self.ctl.hosts.index(h)))

    def orders(self, net_factor: float = 1.0) -> dict[str, MigrationOrder]:
        """Each running migration's order for the next window, with its bandwidth share (all
        bandwidth times `net_factor` while a `network` drop lasts)."""
        c = self.cfg
        load: dict[str, int] = {}
        live = [
            r
            for r in self.running.values()
            if not (r.last and r.last["phase"] in ("done", "aborted"))
        ]
        for r in live:
            load[r.source] = load.get(r.source, 0) + 1
            load[r.dest] = load.get(r.dest, 0) + 1
        out = {}
        for r in live:
            bw = net_factor * min(c.bandwidth, c.nic / load[r.source], c.nic / load[r.dest])
            out[r.guest] = MigrationOrder(
                id=r.id,
                destination=r.dest,
                mode=r.mode,
                bandwidth=bw,
                postcopy_after=c.postcopy_after,
                downtime_limit=c.downtime_limit,
                max_rounds=c.max_rounds,
                auto_converge=c.auto_converge,
                throttle_initial=c.throttle_initial,
                throttle_step=c.throttle_step,
                throttle_max=c.throttle_max,
                zero_page_bytes=c.zero_page_bytes,
                fault_latency=c.fault_latency,
                send_tmem=self.tmem and c.tmem == "xen",
            )
        return out

    def after_window(
        self, e1: int, reports: dict[str, Any], runtime: Any
    ) -> list[tuple[str, dict]]:
        """Take the guests' migration reports; move guests whose migration completed or
        switched to post-copy. Returns events (kind, fields)."""
        events: list[tuple[str, dict]] = []
        for g, r in list(self.running.items()):
            gw = reports.get(g)
            if gw is None or gw.migration is None:
                continue
            rec = gw.migration
            r.last = rec
            if rec["phase"] in ("done", "postcopy") and not r.moved:
                flush = self.tmem and self.cfg.tmem == "flush-to-swap"
                r.moved_info = runtime.move_guest(g, r.source, r.dest, flush)
                r.moved = True
                self.ctl.moved(g, r.source, r.dest)
                events.append(
                    ("migrated", {"guest": g, "source": r.source, "host": r.dest, "mode": r.mode})
                )
            if rec["phase"] == "done":
                del self.running[g]
                self.records.append(self._record(r, e1, "completed"))
                if rec["end"] is not None:  # its stop-and-copy pause may outlast the window
                    self.finishing.append((r.source, rec["end"]))
            elif rec["phase"] == "aborted":
                self.cancel(g, e1, "aborted: no convergence within max_rounds", runtime)
        return events

    def cancel(self, guest: str, e: int, outcome: str, runtime: Any) -> None:
        """End a migration without moving the guest (it stays where it is, or it died)."""
        r = self.running.pop(guest, None)
        if r is None:
            r = next((w for w in self.waiting if w.guest == guest), None)
            if r is None:
                return
            self.waiting.remove(r)
        inc = self.ctl.incoming.get(r.dest, [])
        if guest in inc:
            inc.remove(guest)
        self.ctl.unpromise(r.dest, guest)
        runtime.cancel_migration(guest)
        if r.moved and self.ctl.alive.get(r.source, False):  # post-copy's pages at the source
            runtime.drop_remote(guest, r.source, r.id)
        self.records.append(self._record(r, e, outcome))

    def host_failed(self, host: str, e: int) -> list[tuple[str, str, dict]]:
        """A host died: what becomes of the migrations through it. Returns (guest, action,
        details): `lost` for a post-copy guest whose source died (the caller crashes it; the
        pages still at the source, `remote_lost`, died with it), `drop` for one whose
        destination died (the caller drops the pages it left at the `source`), `died` and
        `abandon` for a pre-copy migration."""
        out = []
        for g, r in list(self.running.items()):
            if host not in (r.source, r.dest):
                continue
            del self.running[g]
            inc = self.ctl.incoming.get(r.dest, [])
            if g in inc:
                inc.remove(g)
            self.ctl.unpromise(r.dest, g)
            info = {"source": r.source, "migration": r.id, "remote_lost": 0}
            if r.moved:  # post-copy: the guest runs at the destination, part of it at the source
                outcome = "lost: a host failed during post-copy"
                if host == r.source:
                    r.remote_lost = info["remote_lost"] = (r.last or {}).get("remote_left", 0)
                    out.append((g, "lost", info))
                else:
                    out.append((g, "drop", info))
            elif host == r.source:
                outcome = "lost: the source failed"
                out.append((g, "died", info))
            else:
                outcome = "abandoned: the destination failed; the guest runs on at the source"
                out.append((g, "abandon", info))
            self.records.append(self._record(r, e, outcome))
        for r in list(self.waiting):
            if host in (r.source, r.dest):
                self.waiting.remove(r)
                self.records.append(self._record(r, e, f"refused: {host} failed"))
        self.queues.pop(host, None)
        return out

    def source_store_lost(self, host: str, e: int) -> list[tuple[str, int]]:
        """`host`'s Redis died (a tmem backend failure; the host lives): post-copy guests that
        left pages there lose them. Returns (guest, pages lost); the caller crashes each."""
        out = []
        for g, r in list(self.running.items()):
            if r.source != host or not r.moved:
                continue
            del self.running[g]
            self.ctl.unpromise(r.dest, g)
            r.remote_lost = (r.last or {}).get("remote_left", 0)
            out.append((g, r.remote_lost))
            self.records.append(self._record(r, e, "lost: the source's store failed in post-copy"))
        return out

    def _record(self, r: Running, e: int, outcome: str) -> dict:
        last = r.last or {}
        info = r.moved_info or {}
        began = r.began if r.began is not None else r.start
        total = last.get("total_seconds")
        rec = {
            "guest": r.guest,
            "source": r.source,
            "destination": r.dest or None,
            "mode": r.mode,
            "evacuation": r.evacuation,
            "t": round(began * self.dt, 9),
            "total_seconds": total,
            "downtime_seconds": last.get("downtime_seconds", 0.0),
            "bytes_sent": last.get("bytes_sent", 0),
            "rounds": last.get("rounds", 0),
            "pages_sent": last.get("pages_sent", 0),
            "pages_resent": last.get("pages_resent", 0),
            "throttle": last.get("throttle", 0.0),
            "remote_faults": last.get("remote_faults", 0),
            "tmem_pages_moved": info.get("tmem_pages_moved", 0),
            "tmem_pages_flushed": info.get("tmem_pages_flushed", 0),
            "host_swap_reads": info.get("host_swap_reads", 0),
            "cache_writebacks": info.get("cache_writebacks", 0),
            "ephemeral_dropped": info.get("ephemeral_dropped", 0),
            "outcome": outcome,
        }
        if r.mode == "postcopy":  # pages read from the source's store, lost with the source
            rec["remote_pages_read"] = last.get("remote_read", 0)
            rec["remote_pages_lost"] = r.remote_lost
        return rec

    def summary(self) -> list[dict]:
        return sorted(self.records, key=lambda x: (x["t"], x["guest"]))
