"""The `ray` runtime: hosts (and, with `guests: actors`, guests) as Ray actors.

Each host is an async Ray actor that starts its own `redis-server` on the Ray node where it
runs (bound to die with the actor), so an emulated host's tmem lives on that node and nowhere
else. With `guests: packed` the host actor also holds its guests' runners; with
`guests: actors` every guest is an async actor of its own, placed on its host's node, owning
its memory state (page tables, versions, random streams). The driver calls each host once per
sync window; a host calls its guests once per window; all of them answer store requests with
redis-py's asyncio client. Models, runners and store plans are the ones `inline` uses, so the
results are the same in every placement.

With no address the runtime starts a quiet local Ray and shuts it down at the end; with an
address (`auto`, `ray://…`, `HOST:PORT`, or `RAY_ADDRESS`) it joins that cluster in a namespace
of its own and kills only the actors it created.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from overcommit.cluster.memory import actor_cpus
from overcommit.cluster.ray_actors import GuestActorImpl, HostActorImpl, HostGroupImpl
from overcommit.cluster.runtime import (
    InfrastructureError,
)
from overcommit.nodes import build_mechanism


def _ray():
    import ray

    return ray


def quiet_ray() -> None:
    """Keep what Ray's raylet pushes to the driver off this process's console.

    Ray prints those messages (e.g. "N PYTHON worker processes have been started on node ...",
    printed when many actors start) from a thread of its own, whatever `log_to_driver` says;
    call this before `ray.init` unless the user asked for Ray's output (`--verbose`).
    A caller that redirected `sys.stdout` (a drill keeps the raylet's reports of the nodes it
    removed in the run directory) still gets them there. Messages from workers
    (`log_to_driver`) are not affected.
    """
    import sys

    import ray._private.worker as worker

    show = worker.print_to_stdstream
    if getattr(show, "quiet", False):
        return

    def drop_raylet(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet" or sys.stdout is not sys.__stdout__:
            show(data, ignore_prefix)

    drop_raylet.quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = drop_raylet


def _deaths() -> tuple[type[BaseException], ...]:
    """The errors a call to an actor whose process or node died raises."""
    ex = _ray().exceptions
    return (ex.RayActorError, getattr(ex, "ActorUnavailableError", ex.RayActorError))


def _store_lost(exc: Any) -> BaseException:
    """An actor's call failed: a store it lost is an infrastructure failure (named after the
    host whose store it was, when the actor said); anything else stays what it was."""
    import redis

    cause = getattr(exc, "cause", None)
    if isinstance(cause, InfrastructureError):
        return cause
    if isinstance(cause, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return InfrastructureError(f"lost contact with a Redis store of the run: {cause}")
    return exc


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast when a HOST:PORT or ray://HOST:PORT address has nothing listening."""
    target = address.split("://", 1)[-1]
    if address == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise InfrastructureError(f"cannot reach a Ray cluster at {address}: {exc}") from None


