"""Runtimes place the runners somewhere and drive them; `inline` keeps everything here.

A runtime builds one `HostRunner` per host and one `GuestRunner` per guest from the scenario
and the placement, and offers the driver (`engine`) a small interface: run a window on every
host, apply an event, read pool counters, finish (read every store back). Store requests from
the models are answered by the same `StoreOps` plan in every path, so the stores see the same
commands: a sync window's guests run all at once over a `StoreMux` (`run_at_once`: one
connection per server, each guest's next request sent as soon as it is known, so the model
computes while the servers work); single requests outside windows go through `SyncExecutor`
(redis-py clients) here or `AsyncExecutor` (asyncio clients) inside Ray actors (`ray_runtime`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import redis
import redis.asyncio

from overcommit.cluster.runners import Boot, GuestRunner, HostRunner, HostWindow
from overcommit.cluster.storeops import SHARED, Freeze, PoolCounts, StoreOps
from overcommit.nodes import build_mechanism
from overcommit.nodes.guest import EpochStats, GuestModel
from overcommit.nodes.host import HostModel
from overcommit.profiles import DeviceQueue, costs_from, device_profiles
from overcommit.stores.pipeline import Plan, Posted, ServerLost, StoreMux, targeted
from overcommit.stores.tmem import ScriptRunner, run_async, run_sync

_LOST = (redis.ConnectionError, redis.TimeoutError, OSError)


class InfrastructureError(RuntimeError):
    """A failure of the emulator's own infrastructure (a store it did not expect to lose)."""


def drive(gen: Generator[Any, Any, Any], execute: Callable[[Any], Any]) -> Any:
    """Run a model or runner generator to completion, answering each request it yields."""
    try:
        req = next(gen)
        while True:
            req = gen.send(execute(req))
    except StopIteration as stop:
        return stop.value


async def drive_async(gen: Generator[Any, Any, Any], execute: Callable[[Any], Any]) -> Any:
    """`drive` for an executor whose answers are awaited."""
    try:
        req = next(gen)
        while True:
            req = gen.send(await execute(req))
    except StopIteration as stop:
        return stop.value


def _lost(req: Any, exc: BaseException, timeout: float | None = None) -> InfrastructureError:
    where = getattr(req, "guest", None)
    host = getattr(req, "host", "?")
    who = f"guest {where} on host {host}" if where else f"host {host}"
    if isinstance(exc, redis.TimeoutError) and timeout is not None:
        exc = redis.TimeoutError(f"no reply within {timeout:g} s (redis.timeout)")
    return InfrastructureError(f"lost contact with a Redis store while serving {who}: {exc}")


def say_waiting(target: Any, waited: float, bound: float) -> None:
    """Tell the console what a run waits for (a store that does not answer)."""
    import sys

    where = "shared storage" if target == SHARED_SERVER else f"host {target}"
    print(
        f"waiting for the Redis store of {where} ({waited:.0f} s of {bound:g} s)",
        file=sys.stderr,
        flush=True,
    )


