"""What runs inside the Ray actors of the `ray` runtime: a host actor (`HostActorImpl`: its
own `redis-server` on its node, its guests' runners when they are packed) and a guest actor
(`GuestActorImpl`: one guest's memory state, when guests are actors), with the store clients
they share (`_Stores`). `ray_runtime.RayRuntime`, on the driver, creates and calls them."""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from overcommit.cluster.runners import GuestRunner, HostRunner
from overcommit.cluster.runtime import (
    SHARED_SERVER,
    AsyncExecutor,
    build_guest,
    build_host,
    drive_async,
    run_at_once,
)
from overcommit.cluster.storeops import Freeze, PoolCounts
from overcommit.nodes import build_mechanism
from overcommit.stores.pipeline import StoreMux
from overcommit.stores.tmem import ScriptRunner


def _ray():
    import ray

    return ray


class _Stores:
    """A Ray-side holder of store clients of the host's Redis and shared storage: asyncio
    clients for single requests, and a `StoreMux` (sync) that runs sync windows."""

    def __init__(self, host: str, host_url: str, shared_url: str, sc: Any) -> None:
        import redis
        import redis.asyncio

        bound = {"socket_timeout": sc.redis.timeout}  # a hung store fails the run
        self.bound = bound
        self.host = host
        self.peers: dict[str, str] = {}  # other hosts' stores this one reads (post-copy)
        self.shared_url = shared_url
        self.host_client = redis.asyncio.Redis.from_url(host_url, **bound)
        self.shared_client = redis.asyncio.Redis.from_url(shared_url, **bound)
        self.execute = AsyncExecutor(
            {host: self.host_client},
            self.shared_client,
            sc.redis.prefix,
            sc.payload,
            sc.page_size,
        )
        self.mux = StoreMux(
            {
                host: redis.Redis.from_url(host_url, **bound),
                SHARED_SERVER: redis.Redis.from_url(shared_url, **bound),
            },
            sc.redis.timeout,
        )

    def peer(self, host: str, url: str) -> None:
        """Requests may also go to `host`'s Redis at `url`: a post-copy guest that arrived
        here reads the pages it left at its source from there."""
        import redis
        import redis.asyncio

        if host == self.host:
            return
        self.peers[host] = url
        self.execute.hosts[host] = ScriptRunner(redis.asyncio.Redis.from_url(url, **self.bound))
        self.mux.bind(host, redis.Redis.from_url(url, **self.bound))

    def renew(self, host_url: str, sc: Any) -> _Stores:
        """New stores for a replaced Redis of this host, with the same peers."""
        new = _Stores(self.host, host_url, self.shared_url, sc)
        for host, url in self.peers.items():
            new.peer(host, url)
        return new

    def at_once(self, gens: list[Any], during: str) -> list[Any]:
        """Run runner generators (windows, final read-backs) to completion, all at once over
        the mux (blocks the actor meanwhile: nothing else runs on a host or guest actor during
        its window); `during` names the work in an error message."""
        return run_at_once(self.mux, self.execute.ops, gens, during)

    def windows(self, gens: list[Any], e0: int, e1: int) -> list[Any]:
        """Run window generators of epochs [e0, e1) at once."""
        return self.at_once(gens, f"epochs {e0}-{e1 - 1}")


def _add_event(event: Any, *scenarios: Any) -> None:
    """Append an injected timeline event to each distinct scenario's events (a host or guest
    model reads its timeline from the scenario it was built with)."""
    seen: set[int] = set()
    for sc in scenarios:
        if sc is not None and id(sc.events) not in seen:
            seen.add(id(sc.events))
            sc.events.append(event)


