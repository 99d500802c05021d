"""Per-epoch time series of guests and hosts, and the figures the summary reports.

`Recorder` fills preallocated numpy columns as epochs complete (one row per guest-epoch and per
host-epoch) and turns them into pandas DataFrames in a fixed order: epoch, then entity in
scenario order. The column lists below are the documented schema (docs/output.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from overcommit.nodes.guest import FRONTSWAP, RAM, SWAP, UNTOUCHED, EpochStats, GuestModel
from overcommit.nodes.host import HostModel

GUEST_COLUMNS: dict[str, str] = {
    "alive": "1 if the guest ran this epoch, 0 if it was down (OOM restart)",
    "work_s": "seconds of the epoch the guest spent working",
    "stall_s": "synchronous stall incurred this epoch (may carry into later epochs)",
    "touches": "page touches the workload issued",
    "faults": "faults served: first touches, frontswap gets and disk swap-ins",
    "disk_reads": "pages read from the swap disk (readahead included)",
    "disk_writes": "pages written to the swap disk",
    "tmem_puts": "frontswap puts that succeeded",
    "tmem_put_failures": "frontswap puts the pool refused",
    "tmem_gets": "frontswap gets",
    "untouched_pages": "footprint pages never touched (or reset by an OOM kill)",
    "resident_pages": "footprint pages in guest RAM",
    "frontswap_pages": "footprint pages whose only copy is in host tmem",
    "swap_pages": "footprint pages whose only copy is on the swap disk",
    "tmem_pages": "pages the host pool holds for the guest (clean copies of resident pages too)",
    "free_frames": "guest RAM frames not holding a footprint page",
}

HOST_COLUMNS: dict[str, str] = {
    "ram_pages": "host physical RAM",
    "reserve_pages": "hypervisor reserve",
    "guest_frames": "guest frames backed by host RAM",
    "tmem_pages": "persistent tmem pages stored",
    "cache_pages": "disk cache pages",
    "buffer_pages": "migration buffer pages",
    "free_pages": "free host RAM",
    "tmem_capacity": "the pool's cap for the current sync window",
}


class Recorder:
    """Collects the time series for a run of `epochs` epochs of `dt` seconds."""

    def __init__(self, guests: list[GuestModel], hosts: list[HostModel], epochs: int, dt: float):
        self.dt = dt
        self.epochs = epochs
        self.guest_names = [g.name for g in guests]
        self.guest_host = [g.host for g in guests]
        self.host_names = [h.name for h in hosts]
        self.gidx = {n: i for i, n in enumerate(self.guest_names)}
        self.hidx = {n: i for i, n in enumerate(self.host_names)}
        gshape = (epochs, len(guests))
        self.g = {
            c: np.zeros(gshape, np.float64 if c.endswith("_s") else np.int64) for c in GUEST_COLUMNS
        }
        self.h = {c: np.zeros((epochs, len(hosts)), np.int64) for c in HOST_COLUMNS}

    def record(self, e: int, host: HostModel, stats: list[tuple[GuestModel, EpochStats]]) -> None:
        for g, s in stats:
            i = self.gidx[g.name]
            row = self.g
            row["alive"][e, i] = int(s.alive)
            row["work_s"][e, i] = s.work
            row["stall_s"][e, i] = s.stall
            row["touches"][e, i] = s.touches
            row["faults"][e, i] = s.faults
            row["disk_reads"][e, i] = s.disk_reads
            row["disk_writes"][e, i] = s.disk_writes
            row["tmem_puts"][e, i] = s.puts
            row["tmem_put_failures"][e, i] = s.put_failures
            row["tmem_gets"][e, i] = s.gets
            bc = g.census
            row["untouched_pages"][e, i] = bc[UNTOUCHED]
            row["resident_pages"][e, i] = bc[RAM]
            row["frontswap_pages"][e, i] = bc[FRONTSWAP]
            row["swap_pages"][e, i] = bc[SWAP]
            row["tmem_pages"][e, i] = g.tmem_pages
            row["free_frames"][e, i] = g.free_top
        j = self.hidx[host.name]
        h = self.h
        h["ram_pages"][e, j] = host.ram_pages
        h["reserve_pages"][e, j] = host.reserve_pages
        h["guest_frames"][e, j] = host.backed_pages()
        h["tmem_pages"][e, j] = host.tmem_pages()
        h["cache_pages"][e, j] = host.cache_pages
        h["buffer_pages"][e, j] = host.buffer_pages
        h["free_pages"][e, j] = host.free_pages()
        h["tmem_capacity"][e, j] = host.tmem_capacity

    def _frame(
        self,
        cols: dict[str, np.ndarray],
        names: list[str],
        key: str,
        extra: dict[str, list[str]] | None = None,
    ) -> pd.DataFrame:
        e, n = next(iter(cols.values())).shape
        data: dict[str, object] = {
            "epoch": np.repeat(np.arange(e), n),
            "t": np.round(np.repeat(np.arange(e), n) * self.dt, 9),
            key: np.tile(np.array(names, dtype=object), e),
        }
        for k, v in (extra or {}).items():
            data[k] = np.tile(np.array(v, dtype=object), e)
        for c, arr in cols.items():
            data[c] = arr.reshape(-1)
        return pd.DataFrame(data)

    def guests_frame(self) -> pd.DataFrame:
        return self._frame(self.g, self.guest_names, "guest", {"host": self.guest_host})

    def hosts_frame(self) -> pd.DataFrame:
        return self._frame(self.h, self.host_names, "host")
