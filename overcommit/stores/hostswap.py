"""A host's swap area (host-swap mechanism) in the host's Redis, sync and async.

Key layout: ``{prefix}:hswap:{guest}``: hash, 4-byte big-endian guest *frame* -> fixed-width
record (:mod:`overcommit.stores.codec`) of the content the frame held when the host paged it
out (the guest page and its version; page ``0xFFFFFFFF`` for a frame that held no page);
``{prefix}:hswap:meta``: hash with ``used`` (host-wide frames) and ``n:{guest}``. One guest's
swap-ins, discards and swap-outs of one epoch are one call of ``lua/hswap_batch.lua`` (atomic,
one round trip). Request plumbing is shared with :mod:`overcommit.stores.tmem`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis
import redis.asyncio

from overcommit.stores.codec import PayloadMode, RecordBatch, decode
from overcommit.stores.tmem import (
    DEFAULT_PREFIX,
    Command,
    Eval,
    Op,
    ScriptRunner,
    found_mask,
    hscan_all,
    pages_blob,
    records_args,
    run_async,
    run_sync,
)


def hswap_key(prefix: str, guest: str) -> str:
    """Key of a guest's host swap area."""
    if guest == "meta":
        raise ValueError("'meta' is reserved and cannot be a guest name")
    return f"{prefix}:hswap:{guest}"


def hswap_meta_key(prefix: str) -> str:
    return f"{prefix}:hswap:meta"


@dataclass
class HostSwapResult:
    """Outcome of one :meth:`HostSwapStore.batch` call."""

    found: np.ndarray  # bool, aligned with reads
    got: RecordBatch  # records of the found frames, in reads order
    write_ok: np.ndarray  # bool, aligned with writes
    freed: int
    guest_frames: int  # the guest's frames in host swap after the batch
    host_used: int


class HostSwapStoreOps:
    """The host-swap operations, each a generator of Redis requests."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.meta = hswap_meta_key(prefix)

    def batch(
        self,
        guest: str,
        reads: np.ndarray | Sequence[int] | None,
        frees: np.ndarray | Sequence[int] | None,
        write_frames: np.ndarray | Sequence[int] | None,
        writes: RecordBatch | None,
        quota: int,
        capacity: int,
        mode: PayloadMode,
        page_size: int,
    ) -> Op[HostSwapResult]:
        blob, reclen, _ = records_args(guest, writes, mode, page_size)
        nw = 0 if writes is None else len(writes)
        if write_frames is None:
            write_frames = np.zeros(0, np.uint32)
        if len(write_frames) != nw:
            raise ValueError("write frames and records must align")
        args = (
            "batch",
            guest,
            pages_blob(reads),
            pages_blob(frees),
            pages_blob(write_frames),
            blob,
            reclen,
            int(quota),
            int(capacity),
        )
        reply = yield Eval("hswap_batch", (hswap_key(self.prefix, guest), self.meta), args)
        flags, recs, ok, freed, count, used = reply
        return HostSwapResult(
            found_mask(flags),
            decode(guest, recs, mode, page_size),
            found_mask(ok),
            int(freed),
            int(count),
            int(used),
        )

    def drop(self, guest: str) -> Op[int]:
        keys = (hswap_key(self.prefix, guest), self.meta)
        return int((yield Eval("hswap_batch", keys, ("drop", guest))))

    def read_all(
        self, guest: str, mode: PayloadMode, page_size: int
    ) -> Op[tuple[np.ndarray, RecordBatch]]:
        """(frames, records) of everything the area holds for the guest, sorted by frame."""
        values = yield from hscan_all(hswap_key(self.prefix, guest))
        frames = np.array([int.from_bytes(k, "big") for k in values], np.int64)
        batch = decode(guest, b"".join(values.values()), mode, page_size)
        order = np.argsort(frames, kind="stable")
        return frames[order], batch.take(order)

    def guest_count(self, guest: str) -> Op[int]:
        v = yield Command(("HGET", self.meta, f"n:{guest}"))
        return 0 if v is None else int(v)

    def used(self) -> Op[int]:
        v = yield Command(("HGET", self.meta, "used"))
        return 0 if v is None else int(v)


class HostSwapStore:
    """A host's swap area over a synchronous ``redis.Redis`` client."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = HostSwapStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    def batch(
        self,
        guest: str,
        *,
        reads: np.ndarray | Sequence[int] | None = None,
        frees: np.ndarray | Sequence[int] | None = None,
        write_frames: np.ndarray | Sequence[int] | None = None,
        writes: RecordBatch | None = None,
        quota: int,
        capacity: int,
        mode: PayloadMode,
        page_size: int,
    ) -> HostSwapResult:
        """Swap-ins, then discards, then swap-outs of one guest: atomic, one round trip."""
        op = self._ops.batch(
            guest, reads, frees, write_frames, writes, quota, capacity, mode, page_size
        )
        return run_sync(self._runner, op)

    def drop(self, guest: str) -> int:
        return run_sync(self._runner, self._ops.drop(guest))

    def read_all(
        self, guest: str, mode: PayloadMode, page_size: int
    ) -> tuple[np.ndarray, RecordBatch]:
        return run_sync(self._runner, self._ops.read_all(guest, mode, page_size))

    def guest_count(self, guest: str) -> int:
        return run_sync(self._runner, self._ops.guest_count(guest))

    def used(self) -> int:
        return run_sync(self._runner, self._ops.used())


class AsyncHostSwapStore:
    """:class:`HostSwapStore` over a ``redis.asyncio.Redis`` client."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = HostSwapStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    async def batch(
        self,
        guest: str,
        *,
        reads: np.ndarray | Sequence[int] | None = None,
        frees: np.ndarray | Sequence[int] | None = None,
        write_frames: np.ndarray | Sequence[int] | None = None,
        writes: RecordBatch | None = None,
        quota: int,
        capacity: int,
        mode: PayloadMode,
        page_size: int,
    ) -> HostSwapResult:
        op = self._ops.batch(
            guest, reads, frees, write_frames, writes, quota, capacity, mode, page_size
        )
        return await run_async(self._runner, op)

    async def drop(self, guest: str) -> int:
        return await run_async(self._runner, self._ops.drop(guest))

    async def read_all(
        self, guest: str, mode: PayloadMode, page_size: int
    ) -> tuple[np.ndarray, RecordBatch]:
        return await run_async(self._runner, self._ops.read_all(guest, mode, page_size))

    async def guest_count(self, guest: str) -> int:
        return await run_async(self._runner, self._ops.guest_count(guest))

    async def used(self) -> int:
        return await run_async(self._runner, self._ops.used())


#: the former private name, kept for importers not yet updated
_HostSwapOps = HostSwapStoreOps
