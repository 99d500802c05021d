"""A live run's controls: pacing against the wall clock, injected events, stopping, status.

`LiveControl` is the mailbox between a game day's driver loop (`engine.run_scenario(...,
live=...)`, running in one thread) and the commands that reach it from other threads (`inject`,
`status`, `down`). At every window's start the driver calls `boundary`: it waits until the wall
clock has caught up with emulated time at the day's pace, then hands over the events injected
since the last boundary, or tells the driver to end the run there. After every window the
driver calls `window_done`, which keeps a snapshot of every host and guest for `status`, and
the run's time series and event log for the live dashboard (`overcommit.dashboard`).

`LiveNodes` is a day's `real_faults` when its hosts are pinned one per Ray node: a `fail-host
--real` injection removes the host's Ray node (its raylet is killed, as a machine dying
would), any other `fail_host` kills the host's actor only, as on any day.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

#: Timeline events the hosts and guests read from their own copy of the timeline: a live
#: injection must reach them through the runtime (`add_event`).
SELF_READ = ("host_reclaim", "host_release", "stop_cooperating")

PACES = {"1x": 1.0, "10x": 10.0, "max": None}


def parse_pace(text: str) -> float | None:
    """`1x`, `10x`, `2.5x` -> emulated seconds per wall second; `max` -> None (no waiting)."""
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        value = float(t[:-1] if t.endswith("x") else t)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"pace {text!r}: expected 1x, 10x, max or another positive factor like 2x")
    return value


class LiveControl:
    """Thread-safe controls of one running game day (see the module docstring)."""

    def __init__(self, pace: float | None) -> None:
        self.pace = pace
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[tuple[Any, dict]] = []  # (event, provenance)
        self._stop: dict | None = None
        self.applied: list[dict] = []  # provenance of every injected event, with its epoch
        self.t0: float | None = None  # wall clock at the first window
        self.snapshot: dict = {
            "epoch": 0,
            "t": 0.0,
            "hosts": {},
            "guests": {},
            "checks": {"valid": True, "failed": []},
        }
        self.stopped_at: int | None = None
        self.runtime: Any = None  # the run's runtime, once the first window starts
        self.recorder: Any = None  # the run's time series, complete up to snapshot["epoch"]
        self.log: list = []  # the run's event log so far: (sort key, event) in any order
        self.real_pending: set[str] = set()  # hosts whose next fail_host removes their node
        self.e0 = 0  # the epoch of the window starting now

    # -- the commands' side ---------------------------------------------------------------------
    def inject(self, event: Any, provenance: dict) -> None:
        """Queue an event for the next window boundary."""
        with self._lock:
            self._pending.append((event, provenance))
        self._wake.set()

    def request_stop(self, provenance: dict) -> None:
        """End the run at the next window boundary (after at least one window)."""
        with self._lock:
            if self._stop is None:
                self._stop = provenance
        self._wake.set()

    @property
    def stop_requested(self) -> dict | None:
        return self._stop

    # -- the driver's side ----------------------------------------------------------------------
    def boundary(self, e0: int, dt: float) -> tuple[list[Any], bool]:
        """Called at the start of the window at epoch `e0`: wait for the wall clock, then
        return (events injected meanwhile, stamped `at` this boundary; whether to stop)."""
        now = time.monotonic()
        self.e0 = e0
        if self.t0 is None:
            self.t0 = now
        if self.pace is not None and e0 > 0:
            due = self.t0 + e0 * dt / self.pace
            while self._stop is None and time.monotonic() < due:
                self._wake.wait(min(0.5, max(0.0, due - time.monotonic())))
                self._wake.clear()
        with self._lock:
            if self._stop is not None and e0 > 0:
                self.stopped_at = e0
                return [], True
            pending, self._pending = self._pending, []
        events = []
        for ev, prov in pending:
            ev = ev.model_copy(update={"at": round(e0 * dt, 9)})
            if prov.get("real") and ev.action == "fail_host":
                self.real_pending.add(ev.target)
            events.append(ev)
            self.applied.append({**prov, "epoch": e0, "t": round(e0 * dt, 9)})
        return events, False

    def before_events(self, events: list[Any], runtime: Any) -> None:
        """Injected events the models read themselves go to the runtime's hosts and guests."""
        self.runtime = runtime
        for ev in events:
            if ev.action in SELF_READ:
                runtime.add_event(ev)

    def window_done(
        self,
        e1: int,
        recorder: Any,
        ctl: Any,
        mig: Any,
        checks: Any,
        fo: dict,
        log: list | None = None,
    ) -> None:
        """Keep a snapshot of the cluster after the window that ended at epoch `e1` (and the
        time series and the event log `log`, read by the dashboard)."""
        snap = status_snapshot(e1, recorder, ctl, mig, checks, fo)
        self.recorder = recorder
        if log is not None:
            self.log = log
        snap["pace"] = self.pace
        snap["wall_seconds"] = round(time.monotonic() - (self.t0 or time.monotonic()), 3)
        with self._lock:
            snap["pending_injections"] = len(self._pending)
            self.snapshot = snap