class RayRuntime:
    """Hosts as Ray actors; guests packed inside them or as actors of their own."""

    kind = "ray"

    def __init__(
        self,
        scenario: Any,
        placement: dict[str, str],
        shared_url: str,
        *,
        address: str | None = None,
        verbose: bool = False,
        workdir: Path | None = None,
    ) -> None:
        ray = _ray()
        self.workdir = None if workdir is None else str(workdir)
        self.scenario = scenario
        self.mode = scenario.runtime.guests
        self.placement = placement
        self.shared_url = shared_url
        self.address = address or scenario.runtime.address or os.environ.get("RAY_ADDRESS")
        self.started_ray = False
        self.actors: list[Any] = []
        self.namespace = f"overcommit-{uuid.uuid4().hex[:12]}"
        if not ray.is_initialized():
            self._connect(verbose)
        hosts = scenario.host_names()
        self.host_names = hosts
        by_host: dict[str, list[str]] = {h: [] for h in hosts}
        for spec in scenario.guest_specs():
            by_host[placement[spec.name]].append(spec.name)
        self.by_host = by_host
        self._HostActor = ray.remote(num_cpus=0, max_restarts=0)(HostActorImpl)
        self._GuestActor = ray.remote(num_cpus=0, max_restarts=0)(GuestActorImpl)
        ext = scenario.redis.hosts or {}
        self.hosts: dict[str, Any] = {}
        self.per_actor = scenario.runtime.per_actor(len(hosts), actor_cpus())
        if self.per_actor > 1:  # several hosts per actor process
            group_actor = ray.remote(num_cpus=0, max_restarts=0)(HostGroupImpl)
            self.groups = []
            for j in range(0, len(hosts), self.per_actor):
                members = [(h, by_host[h], ext.get(h)) for h in hosts[j : j + self.per_actor]]
                group = group_actor.options(scheduling_strategy="SPREAD").remote(
                    scenario, members, shared_url, self.workdir
                )
                self.groups.append(group)
                self.actors.append(group)
                self.hosts.update((h, _Member(group, h)) for h, _, _ in members)
        else:
            for i, h in enumerate(hosts):
                actor = self._HostActor.options(**self._host_options(i, h)).remote(
                    scenario, h, by_host[h], shared_url, self.mode, ext.get(h), self.workdir
                )
                self.hosts[h] = actor
                self.actors.append(actor)
        self.infos = dict(zip(hosts, ray.get([a.info.remote() for a in self.hosts.values()])))
        self.guest_actors: dict[str, Any] = {}
        self.guests_on: dict[str, list[str]] = {h: list(by_host[h]) for h in hosts}
        if self.mode == "actors":
            for h, actor in self.hosts.items():
                mine = [self._guest_actor(g, h, 0) for g in by_host[h]]
                ray.get(actor.attach.remote(mine))
        self.calls = 0
        self.slowest: tuple[str, float] = ("", 0.0)
        # with real faults (a drill removing Ray nodes), a host actor that dies is reported
        # in `lost` instead of stopping the run
        self.detect_deaths = False
        self.lost: list[str] = []
        self.count_pools = build_mechanism(scenario.mechanism).guest_uses_tmem
        self.counted: dict[str, list[str]] = {}
        self.incoming: dict[str, tuple[str, Any]] = {}  # migrating guest -> (dest, actor-to-be)
        self.crossed = 0  # bytes of guest state that crossed between actors in migrations
        self.streamed = 0  # of which page records streamed by the rounds

    def await_death(self, host: str, timeout: float = 60.0) -> None:
        """Wait until the host's actor is gone (its Ray node was just removed), so the next
        window's call detects the death at a deterministic epoch."""
        ray = _ray()
        actor = self.hosts[host]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                ray.get(actor.info.remote(), timeout=2)
            except _deaths():
                return
            except ray.exceptions.GetTimeoutError:
                pass
            time.sleep(0.2)
        raise InfrastructureError(f"host {host}'s actor outlived its Ray node by {timeout:g}s")

    def take_lost(self) -> list[str]:
        """Hosts whose actors died in the last window (real faults), in host order."""
        lost, self.lost = self.lost, []
        return lost

    def _guest_actor(self, guest: str, host: str, incarnation: int, register: bool = True) -> Any:
        """A guest actor on its host's Ray node, talking to the host's Redis."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        info = self.infos[host]
        ga = self._GuestActor.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(info["node_id"], soft=False),
        ).remote(self.scenario, guest, host, info["redis_url"], self.shared_url, incarnation)
        if register:
            self.guest_actors[guest] = ga
        self.actors.append(ga)
        return ga

    # -- connection -------------------------------------------------------------------------
    def _connect(self, verbose: bool) -> None:
        """Join or start Ray, keeping the caller's SIGTERM handler (ray.init replaces it)."""
        import signal
        import threading

        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        try:
            self._init_ray(verbose)
        finally:
            if main and previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _init_ray(self, verbose: bool) -> None:
        ray = _ray()
        quiet = contextlib.redirect_stderr(io.StringIO()) if not verbose else _null()
        if not verbose:
            quiet_ray()
        if self.address:
            check_address(self.address)
            try:
                with quiet:
                    ray.init(
                        address=self.address,
                        namespace=self.namespace,
                        log_to_driver=verbose,
                        logging_level="ERROR" if not verbose else "INFO",
                    )
            except Exception as exc:
                raise InfrastructureError(
                    f"cannot join the Ray cluster at {self.address}: {exc}"
                ) from None
            return
        with quiet:
            ray.init(
                address="local",  # a new instance, even if this machine runs another cluster
                namespace=self.namespace,
                include_dashboard=False,
                log_to_driver=verbose,
                logging_level="ERROR" if not verbose else "INFO",
                configure_logging=verbose,
            )
        self.started_ray = True

    def _host_options(self, i: int, host: str) -> dict:
        pin = self.scenario.runtime.pin
        if pin == "resource":
            return {"resources": {host: 0.001}}
        return {"scheduling_strategy": "SPREAD"}

    # -- the runtime interface --------------------------------------------------------------
    def _get(self, refs: Any) -> Any:
        ray = _ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as exc:
            raise InfrastructureError(f"a Ray actor of the run died unexpectedly: {exc}") from None
        except ray.exceptions.RayTaskError as exc:
            raise _store_lost(exc) from None

    def start(self) -> int:
        import redis

        from overcommit.cluster.runtime import clear_namespace

        shared = redis.Redis.from_url(self.shared_url)
        try:
            here = clear_namespace([shared], self.scenario.redis.prefix)
        finally:
            shared.close()
        return here + sum(self._get([a.start.remote() for a in self.hosts.values()]))

    def run_window(
        self,
        e0: int,
        e1: int,
        dt: float,
        device: Any,
        needs: dict[str, int] | None = None,
        orders: dict[str, Any] | None = None,
        promised: dict[str, dict[str, int]] | None = None,
    ) -> list[Any]:
        ray = _ray()
        needs = needs or {}
        promised = promised or {}
        names = list(self.hosts)
        mine = {
            h: {g: o for g, o in (orders or {}).items() if g in self.guests_on.get(h, ())}
            for h in names
        }
        # a host actor runs its window; a group actor runs its members' windows at once (their
        # guests' requests interleave over one mux, as inline's hosts' do): one call a group
        refs: dict[str, tuple[Any, int]] = {}  # host -> (its call, its place in the reply)
        groups: dict[Any, list[tuple]] = {}
        for h in names:
            args = (needs.get(h, 0), mine[h] or None, promised.get(h), self.count_pools)
            actor = self.hosts[h]
            if isinstance(actor, _Member):
                groups.setdefault(actor.group, []).append((h, *args))
            else:
                refs[h] = (actor.run_window.remote(e0, e1, dt, device, *args), -1)
        for group, calls in groups.items():
            ref = group.run_windows.remote(e0, e1, dt, device, calls)
            refs.update((call[0], (ref, i)) for i, call in enumerate(calls))
        results = []
        got: dict[Any, Any] = {}
        for h in names:
            ref, i = refs[h]
            try:
                if ref not in got:
                    got[ref] = ray.get(ref)
                results.append(got[ref] if i < 0 else got[ref][i])
            except ray.exceptions.RayTaskError as exc:
                raise _store_lost(exc) from None
            except _deaths() as exc:
                if not self.detect_deaths:
                    raise InfrastructureError(
                        f"a Ray actor of the run died unexpectedly: {exc}"
                    ) from None
                self.lost.append(h)  # a real fault: the driver turns it into fail_host
        names = [h for h in names if h not in self.lost]
        self.calls += len(results)
        walls = [w for _, w, _ in results]
        if walls:
            j = max(range(len(walls)), key=walls.__getitem__)
            self.slowest = (names[j], walls[j])
        self.counted = {h: p for h, (_, _, p) in zip(names, results) if p is not None}
        return [r for r, _, _ in results]

    def nodes(self) -> dict[str, str]:
        """Ray node id of each host actor (where its Redis server runs)."""
        return {h: i["node_id"] for h, i in self.infos.items()}

    def set_frozen(self, host: str, frozen: bool) -> None:
        self._get(self.hosts[host].set_frozen.remote(frozen))

    def host_of(self, guest: str) -> str:
        return next(h for h, gs in self.guests_on.items() if guest in gs)

    def drain(self, guest: str) -> Any:
        return self._get(self.hosts[self.host_of(guest)].drain.remote(guest))

    def pool_counts(self) -> list[list[str]]:
        """Each host's pool-count check, as its actor read it at the end of the last window
        (asked again of a host that has not run one since)."""
        counted, self.counted = self.counted, {}
        missing = [h for h in self.hosts if h not in counted]
        counted.update(
            zip(missing, self._get([self.hosts[h].pool_counts.remote() for h in missing]))
        )
        return [counted[h] for h in self.hosts]

    def add_event(self, event: Any) -> None:
        """A timeline event the hosts and guests read themselves (`host_reclaim`,
        `host_release`, `stop_cooperating`) injected into a running game day: every live host
        and guest actor adds it to its timeline, and so do guests started later."""
        self.scenario.events.append(event)
        actors = [*self.hosts.values(), *self.guest_actors.values()]
        self._get([a.add_event.remote(event) for a in actors])

    # -- faults ------------------------------------------------------------------------------
    def fail_host(self, host: str) -> None:
        """Kill the host's actor (its Redis server dies with it) and its guests' actors."""
        ray = _ray()
        actor = self.hosts.pop(host)
        for g in self.guests_on.pop(host, []):
            ga = self.guest_actors.pop(g, None)
            if ga is not None:
                with contextlib.suppress(Exception):
                    ray.kill(ga, no_restart=True)
        kill_host_actor(actor)

    def recover_host(self, host: str) -> None:
        """A new, empty host actor (with a new Redis server) for the repaired host; in a
        group, a new member of the group the host was in."""
        i = self.host_names.index(host)
        ext = self.scenario.redis.hosts or {}
        if self.per_actor > 1:
            group = self.groups[i // self.per_actor]
            args = (self.scenario, host, [], self.shared_url, ext.get(host), self.workdir)
            self._get(group.add.remote(*args))
            actor = _Member(group, host)
        else:
            actor = self._HostActor.options(**self._host_options(i, host)).remote(
                self.scenario, host, [], self.shared_url, self.mode, ext.get(host), self.workdir
            )
            self.actors.append(actor)
        self.infos[host] = self._get(actor.info.remote())
        self._get(actor.start.remote())
        self.hosts[host] = actor
        self.hosts = {h: self.hosts[h] for h in self.host_names if h in self.hosts}
        self.guests_on[host] = []

    def backend_failure(self, host: str, t: float, reboot: float) -> dict[str, dict[str, int]]:
        lost, url = self._get(self.hosts[host].backend_failure.remote(t, reboot))
        self.infos[host]["redis_url"] = url
        for dest, actor in self.incoming.values():  # actors-to-be there talk to the new server
            if dest == host:
                self._get(actor.rebind.remote(url))
        return lost

    def restart_guest(self, guest: str, host: str, carry: dict, boot: Any) -> None:
        actor = None
        if self.mode == "actors":
            actor = self._guest_actor(guest, host, carry["incarnation"] + 1)
            self._get(actor.adopt.remote(carry, boot))
        self._get(self.hosts[host].add_guest.remote(guest, carry, boot, actor))
        self.guests_on[host].append(guest)

    def stream(self, guest: str, dest: str, rounds: list[Any]) -> None:
        """Actors: a migrating guest's rounds, the page records its actor encoded, stream to
        its actor-to-be on the destination."""
        if self.mode != "actors":
            return
        held = self.incoming.get(guest)
        if held is None or held[0] != dest:
            self.cancel_migration(guest)
            held = (dest, self._guest_actor(guest, dest, 0, register=False))
            self.incoming[guest] = held
        nbytes = sum(len(blob) for blob in rounds)
        self.crossed += nbytes
        self.streamed += nbytes
        self._get(held[1].receive.remote(rounds))

    def move_guest(self, guest: str, source: str, dest: str, flush_tmem: bool) -> dict:
        """A migrated guest now runs on `dest`: its memory leaves the source's stores and
        arrives in the destination's; with actors its state moves to a new actor on the
        destination's node and the old actor stops."""
        import pickle

        actor = None
        if self.mode == "actors":  # the state goes from the old actor to the new one
            old = self.guest_actors.pop(guest)
            out, runner = self._get(old.leave.remote(flush_tmem))
            self._get(self.hosts[source].forget.remote(guest))
            held = self.incoming.pop(guest, None)
            if held is not None and held[0] != dest:
                _ray().kill(held[1])
                held = None
            actor = (
                held[1] if held is not None else self._guest_actor(guest, dest, 0, register=False)
            )
            self.crossed += len(pickle.dumps(runner))
            self._get(actor.take_over.remote(runner))
            self.guest_actors[guest] = actor
            _ray().kill(old)
            runner = None  # the new actor holds it; the destination host needs only the actor
        else:
            out, runner = self._get(self.hosts[source].leave.remote(guest, flush_tmem))
        records = out.pop("records")
        self.guests_on[source].remove(guest)
        out.update(self._get(self.hosts[dest].enter.remote(guest, runner, records, actor)))
        self.guests_on[dest].append(guest)
        # post-copy: the guest reads the pages it left at the source from the source's Redis
        there = actor if actor is not None else self.hosts[dest]
        self._get(there.peer.remote(source, self.infos[source]["redis_url"]))
        return out

    def crash_in_place(self, guest: str, t: float, reboot: float) -> None:
        """The guest crashes where it runs and reboots there (GuestRunner.crash)."""
        self._get(self.hosts[self.host_of(guest)].crash_guest.remote(guest, t, reboot))

    def drop_remote(self, guest: str, source: str, migration: int) -> None:
        """Drop the pages a post-copy migration that ended early left at `source`."""
        from overcommit.migration.remote import RemoteOps

        if source in self.hosts:
            self._get(
                self.hosts[source].store.remote(RemoteOps(guest, source, migration, drop=True))
            )

    def cancel_migration(self, guest: str) -> None:
        """A migration ended without a move: the actor that was to receive it stops."""
        held = self.incoming.pop(guest, None)
        if held is not None:
            with contextlib.suppress(Exception):
                _ray().kill(held[1])

    def crash_guest(self, guest: str) -> None:
        host = self.host_of(guest)
        self._get(self.hosts[host].drop_guest.remote(guest))
        self.guests_on[host].remove(guest)
        ga = self.guest_actors.pop(guest, None)
        if ga is not None:
            with contextlib.suppress(Exception):
                _ray().kill(ga)

    def finish(self) -> tuple[list, list]:
        names = list(self.hosts)
        results = self._get([self.hosts[h].finish.remote() for h in names])
        finals = [f for fs, _, _ in results for f in fs]
        hosts = [(h, summary) for h, (_, summary, _) in zip(names, results)]
        return finals, hosts

    def close(self) -> None:
        ray = _ray()
        with contextlib.suppress(Exception):
            ray.get([a.shutdown.remote() for a in self.hosts.values()], timeout=10)
        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        if self.started_ray or self.address:
            with contextlib.suppress(Exception):
                ray.shutdown()


class _Member:
    """A host inside a group actor (`runtime.hosts_per_actor` > 1), called as a host actor of
    its own: `member.drain.remote(...)` is the group's `call.remote(host, "drain", ...)`. Its
    windows go to the group's `run_windows`, with the other members' (`RayRuntime.run_window`)."""

    def __init__(self, group: Any, host: str) -> None:
        self.group = group
        self.host = host

    def __getattr__(self, method: str) -> Any:
        if method.startswith("__"):
            raise AttributeError(method)
        return _MemberMethod(self.group, self.host, method)


class _MemberMethod:
    def __init__(self, group: Any, host: str, method: str) -> None:
        self.group, self.host, self.method = group, host, method

    def remote(self, *args: Any) -> Any:
        return self.group.call.remote(self.host, self.method, *args)


def kill_host_actor(actor: Any) -> None:
    """Kill a host's actor (its Redis server dies with it); a host in a group actor has its
    Redis server killed and its state dropped while the group's other hosts run on."""
    with contextlib.suppress(Exception):
        if isinstance(actor, _Member):
            _ray().get(actor.group.kill.remote(actor.host))
        else:
            _ray().kill(actor, no_restart=True)


@contextlib.contextmanager
def _null():
    yield