class HostActorImpl:
    """A host: its Redis server, its bookkeeping, and its guests (inside it, or as actors)."""

    def __init__(
        self,
        scenario: Any,
        host: str,
        guest_names: list[str],
        shared_url: str,
        mode: str,
        external_url: str | None,
        workdir: str | None = None,
    ) -> None:
        from overcommit.stores.launcher import RedisServer

        self.sc = scenario
        self.name = host
        self.mode = mode
        # the server's directory: inside the driver's working directory when this node has
        # it (removed with it, even if this actor is killed), else a temporary one of its own
        # that `shutdown` removes
        here = workdir if workdir is not None and os.path.isdir(workdir) else None
        self._dir = tempfile.mkdtemp(prefix=f"overcommit-{host}-", dir=here)
        self.server = None
        if external_url is None:
            self.server = RedisServer.start(host, Path(self._dir), socket=scenario.redis.socket)
            self.url = self.server.url
        else:
            self.url = external_url
        self.shared_url = shared_url
        self.runner = HostRunner(build_host(scenario, host), build_mechanism(scenario.mechanism))
        self.stores = _Stores(host, self.url, shared_url, scenario)
        specs = {g.name: g for g in scenario.guest_specs()}
        self.guest_names = guest_names
        self.guests: list[GuestRunner] = []  # with guests: actors, the guest actors own them
        if mode == "packed":
            self.guests = [GuestRunner(build_guest(scenario, specs[n], host)) for n in guest_names]
        self.actors: list[Any] = []
        self.states = [g.state() for g in self.guests]
        self.calls = 0

    def info(self) -> dict:
        ray = _ray()
        return {
            "host": self.name,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "redis_pid": None if self.server is None else self.server.pid,
            "redis_url": self.url,
        }

    async def attach(self, actors: list[Any]) -> None:
        self.actors = actors
        self.states = list(await asyncio.gather(*[a.state.remote() for a in actors]))

    async def start(self) -> int:
        """Clear what an earlier run left under this run's prefix in the host's Redis."""
        n = 0
        async for key in self.stores.host_client.scan_iter(match=f"{self.sc.redis.prefix}:*"):
            n += await self.stores.host_client.delete(key)
        return n

    async def run_window(
        self,
        e0: int,
        e1: int,
        dt: float,
        device: Any,
        need: int = 0,
        orders: Any = None,
        promised: dict[str, int] | None = None,
        count_pools: bool = False,
    ) -> tuple[Any, float, list[str] | None]:
        """Run the window; returns the host's report, the call's wall time and, with
        `count_pools`, the pool-count check read right after it (saves the driver a call)."""
        t0 = time.perf_counter()
        grants = self.window_start(need, orders, promised)
        if self.mode == "actors":
            refs = [
                a.window.remote(e0, e1, dt, device, grants[n])
                for a, n in zip(self.actors, self.guest_names)
            ]
            reports = list(await asyncio.gather(*refs))
        else:
            reports = self.stores.windows(self.window_gens(e0, e1, dt, device, grants), e0, e1)
        return await self.window_end(e0, e1, reports, count_pools, t0)

    def window_start(self, need: int, orders: Any, promised: dict[str, int] | None) -> dict:
        """The host plans the window: its guests' grants, by guest name."""
        self.runner.host.reclaim_need = need
        if self.mode == "packed":
            self.states = [g.state() for g in self.guests]
        return self.runner.plan(self.states, orders, promised)

    def window_gens(self, e0: int, e1: int, dt: float, device: Any, grants: dict) -> list[Any]:
        """Packed: the window generators of the host's guests, in their order."""
        return [g.window(e0, e1, dt, device, grants[g.name]) for g in self.guests]

    async def window_end(
        self, e0: int, e1: int, reports: list[Any], count_pools: bool, t0: float
    ) -> tuple[Any, float, list[str] | None]:
        """The host combines its guests' reports of the window (see `run_window`)."""
        out = self.runner.combine(e0, e1, reports)
        self.states = [r.state for r in reports]
        self.calls += 1
        problems = (await self.pool_counts()) if count_pools else None
        wall = time.perf_counter() - t0
        return out, wall, problems

    def peer(self, host: str, url: str) -> None:
        """Packed: a post-copy guest that arrived here reads its source's store at `url`."""
        self.stores.peer(host, url)

    async def store(self, req: Any) -> Any:
        """Answer one store request against this host's stores (e.g. drop the pages a
        post-copy migration left here)."""
        return await self.stores.execute(req)

    async def set_frozen(self, frozen: bool) -> None:
        self.runner.host.frozen = frozen
        await self.stores.execute(Freeze(self.name, self.guest_names, frozen))

    async def drain(self, guest: str) -> Any:
        i = self.guest_names.index(guest)
        if self.mode == "actors":
            out = await self.actors[i].drain.remote()
            self.states[i] = await self.actors[i].state.remote()  # the host sees the drain
            return out
        return await drive_async(self.guests[i].drain(), self.stores.execute)

    async def pool_counts(self) -> list[str]:
        used, counts = await self.stores.execute(PoolCounts(self.name, self.guest_names))
        return self.runner.check_counts(used, counts)

    async def finish(self) -> tuple[list, dict, int]:
        if self.mode == "actors":
            finals = list(await asyncio.gather(*[a.finish.remote() for a in self.actors]))
        else:
            done = self.stores.at_once([g.finish() for g in self.guests], "the final read-back")
            finals = [(g.name, *final) for g, final in zip(self.guests, done)]
        return finals, self.runner.summary(), self.calls

    def add_event(self, event: Any) -> None:
        """An injected event this host (and its packed guests) read from their timeline."""
        _add_event(
            event, self.sc, self.runner.host.settings, *(g.model.settings for g in self.guests)
        )

    # -- faults ------------------------------------------------------------------------------
    async def backend_failure(self, t: float, reboot: float) -> tuple[dict, str]:
        """Kill this host's Redis and start an empty one; returns what each guest lost and
        the new server's URL."""
        from overcommit.stores.launcher import RedisServer

        if self.server is None:  # an external server: the emulator cannot kill it
            raise RuntimeError(f"host {self.name} uses an external Redis; cannot fail it")
        self.server.kill()
        self.server = RedisServer.start(self.name, Path(self._dir), socket=self.sc.redis.socket)
        self.url = self.server.url
        self.stores = self.stores.renew(self.url, self.sc)
        lost = {}
        if self.mode == "actors":
            for n, a in zip(self.guest_names, self.actors):
                await a.rebind.remote(self.url)
                lost[n] = await a.backend_lost.remote(t, reboot)
            self.states = list(await asyncio.gather(*[a.state.remote() for a in self.actors]))
        else:
            for g in self.guests:
                lost[g.name] = await drive_async(g.backend_lost(t, reboot), self.stores.execute)
        if self.runner.host.frozen:
            await self.stores.execute(Freeze(self.name, self.guest_names, True))
        return lost, self.url

    async def add_guest(self, name: str, carry: dict, boot: Any, actor: Any = None) -> None:
        """A restarted guest joins this host (packed: built here; actors: its own actor)."""
        if actor is not None:
            self.actors.append(actor)
            self.guest_names.append(name)
            self.states.append(await actor.state.remote())
        else:
            spec = next(g for g in self.sc.guest_specs() if g.name == name)
            model = build_guest(self.sc, spec, self.name, incarnation=carry["incarnation"] + 1)
            runner = GuestRunner(model)
            await drive_async(runner.adopt(carry, boot), self.stores.execute)
            self.guests.append(runner)
            self.guest_names.append(name)
            self.states.append(runner.state())
        if self.runner.host.frozen:
            await self.stores.execute(Freeze(self.name, [name], True))

    async def leave(self, name: str, flush_tmem: bool) -> tuple[dict, Any]:
        """Packed: a migrated guest leaves this host; its memory leaves the host's stores and
        its runner goes with the result."""
        i = self.guest_names.index(name)
        runner = self.guests.pop(i)
        out = await drive_async(runner.leave_source(flush_tmem), self.stores.execute)
        self.forget(name)
        return out, runner

    def forget(self, name: str) -> None:
        """The guest no longer runs here (migrated; with actors its actor moved it)."""
        i = self.guest_names.index(name)
        if self.mode == "actors":
            del self.actors[i]
        del self.guest_names[i]
        del self.states[i]

    async def enter(self, name: str, runner: Any, records: Any, actor: Any = None) -> dict:
        """A migrated guest arrives: its pool pages go into this host's pool."""
        if actor is not None:
            out = await actor.arrive.remote(self.name, records)
            self.actors.append(actor)
            self.guest_names.append(name)
            self.states.append(await actor.state.remote())
        else:
            runner = copy.deepcopy(runner)  # arrays from the object store are read-only
            out = await drive_async(runner.arrive(self.name, records), self.stores.execute)
            self.guests.append(runner)
            self.guest_names.append(name)
            self.states.append(runner.state())
        if self.runner.host.frozen:
            await self.stores.execute(Freeze(self.name, [name], True))
        return out

    async def drop_guest(self, name: str) -> None:
        """The guest died here (post-copy whose source failed): release its stores."""
        i = self.guest_names.index(name)
        if self.mode == "actors":
            await self.actors[i].release.remote()
            del self.actors[i]
        else:
            await drive_async(self.guests[i].release_host_stores(), self.stores.execute)
            del self.guests[i]
        del self.guest_names[i]
        del self.states[i]

    async def crash_guest(self, name: str, t: float, reboot: float) -> None:
        """The guest crashes here and reboots in place (a post-copy whose source lost the
        pages it still held)."""
        i = self.guest_names.index(name)
        if self.mode == "actors":
            await self.actors[i].crash.remote(t, reboot)
            self.states[i] = await self.actors[i].state.remote()
        else:
            await drive_async(self.guests[i].crash(t, reboot), self.stores.execute)
            self.states[i] = self.guests[i].state()

    def has_guest_state(self) -> bool:
        """Whether this actor holds any guest's memory state (it does only when packed)."""
        return bool(self.guests)

    def shutdown(self) -> None:
        """Stop the host's Redis server and remove its directory."""
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def die(self) -> None:
        """The host fails inside a group actor: its Redis server is killed, not stopped."""
        if self.server is not None:
            self.server.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class HostGroupImpl:
    """Several hosts in one actor process (`runtime.hosts_per_actor` > 1, guests packed): each
    member is a whole `HostActorImpl` with its own Redis server. Calls name the member
    (`call`), except a window: `run_windows` runs every member's at once, all their guests over
    one mux, as the inline runtime runs its hosts'."""

    def __init__(self, scenario: Any, members: list[tuple], shared_url: str, workdir: Any) -> None:
        self.members: dict[str, HostActorImpl] = {}
        for host, guest_names, external_url in members:
            self.add(scenario, host, guest_names, shared_url, external_url, workdir)

    def add(
        self,
        scenario: Any,
        host: str,
        guest_names: list[str],
        shared_url: str,
        external_url: str | None,
        workdir: str | None,
    ) -> None:
        """A host joins the group (at the start, or repaired after a failure)."""
        self.members[host] = HostActorImpl(
            scenario, host, guest_names, shared_url, "packed", external_url, workdir
        )

    async def call(self, host: str, method: str, *args: Any) -> Any:
        """Run `method` of member `host`, as a call to a host actor of its own would."""
        out = getattr(self.members[host], method)(*args)
        return (await out) if asyncio.iscoroutine(out) else out

    async def run_windows(self, e0: int, e1: int, dt: float, device: Any, calls: list) -> list:
        """Members' `run_window`s at once, one `(host, need, orders, promised, count_pools)`
        each: every member plans its window, then all their guests run it together over one
        mux spanning the members' Redis servers and shared storage (their requests
        interleave, as inline's hosts' do, where members taking turns left each server idle
        while another member computed), then every member combines its own reports. Returns
        each member's `run_window` result, in the order of `calls`."""
        t0 = time.perf_counter()
        members = [self.members[call[0]] for call in calls]
        gens: list[Any] = []
        sizes = []
        for m, (_, need, orders, promised, _) in zip(members, calls):
            mine = m.window_gens(e0, e1, dt, device, m.window_start(need, orders, promised))
            gens += mine
            sizes.append(len(mine))
        mux = StoreMux.union([m.stores.mux for m in members], [m.name for m in members])
        during = f"epochs {e0}-{e1 - 1}"
        reports = run_at_once(mux, members[0].stores.execute.ops, gens, during)
        out = []
        for m, n, call in zip(members, sizes, calls):
            mine, reports = reports[:n], reports[n:]
            out.append(await m.window_end(e0, e1, mine, call[4], t0))
        wall = time.perf_counter() - t0  # the members ran together: each took the whole window
        return [(report, wall, problems) for report, _, problems in out]

    def kill(self, host: str) -> None:
        """The host dies: its Redis server is killed and its guests' state dropped, as killing
        a host actor's process would (the other members run on)."""
        member = self.members.pop(host, None)
        if member is not None:
            member.die()

    def shutdown(self) -> None:
        for member in self.members.values():
            member.shutdown()