def events_so_far(control: LiveControl, nodes: LiveNodes | None = None) -> list[dict]:
    """The run's event log up to now, in the order `events.jsonl` will have it."""
    keyed = list(control.log)  # the driver appends meanwhile
    events = [e for _, e in sorted(keyed, key=lambda kv: kv[0])]
    return events if nodes is None else nodes.plain(events)


class NodeError(Exception):
    """A host has no Ray node of its own to remove; the message is one line."""


class LiveNodes:
    """A game day's real faults (the engine's `real_faults`) on a cluster whose hosts are
    pinned one per Ray node by custom resources (`runtime.pin: resource`)."""

    def __init__(self, control: LiveControl, hosts: list[str]) -> None:
        self.control = control
        self.hosts = hosts
        self.removed: list[str] = []  # hosts whose Ray node was removed, in order
        self.simulated: set[tuple[int, str]] = set()  # (epoch, host) of the other fail_hosts

    def plain(self, events: list[dict]) -> list[dict]:
        """The log with `detected` only on the fail_hosts a Ray node's death caused (the
        engine tags every fail_host of a run with real faults)."""
        out = []
        for e in events:
            if e["kind"] == "fail_host" and (e["epoch"], e.get("host")) in self.simulated:
                e = {k: v for k, v in e.items() if k != "detected"}
            out.append(e)
        return out

    def node_of(self, host: str, what: str = "fail-host --real") -> dict:
        """The alive Ray node of `host`: it holds the host's custom resource and no other
        host's, and not this driver. Raises NodeError otherwise."""
        import ray

        here = ray.get_runtime_context().get_node_id()
        alive = [n for n in ray.nodes() if n.get("Alive")]
        mine = [n for n in alive if n.get("Resources", {}).get(host, 0) > 0]
        if not mine:
            raise NodeError(
                f"{what}: no Ray node has the custom resource {host!r} (start one "
                f"node per host with --resources '{{\"{host}\": 1}}'; see docs/cluster.md)"
            )
        if len(mine) > 1:
            raise NodeError(f"{what}: {len(mine)} Ray nodes have the resource {host!r}")
        node = mine[0]
        others = [h for h in self.hosts if h != host and node["Resources"].get(h, 0) > 0]
        if others:
            raise NodeError(
                f"{what}: {host}'s Ray node also holds {', '.join(others)}; "
                "removing it would fail them too"
            )
        if node["NodeID"] == here:
            raise NodeError(f"{what}: {host}'s Ray node runs the day's driver")
        return node

    def kill(self, host: str) -> None:
        """`fail_host`: remove the host's Ray node when the injection asked for it (`--real`),
        otherwise kill the host's actor (as every day's `fail_host` does)."""
        if host in self.control.real_pending:
            self.control.real_pending.discard(host)
            shutdown_raylet(self.node_of(host))
            self.removed.append(host)
            return
        from overcommit.cluster.ray_runtime import kill_host_actor

        self.simulated.add((self.control.e0, host))
        actor = self.control.runtime.hosts.get(host)
        if actor is not None:
            kill_host_actor(actor)

    def revive(self, host: str, timeout: float = 60.0) -> None:
        """`recover_host` of a host whose node was removed: wait for a node with its resource
        (an operator starts one); the host's new actor is placed there."""
        if host not in self.removed:
            return
        from overcommit.cluster.runtime import InfrastructureError

        end = time.monotonic() + timeout
        while True:
            try:
                self.node_of(host, "recover-host")
                break
            except NodeError as exc:
                if time.monotonic() > end:
                    raise InfrastructureError(f"recover-host {host}: {exc}") from None
            time.sleep(1.0)
        self.removed.remove(host)


