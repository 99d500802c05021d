"""The paging core's lifecycle outside the epoch: the OOM kill, failover requests (drain and
shrink what the host lends, stop cooperating), live migration's leave and arrive, the loss of
the host's stores, a crash and reboot, and the accounting one incarnation carries to the next.
Each operation does the core's part and asks every mechanism's hook for its own.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from overcommit.nodes.host import F_HSWAP, NO_PAGE
from overcommit.nodes.kernel.types import (
    _E,
    CARRY_FLOATS,
    FRONTSWAP,
    EpochStats,
    Reply,
    Request,
    SwapOps,
)
from overcommit.profiles import DeviceQueue


class GuestLifecycle:
    """`GuestModel`'s operations outside the epoch (a mixin)."""

    def _oom_kill(
        self, t: float, dt: float, work: float, touches: int, host: bool = False
    ) -> Generator[Request, Reply, EpochStats]:
        """Neither RAM nor swap has room: the OOM killer ends the workload; it restarts later.

        With `host`, the host's OOM killer ends the whole guest (its frames could not be
        placed): the guest reboots, its frames and host swap released."""
        self.counters["host_oom_kills" if host else "guest_oom_kills"] += 1
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, None, drop=True))
        for h in self.mechs:
            h.release(self, req, host)
        if self.has_files:  # the restarted workload starts from its files' original content
            req.files = SwapOps(_E, _E, None, drop=True)
        reply = yield req
        out: list[tuple[str, str]] = []
        for h in self.mechs:
            h.released(self, reply, out)
        self.unuse_left = 0
        self.alive_seconds += dt
        self.work_seconds += work
        self.alive = False
        self.down_until = t + dt + self.spec.oom_restart
        self.debt = 0.0  # the killed workload's stall dies with it
        if host:
            self._boot()
        else:
            self._reset_memory()
        out += [("conservation", m) for m in self.conservation()]
        return EpochStats(alive=True, work=work, touches=touches, violations=out)

    # -- host-requested operations ----------------------------------------------------------
    def drain_tmem(self) -> Generator[Request, Reply, tuple[int, EpochStats]]:
        """Give the host back everything it lends (a cooperative guest moves its tmem pages to
        its swap disk); returns (pages moved, the I/O as stats)."""
        for h in self.mechs:
            res = yield from h.drain(self)
            if res is not None:
                return res
        return 0, EpochStats(alive=self.alive)

    def shrink_tmem(
        self, device: DeviceQueue, dt: float
    ) -> Generator[Request, Reply, EpochStats | None]:
        """One epoch of cooperative reclaim the host asked for (`shrink_left`); None when
        there is nothing to do."""
        if not self.alive or self.shrink_left <= 0:
            return None
        for h in self.mechs:
            res = yield from h.shrink(self, device, dt)
            if res is not None:
                return res
        return None

    def stop_cooperating(self) -> None:
        """From now on the guest ignores balloon and tmem-shrink requests."""
        self.cooperative = False
        self.shrink_left = 0
        for h in self.mechs:
            h.stop_cooperating(self)

    # -- live migration --------------------------------------------------------------------
    def leave_source(self, flush_tmem: bool) -> Generator[Request, Reply, dict[str, Any]]:
        """A migrating guest's memory leaves its source host's stores (its migration is
        complete or has switched to post-copy): each mechanism, in reverse order, moves what
        the source's stores hold (host swap read back, disk cache written back, ephemeral
        pages dropped, pool pages read out or with `flush_tmem` written to the swap disk).
        Returns what moved, with the pool records (`records`) for `arrive`."""
        out: dict[str, Any] = {
            "violations": [],
            "records": None,
            "host_swap_reads": 0,
            "cache_writebacks": 0,
            "ephemeral_dropped": 0,
            "tmem_pages_flushed": 0,
        }
        for h in reversed(self.mechs):
            yield from h.leave(self, self.host, flush_tmem, out)
        return out

    def arrive(self, dest: str, records: Any) -> Generator[Request, Reply, dict[str, Any]]:
        """The guest now runs on `dest`: what `leave_source` carried goes into `dest`'s
        stores (pool pages `dest` refuses go to the swap disk)."""
        self.host = dest
        out: dict[str, Any] = {"tmem_pages_moved": 0}
        for h in self.mechs:
            yield from h.arrive(self, dest, records, out)
        return out

    def release_host_stores(self) -> Generator[Request, Reply, None]:
        """The guest dies on a host that lives on: drop everything it had in the host's
        stores (pool area, host swap, disk cache, ephemeral pages)."""
        req = Request(self.name, self.host, self.disk)
        for h in self.mechs:
            h.release(self, req, True)
        if not req.empty():
            yield req

    # -- faults ----------------------------------------------------------------------------
    def carry(self) -> dict[str, Any]:
        """The run-long accounting a later incarnation of this guest continues from."""
        out: dict[str, Any] = {k: getattr(self, k) for k in CARRY_FLOATS}
        lost: dict[str, int] = {}
        for h in self.mechs:
            lost.update(h.lost(self))
        out.update(
            incarnation=self.incarnation,
            disk=self.disk,
            files=self.has_files,
            counters=dict(self.counters),
            stall_by_source=dict(self.stall_by_source),
            hist=self.hist.copy(),
            peak_tmem_pages=self.peak_tmem_pages,
            peak_billed_pages=self.peak_billed_pages,
            lost_tmem=int(self.census[FRONTSWAP]),
            lost_hswap=self.frames.hswapped_count,
            lost_cache=lost.get("cache", 0),
        )
        return out

    def adopt(self, carry: dict[str, Any], downtime: float) -> None:
        """Continue the accounting of an earlier incarnation, down for `downtime` seconds."""
        for k in CARRY_FLOATS:
            setattr(self, k, carry[k])
        self.downtime_seconds += downtime
        self.counters = dict(carry["counters"])
        self.stall_by_source = dict(carry["stall_by_source"])
        self.hist = np.array(carry["hist"], np.int64)
        self.peak_tmem_pages = carry["peak_tmem_pages"]
        self.peak_billed_pages = carry["peak_billed_pages"]

    def backend_lost(self, t: float, reboot: float) -> Generator[Request, Reply, dict[str, int]]:
        """The host's Redis died (the host lives): what only it held is gone.

        A page whose only copy was in the host's stores (tmem, host swap, a dirty page of the
        host's disk cache: `lost`) cannot be read back: the guest crashes, as a kernel must on
        an unrecoverable swap-in, and reboots after `reboot` seconds as a new incarnation.
        Otherwise it loses only copies (`store_lost`: clean pool copies of resident pages,
        the ephemeral pool, the clean disk cache) and host-swap slots holding no page."""
        lost = {"tmem": 0, "hswap": 0, "cache": 0}
        for h in self.mechs:
            lost.update(h.lost(self))
        if self.frames.hswapped_count:
            fs = self.frames
            lost["hswap"] = int(np.count_nonzero(fs.rec_page[fs.state == F_HSWAP] != NO_PAGE))
        if any(lost.values()):
            yield from self.crash(t, reboot)
            return {**lost, "crashed": 1}
        if self.frames.hswapped_count:
            self.frames.release(np.flatnonzero(self.frames.state == F_HSWAP))
        for h in self.mechs:
            h.store_lost(self)
        self.unuse_left = 0
        self.shrink_left = 0
        return {**lost, "crashed": 0}

    def crash(self, t: float, reboot: float) -> Generator[Request, Reply, None]:
        """The guest dies and reboots in place after `reboot` seconds, a new incarnation: its
        disks are dropped, its memory is fresh, its accounting continues."""
        req = Request(self.name, self.host, self.disk, swap=SwapOps(_E, _E, None, drop=True))
        if self.has_files:
            req.files = SwapOps(_E, _E, None, drop=True)
        yield req
        self.incarnation += 1
        self.migration = None  # a crashed guest is not migrating any more
        self.unuse_left = 0
        self.shrink_left = 0
        self.debt = 0.0
        self._init_mechanisms()
        self._boot()
        self.alive = reboot <= 0
        self.down_until = t + reboot