class _Watch:
    """Says on the console which store a synchronous request has waited for, about every
    third of the bound (a daemon thread that only reads what the caller posts)."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self.busy: tuple[Any, float] | None = None  # (server, since when)
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def begin(self, target: Any) -> None:
        self.busy = (target, time.monotonic())
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="store-watch", daemon=True)
            self.thread.start()

    def end(self) -> None:
        self.busy = None

    def _loop(self) -> None:
        step = min(10.0, max(1.0, self.bound / 3))
        said: tuple[Any, int] | None = None
        while not self.stopped.wait(0.25):
            busy = self.busy
            if busy is None:
                continue
            k = int((time.monotonic() - busy[1]) / step)
            if k >= 1 and (busy, k) != said:
                say_waiting(busy[0], k * step, self.bound)
                said = (busy, k)

    def close(self) -> None:
        self.stopped.set()


class SyncExecutor:
    """Answers store requests with synchronous clients (one round trip per operation)."""

    def __init__(
        self,
        host_clients: dict[str, redis.Redis],
        shared: redis.Redis,
        prefix: str,
        payload: str,
        page_size: int,
    ) -> None:
        self.ops = StoreOps(prefix, payload, page_size)
        self.hosts = {h: ScriptRunner(c) for h, c in host_clients.items()}
        self.shared = ScriptRunner(shared)
        self.timeout: float | None = None  # the clients' socket timeout (for messages)
        self.watch: _Watch | None = None  # set with the timeout: the console hears of waits

    def bind(self, host: str, client: redis.Redis | None) -> None:
        """Point `host` at a new server (None: the host is gone)."""
        if client is None:
            self.hosts.pop(host, None)
        else:
            self.hosts[host] = ScriptRunner(client)

    def __call__(self, req: Any) -> Any:
        plan = self.ops.plan(req)
        host = self.hosts.get(req.host)
        try:
            step = next(plan)
            while True:
                role, op = step
                runner = self.shared if role == SHARED else host
                if self.watch is not None:
                    self.watch.begin(SHARED_SERVER if role == SHARED else req.host)
                if isinstance(op, Posted):  # answered like any other here
                    run_sync(runner, op.what)
                    step = plan.send(None)
                else:
                    step = plan.send(run_sync(runner, op))
        except StopIteration as stop:
            return stop.value
        except _LOST as exc:
            raise _lost(req, exc, self.timeout) from exc
        finally:
            if self.watch is not None:
                self.watch.end()

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


class AsyncExecutor:
    """Answers store requests with redis-py asyncio clients."""

    def __init__(
        self,
        host_clients: dict[str, redis.asyncio.Redis],
        shared: redis.asyncio.Redis,
        prefix: str,
        payload: str,
        page_size: int,
    ) -> None:
        self.ops = StoreOps(prefix, payload, page_size)
        self.hosts = {h: ScriptRunner(c) for h, c in host_clients.items()}
        self.shared = ScriptRunner(shared)

    async def __call__(self, req: Any) -> Any:
        plan = self.ops.plan(req)
        host = self.hosts.get(req.host)
        try:
            step = next(plan)
            while True:
                role, op = step
                runner = self.shared if role == SHARED else host
                if isinstance(op, Posted):
                    await run_async(runner, op.what)
                    step = plan.send(None)
                else:
                    step = plan.send(await run_async(runner, op))
        except StopIteration as stop:
            return stop.value
        except _LOST as exc:
            raise _lost(req, exc) from exc


SHARED_SERVER = ("shared storage",)  # the mux's key of the shared server (no host name is a tuple)


def mux_plan(ops: StoreOps, gen: Generator[Any, Any, Any]) -> Plan:
    """A runner generator as a `StoreMux` plan: each store request it yields becomes
    `(server, Eval | Command)` steps, the server being the request's host (by name) or
    `SHARED_SERVER`."""
    try:
        req = next(gen)
        while True:
            plan = ops.plan(req)
            try:
                step = next(plan)
                while True:
                    role, op = step
                    target = SHARED_SERVER if role == SHARED else req.host
                    if isinstance(op, Posted):  # one request, its reply not waited for
                        yield target, Posted(next(op.what))
                        op.what.close()
                        step = plan.send(None)
                    else:
                        step = plan.send((yield from targeted(target, op)))
            except StopIteration as stop:
                reply = stop.value
            req = gen.send(reply)
    except StopIteration as stop:
        return stop.value


def run_at_once(
    mux: StoreMux, ops: StoreOps, runs: list[Generator[Any, Any, Any]], during: str
) -> list[Any]:
    """Run guests' runner generators (their windows, their final read-backs) at once over
    `mux`; returns their results in order. `during` names the work in an error message."""
    try:
        return mux.run([mux_plan(ops, r) for r in runs])
    except ServerLost as exc:
        where = "shared storage" if exc.target == SHARED_SERVER else f"host {exc.target}"
        raise InfrastructureError(
            f"lost contact with the Redis store of {where} during {during}: {exc}"
        ) from exc


def build_host(scenario: Any, name: str) -> HostModel:
    sc = scenario
    swap = sc.hosts.swap
    return HostModel(
        name,
        sc.hosts.ram,
        sc.hosts.reserve,
        sc.page_size,
        sc.hosts.boot,
        sc.hosts.tmem.max,
        sc.hosts.tmem.exclusive_gets,
        swap_size=swap.size,
        swap_device=DeviceQueue(device_profiles(sc.devices)[swap.device]),
        swap_policy=swap.policy,
        settings=sc,
        epoch_seconds=sc.epoch,
    )


def build_guest(scenario: Any, spec: Any, host: str, incarnation: int = 0) -> GuestModel:
    sc = scenario
    mech = build_mechanism(sc.mechanism)
    return GuestModel(
        spec,
        host=host,
        incarnation=incarnation,
        seed=sc.seed,
        page_size=sc.page_size,
        payload=sc.payload,
        boot=sc.hosts.boot,
        costs=costs_from(sc.costs),
        uses_tmem=mech.guest_uses_tmem,
        exclusive_gets=sc.hosts.tmem.exclusive_gets,
        features=mech.guest_features,
        settings=sc,
        epoch_seconds=sc.epoch,
    )


def clear_namespace(clients: list[redis.Redis], prefix: str) -> int:
    """Delete every key of the run's prefix (left by an earlier run on external servers)."""
    deleted = 0
    for client in clients:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            deleted += client.delete(*keys[i : i + 1000])
    return deleted


