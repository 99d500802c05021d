"""Device profiles and CPU/RAM cost constants, in emulated seconds.

Every cost the emulator charges comes from here: swap devices (latency, IOPS, bandwidth, with
queueing), hypercalls, tmem operations, page faults. Defaults are typical published figures for
each device class; every value can be overridden in a scenario (`devices:` and `costs:`).
Costs that depend on size (copies, transfers) are charged by bytes; per-operation costs once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DeviceProfile:
    """A block device as seen by one queue: unloaded latency per op, op rate and byte rate."""

    name: str
    read_latency: float  # seconds per operation, unloaded
    write_latency: float
    iops: float  # operations per second the device sustains
    bandwidth: float  # bytes per second

    def occupancy(self, ops: float, nbytes: float) -> float:
        """Device-busy seconds for `ops` operations moving `nbytes` (the bound that binds)."""
        return max(ops / self.iops, nbytes / self.bandwidth)

    def op_time(self, write: bool, nbytes: Any) -> Any:
        """Unloaded latency of one operation that moves `nbytes` (a float, or an array of
        sizes: each element's latency, the same arithmetic)."""
        return (self.write_latency if write else self.read_latency) + nbytes / self.bandwidth


BUILTIN_DEVICES: dict[str, DeviceProfile] = {
    # NVMe SSD: ~20 us 4 KiB random access, ~500k IOPS, ~3 GB/s.
    "nvme": DeviceProfile("nvme", 20e-6, 20e-6, 500_000.0, 3.0e9),
    # SATA SSD: ~100 us read / ~60 us write, ~90k IOPS, ~500 MB/s.
    "ssd": DeviceProfile("ssd", 100e-6, 60e-6, 90_000.0, 500e6),
    # 7200 rpm disk: ~8 ms seek + rotation, ~150 IOPS, ~150 MB/s sequential.
    "hdd": DeviceProfile("hdd", 8e-3, 8e-3, 150.0, 150e6),
    # Networked SAN LUN (iSCSI/FC): ~1 ms round trip, ~20k IOPS, ~400 MB/s.
    "san": DeviceProfile("san", 1e-3, 1e-3, 20_000.0, 400e6),
}


@dataclass(frozen=True)
class Costs:
    """CPU-side costs. tmem ops cost a hypercall + the fixed part here + a page copy."""

    hypercall: float = 1.0e-6
    tmem_put: float = 0.5e-6
    tmem_get: float = 0.5e-6
    tmem_flush: float = 0.2e-6
    minor_fault: float = 0.5e-6  # zero-fill first touch inside the guest
    major_fault: float = 5.0e-6  # guest fault path + I/O submission, on top of the device
    host_page_alloc: float = 2.0e-6  # lazy boot: the host backs a frame on first touch
    ram_bandwidth: float = 10.0e9  # bytes/s for page copies
    # one guest->host I/O notification and its completion (a virtio kick + interrupt): the
    # per-batch exit a cached virtual disk pays, against frontswap's hypercall per page
    io_exit: float = 5.0e-6
    # in-guest compression (zswap/zram; lzo-rle/lz4 class): bytes of page per second
    compress_bandwidth: float = 800e6
    decompress_bandwidth: float = 2.5e9
    # a compressing tmem pool (hosts.tmem.compress): puts and gets cost this many times their
    # plain cost (Xen: ~10x CPU for ~2x pages stored)
    tmem_compress_factor: float = 10.0

    def copy(self, nbytes: float) -> float:
        return nbytes / self.ram_bandwidth

    def put(self, page_size: int) -> float:
        """A frontswap put that succeeds (copy into the pool)."""
        return self.hypercall + self.tmem_put + self.copy(page_size)

    def failed_put(self) -> float:
        """A put refused by the pool: the hypercall is spent, nothing is copied."""
        return self.hypercall + self.tmem_put

    def get(self, page_size: int) -> float:
        return self.hypercall + self.tmem_get + self.copy(page_size)

    def flush(self) -> float:
        return self.hypercall + self.tmem_flush

    def compress(self, nbytes: float) -> float:
        return nbytes / self.compress_bandwidth

    def decompress(self, nbytes: float) -> float:
        return nbytes / self.decompress_bandwidth


@dataclass(frozen=True)
class BalloonProfile:
    """How fast a balloon driver moves pages (REFERENCE.md, "Ballooning").

    A continuous driver moves `rate` bytes per second. A periodic one (`interval` > 0, like
    vmw_balloon) moves a batch of pages at each worker tick: `idle_pages` when the guest has
    free memory, `pressure_pages` under pressure, halved on a failed allocation down to
    `min_pages` and doubled back on success. Page counts are in 4 KiB pages, as the driver
    counts them.
    """

    name: str
    rate: float = 0.0  # bytes/s (continuous drivers)
    interval: float = 0.0  # seconds between worker ticks (periodic drivers)
    idle_pages: int = 0
    pressure_pages: int = 0
    min_pages: int = 0


BALLOON_DRIVERS: dict[str, BalloonProfile] = {
    # virtio-balloon before scatter-gather: 7 GB of an idle 8 GB guest in ~4.1 s (~1.7 GB/s)
    "virtio": BalloonProfile("virtio", rate=7e9 / 4.1),
    # virtio-balloon with scatter-gather (256 PFNs per request): the same 7 GB in ~0.49 s
    "virtio-sg": BalloonProfile("virtio-sg", rate=7e9 / 0.49),
    # vmw_balloon: a worker every 1 s; 16384 pages per cycle without guest pressure,
    # 512-2048 under pressure, halved on a failed allocation
    "vmw": BalloonProfile(
        "vmw", interval=1.0, idle_pages=16384, pressure_pages=2048, min_pages=512
    ),
}


def device_profiles(overrides: dict[str, Any] | None) -> dict[str, DeviceProfile]:
    """Built-in profiles with a scenario's `devices:` overrides applied (new names allowed)."""
    out = dict(BUILTIN_DEVICES)
    for name, ov in (overrides or {}).items():
        fields = {k: v for k, v in _as_dict(ov).items() if v is not None}
        if name in out:
            out[name] = replace(out[name], **fields)
        else:
            out[name] = DeviceProfile(name=name, **fields)
    return out


def costs_from(overrides: Any | None) -> Costs:
    """Default costs with a scenario's `costs:` overrides applied."""
    fields = {k: v for k, v in _as_dict(overrides).items() if v is not None}
    return replace(Costs(), **fields)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    return obj.model_dump()


class DeviceQueue:
    """One shared device's queue, advanced in sync windows.

    Users add their demand (ops and bytes) as they run; latency seen by synchronous operations
    in a window depends only on the state at the window's start (utilisation and backlog of the
    previous window), so hosts can run a window independently and still agree exactly.
    """

    def __init__(self, profile: DeviceProfile, users: int = 1) -> None:
        self.profile = profile
        self.users = users  # guests sharing the device; each gets an equal share of idle time
        self.util = 0.0  # utilisation of the previous window, 0..1
        self.backlog = 0.0  # busy seconds carried into this window
        self.busy_total = 0.0

    def wait(self, nbytes: float) -> float:
        """Queueing delay added to a synchronous op of `nbytes` in the current window."""
        return self._queueing(self.profile.occupancy(1.0, nbytes))

    def waits(self, nbytes: np.ndarray) -> np.ndarray:
        """`wait` of each size in `nbytes` (the same arithmetic, element by element)."""
        p = self.profile
        return self._queueing(np.maximum(1.0 / p.iops, nbytes / p.bandwidth))

    def _queueing(self, occ: Any) -> Any:
        """The window's backlog and queueing for ops that occupy the device `occ` seconds."""
        half_backlog, rho = self.queue_terms()
        return half_backlog + occ * rho / (1.0 - rho)

    def queue_terms(self) -> tuple[float, float]:
        """(half the backlog, utilisation capped at 0.98): the window's terms of `wait`
        (`half + occupancy * rho / (1 - rho)`), for a compiled loop that applies them."""
        return 0.5 * self.backlog, min(self.util, 0.98)

    def snapshot(self) -> DeviceQueue:
        """A copy of the queue's state at a window's start (sent to the guests that use it)."""
        q = DeviceQueue(self.profile, self.users)
        q.util, q.backlog, q.busy_total = self.util, self.backlog, self.busy_total
        return q

    def close_window(self, ops: int, nbytes: int, window: float) -> None:
        """Advance to the next window given the operations and bytes all users issued in this
        one (integers, so the sum does not depend on the order users reported in)."""
        demand = self.profile.occupancy(ops, nbytes)
        total = self.backlog + demand
        self.busy_total += demand
        self.util = min(1.0, total / window) if window > 0 else 0.0
        self.backlog = max(0.0, total - window)