def shutdown_raylet(node: dict, timeout: float = 60.0) -> None:
    """Kill a Ray node's raylet (SIGKILL, as a machine dying would): a task pinned to the
    node finds the raylet by its node id and kills it; every worker on the node dies with
    it, and Ray marks the node dead."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(_kill_raylet)
    ref = task.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
    ).remote(node["NodeID"])
    try:
        found = ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise NodeError(f"the raylet of node {node['NodeID'][:12]} did not die") from None
    except Exception:  # the task's worker died with its raylet: what was asked
        return
    if not found:
        raise NodeError(f"no raylet process of node {node['NodeID'][:12]} on its machine")


def _kill_raylet(node_id: str) -> bool:
    """(A task on the node.) SIGKILL the raylet whose command line names `node_id`."""
    import os
    import signal

    import psutil

    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd and os.path.basename(cmd[0]) == "raylet" and f"--node_id={node_id}" in cmd:
            os.kill(proc.pid, signal.SIGKILL)
            return True
    return False


def status_snapshot(e1: int, rec: Any, ctl: Any, mig: Any, checks: Any, fo: dict) -> dict:
    """Every host and guest at the end of epoch `e1 - 1`, from the time series so far."""
    dt = rec.dt
    last = e1 - 1
    span = slice(max(0, e1 - max(1, round(1.0 / dt))), e1)  # the last emulated second
    ps_hosts: dict[str, dict] = {}
    for j, h in enumerate(rec.host_names):
        row = {c: int(rec.h[c][last, j]) for c in rec.h}
        ps_hosts[h] = {
            "up": bool(ctl.alive[h]),
            "guests": list(ctl.members[h]),
            "ram_pages": row["ram_pages"],
            "used_pages": row["ram_pages"] - row["free_pages"],
            "guest_frames": row["guest_frames"],
            "tmem_pages": row["tmem_pages"],
            "tmem_capacity": row["tmem_capacity"],
            "hswap_pages": row["hswap_pages"],
            "free_pages": row["free_pages"],
            "draining": h in getattr(ctl, "draining", ()),
        }
    guests: dict[str, dict] = {}
    running = getattr(mig, "running", {})
    waiting = {getattr(r, "guest", None) for r in getattr(mig, "waiting", ())}
    for i, g in enumerate(rec.guest_names):
        alive_s = float(rec.g["alive"][:e1, i].sum()) * dt
        work = float(rec.g["work_s"][:e1, i].sum())
        secs = max(dt, (span.stop - span.start) * dt)
        r = running.get(g)
        guests[g] = {
            "host": ctl.where.get(g),
            "alive": bool(rec.g["alive"][last, i]),
            "resident_pages": int(rec.g["resident_pages"][last, i]),
            "tmem_pages": int(rec.g["tmem_pages"][last, i]),
            "swap_pages": int(rec.g["swap_pages"][last, i]),
            "progress": round(work / alive_s, 6) if alive_s else 0.0,
            "stall_seconds": round(float(rec.g["stall_s"][:e1, i].sum()), 6),
            "faults_per_second": round(float(rec.g["faults"][span, i].sum()) / secs, 1),
            "restarts": int(np.count_nonzero(np.diff(rec.g["alive"][:e1, i]) > 0)),
            "migrating": None if r is None else getattr(r, "dest", True),
            "migration_waiting": g in waiting,
        }
    failed = [name for name, n in checks.count.items() if n]
    return {
        "epoch": e1,
        "t": round(e1 * dt, 9),
        "hosts": ps_hosts,
        "guests": guests,
        "checks": {"valid": not failed, "failed": failed},
        "failover": {k: int(v) for k, v in fo.items()},
        "migrations_in_flight": len(running),
    }
