"""Runtimes place the runners somewhere and drive them; `inline` keeps everything here.

A runtime builds one `HostRunner` per host and one `GuestRunner` per guest from the scenario
and the placement, and offers the driver (`engine`) a small interface: run a window on every
host, apply an event, read pool counters, finish (read every store back). Store requests from
the models are answered by an executor: `SyncExecutor` over redis-py clients here,
`AsyncExecutor` over redis-py asyncio clients inside Ray actors (`ray_runtime`). Both run the
same `StoreOps` plan, so the stores see the same commands in either.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import redis
import redis.asyncio

from overcommit.cluster.runners import (
    Boot,
    Freeze,
    GuestRunner,
    HostRunner,
    HostWindow,
    PoolCounts,
    StoreOps,
)
from overcommit.nodes import build_mechanism
from overcommit.nodes.guest import EpochStats, GuestModel
from overcommit.nodes.host import HostModel
from overcommit.profiles import DeviceQueue, costs_from, device_profiles
from overcommit.stores.swap import AsyncSwapStore, SwapStore
from overcommit.stores.tmem import AsyncTmemPool, TmemPool

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


def _lost(req: Any, exc: BaseException) -> InfrastructureError:
    where = getattr(req, "guest", None)
    host = getattr(req, "host", "?")
    who = f"guest {where} on host {host}" if where else f"host {host}"
    return InfrastructureError(f"lost contact with a Redis store while serving {who}: {exc}")


class SyncExecutor:
    """Answers store requests with synchronous clients (one round trip per store touched)."""

    def __init__(
        self,
        host_clients: dict[str, redis.Redis],
        shared: redis.Redis,
        prefix: str,
        payload: str,
        page_size: int,
    ) -> None:
        self.pools = {h: TmemPool(c, prefix) for h, c in host_clients.items()}
        self.swap = SwapStore(shared, prefix)
        self.ops = StoreOps(payload, page_size)

    def __call__(self, req: Any) -> Any:
        plan = self.ops.plan(req, self.pools.get(req.host), self.swap)
        try:
            step = next(plan)
            while True:
                fn, args, kwargs = step
                step = plan.send(fn(*args, **kwargs))
        except StopIteration as stop:
            return stop.value
        except _LOST as exc:
            raise _lost(req, exc) from exc


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
        self.pools = {h: AsyncTmemPool(c, prefix) for h, c in host_clients.items()}
        self.swap = AsyncSwapStore(shared, prefix)
        self.ops = StoreOps(payload, page_size)

    async def __call__(self, req: Any) -> Any:
        plan = self.ops.plan(req, self.pools.get(req.host), self.swap)
        try:
            step = next(plan)
            while True:
                fn, args, kwargs = step
                step = plan.send(await fn(*args, **kwargs))
        except StopIteration as stop:
            return stop.value
        except _LOST as exc:
            raise _lost(req, exc) from exc


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
    """Every host and guest in this process; hosts run one after another."""

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
        self.execute = SyncExecutor(
            {h: fleet.host(h).client() for h in self.host_names},
            fleet.shared.client(),
            self.prefix,
            sc.payload,
            sc.page_size,
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
        out = []
        for name, hr in self.hosts.items():
            runners = self.guests[name]
            hr.host.reclaim_need = (needs or {}).get(name, 0)
            grants = hr.plan([g.state() for g in runners], orders, (promised or {}).get(name))
            reports = [
                drive(g.window(e0, e1, dt, device, grants[g.name]), self.execute) for g in runners
            ]
            self.calls += 1
            out.append(hr.combine(e0, e1, reports))
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

    # -- faults ------------------------------------------------------------------------------
    def take_lost(self) -> list[str]:
        """Hosts that died unannounced (never here: inline has no real faults)."""
        return []

    def _rebind(self, host: str) -> None:
        self.execute.pools[host] = TmemPool(self.fleet.host(host).client(), self.prefix)

    def fail_host(self, host: str) -> None:
        """The host dies: its Redis server is killed, its guests' state is gone."""
        self.fleet.host(host).kill()
        del self.hosts[host]
        for g in self.guests.pop(host):
            del self.by_name[g.name]
        self.execute.pools.pop(host, None)

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

    def stream(self, guest: str, dest: str, pages: list[Any], versions: list[Any]) -> None:
        """Nothing crosses a process boundary here."""

    def cancel_migration(self, guest: str) -> None:
        """Nothing to release here."""

    def crash_guest(self, guest: str) -> None:
        """The guest dies where it runs (a post-copy whose source died): its state is gone."""
        runner = self.by_name.pop(guest)
        drive(runner.release_host_stores(), self.execute)
        for gs in self.guests.values():
            if runner in gs:
                gs.remove(runner)

    def finish(self) -> tuple[list[tuple[str, dict, list, Any]], list[tuple[str, dict]]]:
        guests = []
        for name in self.hosts:
            for g in self.guests[name]:
                summary, violations, hist = drive(g.finish(), self.execute)
                guests.append((g.name, summary, violations, hist))
        return guests, [(name, hr.summary()) for name, hr in self.hosts.items()]

    def close(self) -> None:
        """Nothing to release: the fleet is the driver's."""
