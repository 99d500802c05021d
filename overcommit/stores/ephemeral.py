"""A host's ephemeral tmem pools (cleancache) in the host's Redis, sync and async.

Key layout: ``{prefix}:eph:{guest}``: hash, 4-byte big-endian page -> fixed-width record
(:mod:`overcommit.stores.codec`) of a clean page-cache page; ``{prefix}:eph:{guest}:lru``:
sorted set of the same page fields scored by put order (the pool's LRU list: a get removes the
page, so the least recently put page is the least recently used); ``{prefix}:eph:meta``: hash
with ``used`` (host-wide ephemeral pages), ``n:{guest}`` and ``seq:{guest}`` (the guest's put
counter). A frozen client (``frozen:{guest}`` in the persistent pool's meta hash) has every put
refused here too, as a Xen client's freeze covers all its pools.

One guest's gets and puts of one epoch run as one call of ``lua/eph_batch.lua`` (atomic, one
round trip), which first drops the least recently put pages beyond the guest's quota for the
window (the host takes ephemeral memory back without the guest), then serves the gets
exclusively, then stores the puts, dropping the oldest page whenever the pool exceeds the
quota. Request plumbing is shared with :mod:`overcommit.stores.tmem`.
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
    hash_records,
    meta_key,
    pages_blob,
    records_args,
    run_async,
    run_sync,
)


def eph_key(prefix: str, guest: str) -> str:
    """Key of a guest's ephemeral pool."""
    if guest == "meta":
        raise ValueError("'meta' is reserved and cannot be a guest name")
    return f"{prefix}:eph:{guest}"


def eph_lru_key(prefix: str, guest: str) -> str:
    """Key of the LRU list (put order) of a guest's ephemeral pool."""
    return f"{eph_key(prefix, guest)}:lru"


def eph_meta_key(prefix: str) -> str:
    return f"{prefix}:eph:meta"


@dataclass
class EphBatchResult:
    """Outcome of one :meth:`EphemeralPool.batch` call."""

    found: np.ndarray  # bool, aligned with gets
    got: RecordBatch  # records of the found pages, in gets order (now removed from the pool)
    put_ok: np.ndarray  # bool, aligned with puts
    dropped: int  # pages the pool dropped to keep within the quota
    guest_pages: int  # the guest's pool size after the batch
    host_used: int  # host-wide ephemeral pages after the batch


class EphemeralStoreOps:
    """The ephemeral (cleancache) pool operations, each a generator of Redis requests."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.meta = eph_meta_key(prefix)
        self.tmem_meta = meta_key(prefix)

    def keys(self, guest: str) -> tuple[str, str, str, str]:
        return (
            eph_key(self.prefix, guest),
            eph_lru_key(self.prefix, guest),
            self.meta,
            self.tmem_meta,
        )

    def batch(
        self,
        guest: str,
        gets: np.ndarray | Sequence[int] | None,
        puts: RecordBatch | None,
        quota: int,
        mode: PayloadMode,
        page_size: int,
    ) -> Op[EphBatchResult]:
        blob, reclen, pageoff = records_args(guest, puts, mode, page_size)
        args = ("batch", guest, pages_blob(gets), blob, reclen, pageoff, int(quota))
        flags, recs, put_flags, dropped, count, used = yield Eval(
            "eph_batch", self.keys(guest), args
        )
        return EphBatchResult(
            found_mask(flags),
            decode(guest, recs, mode, page_size),
            found_mask(put_flags),
            int(dropped),
            int(count),
            int(used),
        )

    def flush_area(self, guest: str) -> Op[int]:
        return int((yield Eval("eph_batch", self.keys(guest), ("flush_area", guest))))

    def read_all(self, guest: str, mode: PayloadMode, page_size: int) -> Op[RecordBatch]:
        return (yield from hash_records(eph_key(self.prefix, guest), guest, mode, page_size))

    def guest_count(self, guest: str) -> Op[int]:
        v = yield Command(("HGET", self.meta, f"n:{guest}"))
        return 0 if v is None else int(v)

    def used(self) -> Op[int]:
        v = yield Command(("HGET", self.meta, "used"))
        return 0 if v is None else int(v)


class EphemeralPool:
    """A host's ephemeral pools over a synchronous ``redis.Redis`` client."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = EphemeralStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    def batch(
        self,
        guest: str,
        *,
        gets: np.ndarray | Sequence[int] | None = None,
        puts: RecordBatch | None = None,
        quota: int,
        mode: PayloadMode,
        page_size: int,
    ) -> EphBatchResult:
        """Drop beyond quota, exclusive gets, then puts of one guest: atomic, one round trip."""
        return run_sync(self._runner, self._ops.batch(guest, gets, puts, quota, mode, page_size))

    def flush_area(self, guest: str) -> int:
        """Drop the guest's whole pool; returns the pages removed."""
        return run_sync(self._runner, self._ops.flush_area(guest))

    def read_all(self, guest: str, mode: PayloadMode, page_size: int) -> RecordBatch:
        """Every record the pool holds for the guest, sorted by page."""
        return run_sync(self._runner, self._ops.read_all(guest, mode, page_size))

    def guest_count(self, guest: str) -> int:
        return run_sync(self._runner, self._ops.guest_count(guest))

    def used(self) -> int:
        return run_sync(self._runner, self._ops.used())


class AsyncEphemeralPool:
    """:class:`EphemeralPool` over a ``redis.asyncio.Redis`` client."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = EphemeralStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    async def batch(
        self,
        guest: str,
        *,
        gets: np.ndarray | Sequence[int] | None = None,
        puts: RecordBatch | None = None,
        quota: int,
        mode: PayloadMode,
        page_size: int,
    ) -> EphBatchResult:
        op = self._ops.batch(guest, gets, puts, quota, mode, page_size)
        return await run_async(self._runner, op)

    async def flush_area(self, guest: str) -> int:
        return await run_async(self._runner, self._ops.flush_area(guest))

    async def read_all(self, guest: str, mode: PayloadMode, page_size: int) -> RecordBatch:
        return await run_async(self._runner, self._ops.read_all(guest, mode, page_size))

    async def guest_count(self, guest: str) -> int:
        return await run_async(self._runner, self._ops.guest_count(guest))

    async def used(self) -> int:
        return await run_async(self._runner, self._ops.used())


#: the former private name, kept for importers not yet updated
_EphOps = EphemeralStoreOps
