"""Guest swap disks in the shared-storage Redis, sync and async.

Key ``{prefix}:swap:{disk}``: hash, 4-byte big-endian page (swap slot) -> fixed-width record
(:mod:`overcommit.stores.codec`). ``disk`` names one incarnation of a guest's disk, e.g.
``"web-1#0"``, so a restarted guest starts from an empty disk while the old one can still be
inspected. One epoch's reads, frees (slot discards) and writes of a disk are one request
(one round trip): a batch without writes is plain commands sent together, `HMGET` of the
reads, `HDEL` of the frees, `HLEN` (a disk has one writer, its guest, so nothing needs them
atomic, and the server does a quarter of the work a script does for the same reads); a batch
with writes is one call of ``lua/swap_batch.lua``. Request plumbing is shared with
:mod:`overcommit.stores.tmem`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis
import redis.asyncio

from overcommit.stores.codec import PayloadMode, RecordBatch, decode, encode_pages
from overcommit.stores.tmem import (
    DEFAULT_PREFIX,
    Command,
    Eval,
    Op,
    Raw,
    ScriptRunner,
    found_mask,
    hash_records,
    pages_blob,
    records_args,
    run_async,
    run_sync,
)

_EMPTY = np.zeros(0, np.uint32)


def swap_key(prefix: str, disk: str) -> str:
    """Key of a swap disk."""
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
    field its 4 page bytes at `pageoff` (as the scripts use): packed with numpy at once."""
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


def fields_command(command: bytes, key: bytes, pages: np.ndarray) -> bytes:
    """`COMMAND key field ...` in RESP, a page's field its 4 bytes big-endian, packed with
    numpy at once."""
    n = len(pages)
    row = np.empty((n, 10), np.uint8)
    row[:, :4] = np.frombuffer(b"$4\r\n", np.uint8)
    row[:, 4:8] = np.frombuffer(encode_pages(pages), np.uint8).reshape(n, 4)
    row[:, 8:] = (13, 10)
    head = b"*%d\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        n + 2,
        len(command),
        command,
        len(key),
        key,
    )
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
        if writes is None:
            return (yield from self._plain_batch(disk, guest, reads, frees, mode, page_size))
        writes_blob, reclen, pageoff = records_args(guest, writes, mode, page_size)
        args = ("batch", pages_blob(reads), pages_blob(frees), writes_blob, reclen, pageoff)
        flags, recs, freed, after = yield Eval("swap_batch", (swap_key(self.prefix, disk),), args)
        return SwapBatchResult(
            found_mask(flags), decode(guest, recs, mode, page_size), int(freed), int(after)
        )

    def _plain_batch(
        self,
        disk: str,
        guest: str,
        reads: np.ndarray | Sequence[int] | None,
        frees: np.ndarray | Sequence[int] | None,
        mode: PayloadMode,
        page_size: int,
    ) -> Op[SwapBatchResult]:
        """Reads, then frees: `HMGET`, `HDEL` and `HLEN` in one write, one reply each."""
        key = swap_key(self.prefix, disk).encode()
        reads = _EMPTY if reads is None else np.asarray(reads)
        frees = _EMPTY if frees is None else np.asarray(frees)
        parts = []
        if len(reads):
            parts.append(fields_command(b"HMGET", key, reads))
        if len(frees):
            parts.append(fields_command(b"HDEL", key, frees))
        parts.append(b"*2\r\n$4\r\nHLEN\r\n$%d\r\n%s\r\n" % (len(key), key))
        replies = yield Raw("HMGET+HDEL+HLEN", b"".join(parts), len(parts))
        values = replies[0] if len(reads) else []
        freed = int(replies[1 if len(reads) else 0]) if len(frees) else 0
        found = np.fromiter((v is not None for v in values), bool, len(values))
        recs = b"".join(v for v in values if v is not None)
        return SwapBatchResult(found, decode(guest, recs, mode, page_size), freed, int(replies[-1]))

    def write(
        self, disk: str, guest: str, writes: RecordBatch, mode: PayloadMode, page_size: int
    ) -> Op[int]:
        """Writes only (overwriting), as one HSET of every (page, record) pair: the state a
        writes-only `batch` leaves, without the script. Returns the pages new to the disk."""
        blob, reclen, pageoff = records_args(guest, writes, mode, page_size)
        key = swap_key(self.prefix, disk).encode()
        return int((yield Raw("HSET", hset_command(key, blob, reclen, pageoff))))

    def read_all(self, disk: str, guest: str, mode: PayloadMode, page_size: int) -> Op[RecordBatch]:
        return (yield from hash_records(swap_key(self.prefix, disk), guest, mode, page_size))

    def count(self, disk: str) -> Op[int]:
        return int((yield Command(("HLEN", swap_key(self.prefix, disk)))))

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
