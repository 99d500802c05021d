"""A host's write-back cache of guest virtual swap disks (cached-disk) in the host's Redis, and
the host RAM disks guests swap to (ramdisk), which keep their pages in the same layout.

Key layout: ``{prefix}:dcache:{disk}``: hash, 4-byte big-endian page -> fixed-width record;
``{prefix}:dcache:{disk}:dirty``: hash of the pages not yet written to the disk (value
``"1"``); ``{prefix}:dcache:meta``: hash with host-wide ``pages`` and ``dirty`` and per disk
``n:{disk}`` and ``d:{disk}``. A RAM disk's keys say ``ramdisk`` where a cache's say
``dcache`` (`kind`): its pages are all "dirty", since the RAM disk is their only copy and is
never written back. One disk's reads, discards, write-backs, drops and inserts of one
epoch are one call of ``lua/dcache_batch.lua`` (atomic, one round trip); the script refuses to
drop a dirty page, so nothing the guest wrote is lost before it reaches the disk. Writing the
write-back records to the disk (shared storage) is the caller's second step. Request plumbing
is shared with :mod:`overcommit.stores.tmem`.
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
    pages_blob,
    records_args,
    run_async,
    run_sync,
)


def dcache_key(prefix: str, disk: str, kind: str = "dcache") -> str:
    return f"{prefix}:{kind}:{disk}"


def dcache_dirty_key(prefix: str, disk: str, kind: str = "dcache") -> str:
    return f"{prefix}:{kind}:{disk}:dirty"


def dcache_meta_key(prefix: str, kind: str = "dcache") -> str:
    return f"{prefix}:{kind}:meta"


@dataclass
class CacheBatchResult:
    """Outcome of one :meth:`DiskCacheStore.batch` call."""

    found: np.ndarray  # bool, aligned with reads
    got: RecordBatch  # records of the cached reads, in reads order
    written_back: RecordBatch  # records to write to the disk (now clean in the cache)
    freed: int
    dropped: int
    refused: int  # drops refused because the page was dirty
    pages: int  # the disk's cached pages after the batch
    dirty: int


class CacheStoreOps:
    """The disk-cache operations, each a generator of Redis requests (`kind`: `dcache` for
    host caches, `ramdisk` for host RAM disks)."""

    def __init__(self, prefix: str, kind: str = "dcache") -> None:
        self.prefix = prefix
        self.kind = kind
        self.meta = dcache_meta_key(prefix, kind)

    def keys(self, disk: str) -> tuple[str, str, str]:
        k = self.kind
        return dcache_key(self.prefix, disk, k), dcache_dirty_key(self.prefix, disk, k), self.meta

    def batch(
        self,
        disk: str,
        guest: str,
        reads: np.ndarray | Sequence[int] | None,
        frees: np.ndarray | Sequence[int] | None,
        writeback: np.ndarray | Sequence[int] | None,
        drops: np.ndarray | Sequence[int] | None,
        inserts: RecordBatch | None,
        mode: PayloadMode,
        page_size: int,
    ) -> Op[CacheBatchResult]:
        blob, reclen, pageoff = records_args(guest, inserts, mode, page_size)
        args = (
            "batch",
            disk,
            pages_blob(reads),
            pages_blob(frees),
            pages_blob(writeback),
            pages_blob(drops),
            blob,
            reclen,
            pageoff,
        )
        reply = yield Eval("dcache_batch", self.keys(disk), args)
        flags, recs, wrecs, freed, dropped, refused, pages, dirty = reply
        return CacheBatchResult(
            found_mask(flags),
            decode(guest, recs, mode, page_size),
            decode(guest, wrecs, mode, page_size),
            int(freed),
            int(dropped),
            int(refused),
            int(pages),
            int(dirty),
        )

    def drop(self, disk: str) -> Op[int]:
        return int((yield Eval("dcache_batch", self.keys(disk), ("drop", disk))))

    def read_all(
        self, disk: str, guest: str, mode: PayloadMode, page_size: int
    ) -> Op[tuple[RecordBatch, np.ndarray]]:
        """(every cached record sorted by page, the dirty pages sorted)."""
        cache, dirty, _ = self.keys(disk)
        recs = yield from hash_records(cache, guest, mode, page_size)
        fields = yield Command(("HKEYS", dirty))
        dirty = np.sort(np.array([int.from_bytes(f, "big") for f in fields], np.int64))
        return recs, dirty

    def host_pages(self) -> Op[tuple[int, int]]:
        pages, dirty = yield Command(("HMGET", self.meta, "pages", "dirty"))
        return int(pages or 0), int(dirty or 0)


class DiskCacheStore:
    """A host's disk caches over a synchronous ``redis.Redis`` client."""

    def __init__(
        self, client: redis.Redis, prefix: str = DEFAULT_PREFIX, kind: str = "dcache"
    ) -> None:
        self._ops = CacheStoreOps(prefix, kind)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    def batch(
        self,
        disk: str,
        guest: str,
        *,
        reads: np.ndarray | Sequence[int] | None = None,
        frees: np.ndarray | Sequence[int] | None = None,
        writeback: np.ndarray | Sequence[int] | None = None,
        drops: np.ndarray | Sequence[int] | None = None,
        inserts: RecordBatch | None = None,
        mode: PayloadMode,
        page_size: int,
    ) -> CacheBatchResult:
        """Reads, discards, write-backs, drops (clean only), inserts: atomic, one round trip."""
        op = self._ops.batch(disk, guest, reads, frees, writeback, drops, inserts, mode, page_size)
        return run_sync(self._runner, op)

    def drop(self, disk: str) -> int:
        return run_sync(self._runner, self._ops.drop(disk))

    def read_all(
        self, disk: str, guest: str, mode: PayloadMode, page_size: int
    ) -> tuple[RecordBatch, np.ndarray]:
        return run_sync(self._runner, self._ops.read_all(disk, guest, mode, page_size))

    def host_pages(self) -> tuple[int, int]:
        return run_sync(self._runner, self._ops.host_pages())


class AsyncDiskCacheStore:
    """:class:`DiskCacheStore` over a ``redis.asyncio.Redis`` client."""

    def __init__(
        self, client: redis.asyncio.Redis, prefix: str = DEFAULT_PREFIX, kind: str = "dcache"
    ) -> None:
        self._ops = CacheStoreOps(prefix, kind)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    async def batch(
        self,
        disk: str,
        guest: str,
        *,
        reads: np.ndarray | Sequence[int] | None = None,
        frees: np.ndarray | Sequence[int] | None = None,
        writeback: np.ndarray | Sequence[int] | None = None,
        drops: np.ndarray | Sequence[int] | None = None,
        inserts: RecordBatch | None = None,
        mode: PayloadMode,
        page_size: int,
    ) -> CacheBatchResult:
        op = self._ops.batch(disk, guest, reads, frees, writeback, drops, inserts, mode, page_size)
        return await run_async(self._runner, op)

    async def drop(self, disk: str) -> int:
        return await run_async(self._runner, self._ops.drop(disk))

    async def read_all(
        self, disk: str, guest: str, mode: PayloadMode, page_size: int
    ) -> tuple[RecordBatch, np.ndarray]:
        return await run_async(self._runner, self._ops.read_all(disk, guest, mode, page_size))

    async def host_pages(self) -> tuple[int, int]:
        return await run_async(self._runner, self._ops.host_pages())


#: the former private name, kept for importers not yet updated
_CacheOps = CacheStoreOps
