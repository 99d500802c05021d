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
trip). A batch with reads or writes is one call of ``lua/swap_batch.lua``, which splits the
pages by bucket. Frees alone are ``lua/swap_plain.lua``, which deletes them bucket by bucket
and keeps ``n``; an empty batch is an `HGET` of ``n``. A posted write is ``lua/swap_plain.lua``
alone (an `HSET` of each bucket, counting the new pages). Both scripts are called by their
SHA1. Request plumbing and the bucket keys are shared with :mod:`overcommit.stores.tmem`.
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
    Raw,
    ScriptRunner,
    bucket_records,
    field_rows,
    found_mask,
    group_pages,
    pages_blob,
    records_args,
    run_async,
    run_sync,
    script_sha,
)

_EMPTY = np.zeros(0, np.uint32)


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


def record_rows(blob: bytes, reclen: int, pageoff: int) -> np.ndarray:
    """Each fixed-width record of `blob` as two RESP arguments, its field (the 4 page bytes
    at `pageoff`, as the scripts use) and itself: a row per record, packed with numpy."""
    n = len(blob) // reclen
    recs = np.frombuffer(blob, np.uint8).reshape(n, reclen)
    mid = b"\r\n$%d\r\n" % reclen
    row = np.empty((n, 8 + len(mid) + reclen + 2), np.uint8)
    row[:, :4] = np.frombuffer(b"$4\r\n", np.uint8)
    row[:, 4:8] = recs[:, pageoff : pageoff + 4]
    row[:, 8 : 8 + len(mid)] = np.frombuffer(mid, np.uint8)
    row[:, 8 + len(mid) : -2] = recs
    row[:, -2:] = (13, 10)
    return row


def hset_command(key: bytes, blob: bytes, reclen: int, pageoff: int) -> bytes:
    """`HSET key page record ...` in RESP for a blob of fixed-width records, each record's
    field its 4 page bytes at `pageoff` (as the scripts use): packed with numpy at once."""
    n = len(blob) // reclen
    head = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 * n + 2, len(key), key)
    return head + record_rows(blob, reclen, pageoff).tobytes()


def plain_script_command(key: bytes, op: bytes, pages: np.ndarray, rows: np.ndarray) -> bytes:
    """`EVALSHA {swap_plain.lua's SHA1} 1 key op bucket k args...` in RESP: the rows (each one
    page's RESP arguments, in `pages` order) grouped by bucket. The request that sends it must
    name the script (`Raw.script`) so that it is loaded first."""
    order, buckets, bounds = group_pages(pages)
    rows = rows[order]
    data, width = memoryview(rows.tobytes()), rows.shape[1]
    per = 2 if op == b"write" else 1
    parts: list[bytes | memoryview] = []
    nargs = 0
    for b, lo, hi in zip(buckets.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
        bs, ks = b"%d" % b, b"%d" % (hi - lo)
        parts.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(bs), bs, len(ks), ks))
        parts.append(data[lo * width : hi * width])
        nargs += 2 + per * (hi - lo)
    sha = script_sha("swap_plain").encode()
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        nargs + 5,
        len(sha),
        sha,
        len(key),
        key,
        len(op),
        op,
    )
    return head + b"".join(parts)


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
        if writes is None and (reads is None or not len(reads)):  # frees only: plain
            return (yield from self._plain_frees(disk, guest, frees, mode, page_size))
        # reads go through the script, which splits them by bucket: a plain HMGET per bucket
        # read cost the client a command and a reply per bucket (bench_store_path.py: 143k
        # against 179k pages/s, for 8% more server CPU per page)
        writes_blob, reclen, pageoff = records_args(guest, writes, mode, page_size)
        args = ("batch", pages_blob(reads), pages_blob(frees), writes_blob, reclen, pageoff)
        flags, recs, freed, after = yield Eval("swap_batch", (swap_key(self.prefix, disk),), args)
        return SwapBatchResult(
            found_mask(flags), decode(guest, recs, mode, page_size), int(freed), int(after)
        )

    def _plain_frees(
        self,
        disk: str,
        guest: str,
        frees: np.ndarray | Sequence[int] | None,
        mode: PayloadMode,
        page_size: int,
    ) -> Op[SwapBatchResult]:
        """Frees alone (or nothing): ``swap_plain.lua``, which deletes them bucket by bucket
        and keeps ``n``, or `HGET` of the page count."""
        key = swap_key(self.prefix, disk).encode()
        frees = _EMPTY if frees is None else np.asarray(frees)
        if len(frees):
            data = plain_script_command(key, b"free", frees, field_rows(frees))
            freed, after = (int(x) for x in (yield Raw("EVALSHA", data, 1, "swap_plain")))
        else:
            n = yield Command(("HGET", swap_key(self.prefix, disk), "n"))
            freed, after = 0, 0 if n is None else int(n)
        none = decode(guest, b"", mode, page_size)
        return SwapBatchResult(np.zeros(0, bool), none, freed, after)

    def write(
        self, disk: str, guest: str, writes: RecordBatch, mode: PayloadMode, page_size: int
    ) -> Op[int]:
        """Writes only (overwriting), as one request (`swap_plain.lua`, an HSET of each
        bucket's (page, record) pairs): the state a writes-only `batch` leaves. Returns the
        pages new to the disk."""
        blob, reclen, pageoff = records_args(guest, writes, mode, page_size)
        key = swap_key(self.prefix, disk).encode()
        pages = writes.pages
        rows = record_rows(blob, reclen, pageoff)
        reply = yield Raw(
            "EVALSHA", plain_script_command(key, b"write", pages, rows), 1, "swap_plain"
        )
        return int(reply[0])

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
