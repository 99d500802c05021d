"""Guest swap disks in the shared-storage Redis, sync and async.

Key layout (``disk`` names one incarnation of a guest's disk, e.g. ``"web-1#0"``, so a
restarted guest starts from an empty disk while the old one can still be inspected):

- ``{prefix}:swap:{disk}:{bucket}``: hash, 4-byte big-endian page (swap slot) -> fixed-width
  record (:mod:`overcommit.stores.codec`), for the pages ``p`` of the bucket ``p >> 7``
  (decimal): 128 pages a hash, so Redis keeps each in its compact encoding (ziplist/listpack)
  at about a third of a hashtable's bytes per record;
- ``{prefix}:swap:{disk}``: the disk's index, hash ``n`` -> pages on the disk and ``{bucket}`` ->
  ``"1"`` for every bucket in use (a bucket emptied since may stay listed; the index goes with
  the disk's last page): read-backs and drops read it instead of scanning keys, and a batch's
  pages after come from ``n``.

One epoch's reads, frees (slot discards) and writes of a disk are one request (one round
trip): a call of ``lua/swap_batch.lua``, which splits the pages by bucket and keeps ``n``; a
posted write is the same call with writes only. (Plain commands sent together cost the client
a command and a reply per bucket a batch touches, most of them one page: more than the server
saves.) Request plumbing and the bucket keys are shared with :mod:`overcommit.stores.tmem`.
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
    bucket_records,
    found_mask,
    pages_blob,
    records_args,
    run_async,
    run_sync,
)


def swap_key(prefix: str, disk: str) -> str:
    """Key of a swap disk's index; its pages are in the buckets ``bucket_key(swap_key(..),
    page)`` (:func:`overcommit.stores.tmem.bucket_key`)."""
    return f"{prefix}:swap:{disk}"


@dataclass
class SwapBatchResult:
    """Outcome of one :meth:`SwapStore.batch` call."""

    found: np.ndarray  # bool, aligned with reads
    got: RecordBatch  # records of the found pages, in reads order
    freed: int  # freed slots that held a page
    pages_after: int  # pages on the disk after the batch


def hset_command(key: bytes, blob: bytes, reclen: int, pageoff: int) -> bytes:
    """`HSET key page record ...` in RESP for a blob of fixed-width records, each record's
    field its 4 page bytes at `pageoff` (as the scripts use): packed with numpy at once (the
    post-copy source store's one-hash layout)."""
    n = len(blob) // reclen
    recs = np.frombuffer(blob, np.uint8).reshape(n, reclen)
    mid = b"\r\n$%d\r\n" % reclen
    row = np.empty((n, 8 + len(mid) + reclen + 2), np.uint8)
    row[:, :4] = np.frombuffer(b"$4\r\n", np.uint8)
    row[:, 4:8] = recs[:, pageoff : pageoff + 4]
    row[:, 8 : 8 + len(mid)] = np.frombuffer(mid, np.uint8)
    row[:, 8 + len(mid) : -2] = recs
    row[:, -2:] = (13, 10)
    head = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 * n + 2, len(key), key)
    return head + row.tobytes()


class SwapStoreOps:
    """The swap-disk operations, each a generator of Redis requests."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def batch(
        self,
        disk: str,
        guest: str,
        reads: np.ndarray | Sequence[int] | None,
        frees: np.ndarray | Sequence[int] | None,
        writes: RecordBatch | None,
        mode: PayloadMode,
        page_size: int,
    ) -> Op[SwapBatchResult]:
        flags, recs, freed, after, _ = yield from self._call(
            disk, pages_blob(reads), pages_blob(frees), guest, writes, mode, page_size
        )
        return SwapBatchResult(
            found_mask(flags), decode(guest, recs, mode, page_size), int(freed), int(after)
        )

    def write(
        self, disk: str, guest: str, writes: RecordBatch, mode: PayloadMode, page_size: int
    ) -> Op[int]:
        """Writes only (overwriting): a `batch` with writes alone, sent posted by the runtimes
        (nothing waits for it). Returns the pages new to the disk."""
        reply = yield from self._call(disk, b"", b"", guest, writes, mode, page_size)
        return int(reply[4])

    def _call(
        self,
        disk: str,
        reads: bytes,
        frees: bytes,
        guest: str,
        writes: RecordBatch | None,
        mode: PayloadMode,
        page_size: int,
    ) -> Op[list]:
        """One call of ``swap_batch.lua``: its reply (flags, records, freed, after, new)."""
        writes_blob, reclen, pageoff = records_args(guest, writes, mode, page_size)
        args = ("batch", reads, frees, writes_blob, reclen, pageoff)
        return (yield Eval("swap_batch", (swap_key(self.prefix, disk),), args))

    def read_all(self, disk: str, guest: str, mode: PayloadMode, page_size: int) -> Op[RecordBatch]:
        return (yield from bucket_records(swap_key(self.prefix, disk), guest, mode, page_size))

    def count(self, disk: str) -> Op[int]:
        return int((yield Command(("HGET", swap_key(self.prefix, disk), "n"))) or 0)

    def drop(self, disk: str) -> Op[int]:
        return int((yield Eval("swap_batch", (swap_key(self.prefix, disk),), ("drop",))))


class SwapStore:
    """Swap disks over a synchronous ``redis.Redis`` client of the shared store."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = SwapStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    def batch(
        self,
        disk: str,
        guest: str,
        *,
        reads: np.ndarray | Sequence[int] | None = None,
        frees: np.ndarray | Sequence[int] | None = None,
        writes: RecordBatch | None = None,
        mode: PayloadMode,
        page_size: int,
    ) -> SwapBatchResult:
        """Reads, then frees, then writes (overwriting) of one disk: atomic, one round trip."""
        op = self._ops.batch(disk, guest, reads, frees, writes, mode, page_size)
        return run_sync(self._runner, op)

    def read_all(self, disk: str, guest: str, mode: PayloadMode, page_size: int) -> RecordBatch:
        """Every record on the disk, sorted by page."""
        return run_sync(self._runner, self._ops.read_all(disk, guest, mode, page_size))

    def count(self, disk: str) -> int:
        return run_sync(self._runner, self._ops.count(disk))

    def drop(self, disk: str) -> int:
        """Delete the disk; returns the pages it held."""
        return run_sync(self._runner, self._ops.drop(disk))


class AsyncSwapStore:
    """:class:`SwapStore` over a ``redis.asyncio.Redis`` client."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = SwapStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix

    async def batch(
        self,
        disk: str,
        guest: str,
        *,
        reads: np.ndarray | Sequence[int] | None = None,
        frees: np.ndarray | Sequence[int] | None = None,
        writes: RecordBatch | None = None,
        mode: PayloadMode,
        page_size: int,
    ) -> SwapBatchResult:
        op = self._ops.batch(disk, guest, reads, frees, writes, mode, page_size)
        return await run_async(self._runner, op)

    async def read_all(
        self, disk: str, guest: str, mode: PayloadMode, page_size: int
    ) -> RecordBatch:
        return await run_async(self._runner, self._ops.read_all(disk, guest, mode, page_size))

    async def count(self, disk: str) -> int:
        return await run_async(self._runner, self._ops.count(disk))

    async def drop(self, disk: str) -> int:
        return await run_async(self._runner, self._ops.drop(disk))


#: the former private name, kept for importers not yet updated
_SwapOps = SwapStoreOps