class InlineRuntime:
    """Every host and guest in this process; a window runs all their guests at once."""

    kind = "inline"

    def __init__(self, scenario: Any, placement: dict[str, str], fleet: Any) -> None:
        sc = scenario
        self.scenario = sc
        self.fleet = fleet
        self.prefix = sc.redis.prefix
        self.host_names = sc.host_names()
        self.specs = {s.name: s for s in sc.guest_specs()}
        self.hosts: dict[str, HostRunner] = {h: self._host(h) for h in self.host_names}
        self.guests: dict[str, list[GuestRunner]] = {h: [] for h in self.host_names}
        for spec in sc.guest_specs():
            h = placement[spec.name]
            self.guests[h].append(GuestRunner(build_guest(sc, spec, h)))
        self.by_name = {g.name: g for gs in self.guests.values() for g in gs}
        # a store that leaves a request unanswered for redis.timeout is lost (a hung server)
        self.timeouts = {"socket_timeout": sc.redis.timeout}
        clients = {h: fleet.host(h).client(**self.timeouts) for h in self.host_names}
        shared = fleet.shared.client(**self.timeouts)
        self.execute = SyncExecutor(clients, shared, self.prefix, sc.payload, sc.page_size)
        self.execute.timeout = sc.redis.timeout
        self.execute.watch = _Watch(sc.redis.timeout)
        self.mux = StoreMux(  # same clients, own connections
            {**clients, SHARED_SERVER: shared}, sc.redis.timeout, say_waiting
        )
        self.calls = 0

    def _host(self, name: str) -> HostRunner:
        sc = self.scenario
        return HostRunner(build_host(sc, name), build_mechanism(sc.mechanism))

    def host_of(self, guest: str) -> str:
        return self.by_name[guest].model.host

    def models(self) -> list[GuestModel]:
        """The guest models of running guests, in scenario order (inline only: tests reach
        into them)."""
        order = [g.name for g in self.scenario.guest_specs()]
        return [self.by_name[n].model for n in order if n in self.by_name]

    def start(self) -> int:
        """Prepare the stores; returns keys deleted from an earlier run."""
        clients = [self.fleet.host(h).client() for h in self.hosts]
        return clear_namespace([*clients, self.fleet.shared.client()], self.prefix)

    def run_window(
        self,
        e0: int,
        e1: int,
        dt: float,
        device: DeviceQueue,
        needs: dict[str, int] | None = None,
        orders: dict[str, Any] | None = None,
        promised: dict[str, dict[str, int]] | None = None,
    ) -> list[HostWindow]:
        # every host plans its window, then all guests of all hosts run it at once (their
        # store requests interleave in the mux), then every host combines its guests' reports
        windows = []
        for name, hr in self.hosts.items():
            runners = self.guests[name]
            hr.host.reclaim_need = (needs or {}).get(name, 0)
            grants = hr.plan([g.state() for g in runners], orders, (promised or {}).get(name))
            windows += [g.window(e0, e1, dt, device, grants[g.name]) for g in runners]
        reports = run_at_once(self.mux, self.execute.ops, windows, f"epochs {e0}-{e1 - 1}")
        out = []
        for name, hr in self.hosts.items():
            mine, reports = reports[: len(self.guests[name])], reports[len(self.guests[name]) :]
            self.calls += 1
            out.append(hr.combine(e0, e1, mine))
        return out

    def set_frozen(self, host: str, frozen: bool) -> None:
        hr = self.hosts[host]
        hr.host.frozen = frozen
        self.execute(Freeze(host, [g.name for g in self.guests[host]], frozen))

    def drain(self, guest: str) -> tuple[int, EpochStats]:
        return drive(self.by_name[guest].drain(), self.execute)

    def pool_counts(self) -> list[list[str]]:
        out = []
        for name, hr in self.hosts.items():
            used, counts = self.execute(PoolCounts(name, [g.name for g in self.guests[name]]))
            out.append(hr.check_counts(used, counts))
        return out

    def add_event(self, event: Any) -> None:
        """A timeline event the hosts and guests read themselves (`host_reclaim`,
        `host_release`, `stop_cooperating`) injected into a running game day: every model here
        reads this scenario, so adding it to its timeline is enough."""
        self.scenario.events.append(event)

    # -- faults ------------------------------------------------------------------------------
    def take_lost(self) -> list[str]:
        """Hosts that died unannounced (never here: inline has no real faults)."""
        return []

    def _rebind(self, host: str) -> None:
        client = self.fleet.host(host).client(**self.timeouts)
        self.execute.bind(host, client)
        self.mux.bind(host, client)

    def fail_host(self, host: str) -> None:
        """The host dies: its Redis server is killed, its guests' state is gone."""
        self.fleet.host(host).kill()
        del self.hosts[host]
        for g in self.guests.pop(host):
            del self.by_name[g.name]
        self.execute.bind(host, None)
        self.mux.drop(host)

    def recover_host(self, host: str) -> None:
        """The host is back from repair: a new empty Redis, no guests."""
        self.fleet.restart_host(host)
        self._rebind(host)
        self.hosts[host] = self._host(host)
        self.hosts = {h: self.hosts[h] for h in self.host_names if h in self.hosts}
        self.guests[host] = []

    def backend_failure(self, host: str, t: float, reboot: float) -> dict[str, dict[str, int]]:
        """The host's Redis dies and restarts empty; returns what each guest lost."""
        self.fleet.host(host).kill()
        self.fleet.restart_host(host)
        self._rebind(host)
        hr = self.hosts[host]
        if hr.host.frozen:  # the new server has no frozen clients; the host re-freezes them
            self.execute(Freeze(host, [g.name for g in self.guests[host]], True))
        return {g.name: drive(g.backend_lost(t, reboot), self.execute) for g in self.guests[host]}

    def restart_guest(self, guest: str, host: str, carry: dict, boot: Boot) -> None:
        """Boot a new incarnation of `guest` on `host`, continuing `carry`'s accounting."""
        sc = self.scenario
        model = build_guest(sc, self.specs[guest], host, incarnation=carry["incarnation"] + 1)
        runner = GuestRunner(model)
        drive(runner.adopt(carry, boot), self.execute)
        self.guests[host].append(runner)
        self.by_name[guest] = runner
        if self.hosts[host].host.frozen:
            self.execute(Freeze(host, [guest], True))

    def move_guest(self, guest: str, source: str, dest: str, flush_tmem: bool) -> dict:
        """A migrated guest now runs on `dest`: its host-side memory moves there."""
        runner = self.by_name[guest]
        out = drive(runner.leave_source(flush_tmem), self.execute)
        out.update(drive(runner.arrive(dest, out.pop("records")), self.execute))
        self.guests[source].remove(runner)
        self.guests[dest].append(runner)
        if self.hosts[dest].host.frozen:
            self.execute(Freeze(dest, [guest], True))
        return out

    def stream(self, guest: str, dest: str, rounds: list[Any]) -> None:
        """Nothing crosses a process boundary here."""

    def cancel_migration(self, guest: str) -> None:
        """Nothing to release here."""

    def crash_in_place(self, guest: str, t: float, reboot: float) -> None:
        """The guest crashes where it runs and reboots there (GuestRunner.crash)."""
        drive(self.by_name[guest].crash(t, reboot), self.execute)

    def drop_remote(self, guest: str, source: str, migration: int) -> None:
        """Drop the pages a post-copy migration that ended early left at `source`."""
        from overcommit.migration.remote import RemoteOps

        if source in self.hosts:
            self.execute(RemoteOps(guest, source, migration, drop=True))

    def crash_guest(self, guest: str) -> None:
        """The guest dies where it runs (a post-copy whose source died): its state is gone."""
        runner = self.by_name.pop(guest)
        drive(runner.release_host_stores(), self.execute)
        for gs in self.guests.values():
            if runner in gs:
                gs.remove(runner)

    def finish(self) -> tuple[list[tuple[str, dict, list, Any]], list[tuple[str, dict]]]:
        runners = [g for name in self.hosts for g in self.guests[name]]
        finals = run_at_once(
            self.mux, self.execute.ops, [g.finish() for g in runners], "the final read-back"
        )
        guests = [(g.name, *final) for g, final in zip(runners, finals)]
        return guests, [(name, hr.summary()) for name, hr in self.hosts.items()]

    def close(self) -> None:
        """Close the mux's connections (the fleet is the driver's)."""
        self.mux.close()
        self.execute.close()