class GuestActorImpl:
    """One guest: its model lives here and nowhere else."""

    def __init__(
        self,
        scenario: Any,
        spec_name: str,
        host: str,
        host_url: str,
        shared_url: str,
        incarnation: int = 0,
    ) -> None:
        spec = next(g for g in scenario.guest_specs() if g.name == spec_name)
        self.sc = scenario
        self.shared_url = shared_url
        self.received: Any = None  # a migration's target: version streamed per page (-1: none)
        self.runner = GuestRunner(build_guest(scenario, spec, host, incarnation))
        self.stores = _Stores(host, host_url, shared_url, scenario)
        self.calls = 0

    def node_id(self) -> str:
        return _ray().get_runtime_context().get_node_id()

    def add_event(self, event: Any) -> None:
        """An injected event this guest reads from its timeline."""
        _add_event(event, self.sc, None if self.runner is None else self.runner.model.settings)

    def rebind(self, host_url: str) -> None:
        """The host's Redis was replaced: talk to the new one."""
        self.stores = self.stores.renew(host_url, self.sc)

    def peer(self, host: str, url: str) -> None:
        """This guest reads the pages its post-copy migration left at `host` from `url`."""
        self.stores.peer(host, url)

    async def backend_lost(self, t: float, reboot: float) -> dict:
        return await drive_async(self.runner.backend_lost(t, reboot), self.stores.execute)

    async def adopt(self, carry: dict, boot: Any) -> None:
        await drive_async(self.runner.adopt(carry, boot), self.stores.execute)

    async def leave(self, flush_tmem: bool) -> tuple[dict, Any]:
        """Migration complete: the memory leaves the source's stores; the runner (page
        tables, versions, generator state) goes to the destination's actor."""
        out = await drive_async(self.runner.leave_source(flush_tmem), self.stores.execute)
        runner, self.runner = self.runner, None
        return out, runner

    def receive(self, rounds: list[bytes]) -> int:
        """A destination actor takes a window's rounds, each the encoded records of the pages
        it sent, checks every record (checksum, and content with `payload: full`) and keeps
        the versions they carry; returns the pages it holds."""
        import numpy as np

        from overcommit.stores.codec import decode

        g = self.runner.model
        if self.received is None:
            self.received = np.full(g.N, -1, np.int64)  # -1: not sent yet
        for blob in rounds:
            batch = decode(g.name, blob, g.payload, g.page_size)
            bad = g.verify(batch)
            if bad.any():
                pages = batch.pages[bad][:5].tolist()
                raise RuntimeError(f"{g.name}: {int(bad.sum())} corrupt record(s) streamed {pages}")
            self.received[batch.pages.astype(np.int64)] = batch.versions
        return int(np.count_nonzero(self.received >= 0))

    async def take_over(self, runner: Any) -> int:
        """Switch-over: the runner arrives. What streamed must be the state that arrived: no
        streamed page newer than it (versions only grow), and every page the destination
        holds (resident, or in a compressed pool; not changed after the switch, not left at
        the source for post-copy) with the version that streamed. Returns the pages checked."""
        from overcommit.migration.transfer import takeover_problem

        self.runner = runner = copy.deepcopy(runner)  # object-store arrays are read-only
        problem, checked = takeover_problem(runner.model, self.received)
        if problem:
            raise RuntimeError(problem)
        return checked

    async def arrive(self, dest: str, records: Any) -> dict:
        return await drive_async(self.runner.arrive(dest, records), self.stores.execute)

    async def crash(self, t: float, reboot: float) -> None:
        await drive_async(self.runner.crash(t, reboot), self.stores.execute)

    async def release(self) -> None:
        await drive_async(self.runner.release_host_stores(), self.stores.execute)

    def state(self) -> Any:
        return self.runner.state()

    async def window(self, e0: int, e1: int, dt: float, device: Any, directives: Any) -> Any:
        self.calls += 1
        out = self.stores.windows([self.runner.window(e0, e1, dt, device, directives)], e0, e1)[0]
        if out.stream:  # a migration's rounds leave as the records of their pages
            from overcommit.stores.codec import encode

            g = self.runner.model
            out.stream = [
                encode(g.name, g._batch(p, v), g.payload, g.page_size) for p, v in out.stream
            ]
        return out

    async def drain(self) -> Any:
        return await drive_async(self.runner.drain(), self.stores.execute)

    async def finish(self) -> tuple:
        done = self.stores.at_once([self.runner.finish()], "the final read-back")
        return (self.runner.name, *done[0])

    def page_versions(self) -> Any:
        return self.runner.model.version.copy()

    def pid(self) -> int:
        return os.getpid()
