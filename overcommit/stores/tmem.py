"""A host's Transcendent Memory (frontswap) pools in the host's Redis, sync and async.

Key layout (``prefix`` namespaces a run, default ``"oc"``):

- ``{prefix}:tmem:{guest}:{bucket}``: hash, 4-byte big-endian page -> fixed-width record
  (:mod:`overcommit.stores.codec`), for the pages ``p`` of the bucket ``p >> 7`` (decimal):
  128 pages a hash, so Redis keeps each in its compact encoding (ziplist/listpack, within
  ``hash-max-ziplist-entries``) at about a third of a hashtable's bytes per record;
- ``{prefix}:tmem:{guest}``: the pool's index, hash ``{bucket}`` -> ``"1"`` for every bucket
  the pool has used since it was last empty (a bucket emptied since may stay listed; the index
  goes with the pool's last page), so a read-back or a flush reads it instead of scanning keys;
- ``{prefix}:tmem:meta``: hash with ``used`` (host-wide persistent pages), ``n:{guest}``
  (that guest's pages) and ``frozen:{guest}`` (``"1"`` while frozen).

One guest's gets, flushes and puts of one epoch run as one call of ``lua/tmem_batch.lua``
(one round trip, atomic). This module also holds the plumbing shared with
:mod:`overcommit.stores.swap`: store operations are written once as generators that yield
Redis requests (:class:`Eval`, :class:`Command`) and return a result; :func:`run_sync` and
:func:`run_async` drive them over a ``redis.Redis`` or ``redis.asyncio.Redis`` client, so the
sync and async classes share every line of logic; and the bucket layout's keys
(:func:`bucket_key`) and read-back (:func:`bucket_records`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import numpy as np
import redis
import redis.asyncio

from overcommit.stores.codec import (
    PayloadMode,
    RecordBatch,
    decode,
    encode,
    encode_pages,
    page_offset,
    record_len,
)

DEFAULT_PREFIX = "oc"
_HSCAN_COUNT = 1024
_HVALS_BYTES = 64 << 20  # read-backs above this many bytes of records go by HSCAN
_EMPTY_PAGES = np.zeros(0, np.uint32)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Plumbing shared with swap.py


@dataclass(frozen=True)
class Eval:
    """Request: run ``lua/{script}.lua`` with ``keys`` and ``args`` (EVALSHA, loads on miss)."""

    script: str
    keys: tuple[str, ...]
    args: tuple[bytes | str | int, ...]


@dataclass(frozen=True)
class Command:
    """Request: one plain Redis command (redis-py's reply parsing applies)."""

    args: tuple[bytes | str | int, ...]


@dataclass(frozen=True)
class Raw:
    """Request: one command already in the wire format (RESP), for commands with thousands
    of arguments that numpy packs at once; `name` selects redis-py's reply parsing. With
    `replies` > 1, `data` holds that many commands, sent in one write, and the reply is the
    list of their replies, unparsed (no atomicity: for commands whose keys only this caller
    touches meanwhile)."""

    name: str
    data: bytes
    replies: int = 1


Op = Generator[Eval | Command | Raw, Any, T]


@cache
def lua_source(script: str) -> str:
    """Text of ``overcommit/stores/lua/{script}.lua``."""
    return (resources.files("overcommit.stores") / "lua" / f"{script}.lua").read_text()


class ScriptRunner:
    """Registered scripts of one client (sync or async); scripts load lazily by name."""

    def __init__(self, client: redis.Redis | redis.asyncio.Redis) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

    def script(self, name: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.client.register_script(lua_source(name))
        return self._scripts[name]


def run_sync(runner: ScriptRunner, op: Op[T]) -> T:
    """Drive ``op`` over a synchronous client."""
    try:
        request = next(op)
        while True:
            if isinstance(request, Eval):
                reply = runner.script(request.script)(keys=request.keys, args=request.args)
            elif isinstance(request, Raw):
                pool = runner.client.connection_pool
                conn = pool.get_connection()
                try:
                    conn.send_packed_command([request.data])
                    if request.replies == 1:
                        reply = runner.client.parse_response(conn, request.name)
                    else:
                        reply = [conn.read_response() for _ in range(request.replies)]
                finally:
                    pool.release(conn)
            else:
                reply = runner.client.execute_command(*request.args)
            request = op.send(reply)
    except StopIteration as done:
        return done.value


async def run_async(runner: ScriptRunner, op: Op[T]) -> T:
    """Drive ``op`` over an asyncio client."""
    try:
        request = next(op)
        while True:
            if isinstance(request, Eval):
                reply = await runner.script(request.script)(keys=request.keys, args=request.args)
            elif isinstance(request, Raw):
                pool = runner.client.connection_pool
                conn = await pool.get_connection()
                try:
                    await conn.send_packed_command([request.data])
                    if request.replies == 1:
                        reply = await runner.client.parse_response(conn, request.name)
                    else:
                        reply = [await conn.read_response() for _ in range(request.replies)]
                finally:
                    await pool.release(conn)
            else:
                reply = await runner.client.execute_command(*request.args)
            request = op.send(reply)
    except StopIteration as done:
        return done.value


def page_field(page: int) -> bytes:
    """Hash field of a page: 4 bytes big-endian."""
    return int(page).to_bytes(4, "big")


def found_mask(flags: bytes) -> np.ndarray:
    """Bool mask from a Lua flag string of ``b"0"``/``b"1"``."""
    return np.frombuffer(flags, np.uint8) == ord("1")


def pages_blob(pages: np.ndarray | Sequence[int] | None) -> bytes:
    return b"" if pages is None else encode_pages(np.asarray(pages))


def records_args(
    guest: str, records: RecordBatch | None, mode: PayloadMode, page_size: int
) -> tuple[bytes, int, int]:
    """(records blob, record length, page offset) as the Lua scripts take them."""
    blob = b"" if records is None else encode(guest, records, mode, page_size)
    return blob, record_len(guest, mode, page_size), page_offset(guest)


def hash_records(key: str, guest: str, mode: PayloadMode, page_size: int) -> Op[RecordBatch]:
    """Every record in hash ``key``, sorted by page. Records carry their page, so the values
    alone suffice: one HVALS when they are at most `_HVALS_BYTES` together, else HSCAN in
    chunks (duplicates merged), so no single reply grows without bound."""
    n = int((yield Command(("HLEN", key))))
    if n * record_len(guest, mode, page_size) <= _HVALS_BYTES:
        recs = b"".join((yield Command(("HVALS", key))))
    else:
        recs = b"".join((yield from hscan_all(key)).values())
    batch = decode(guest, recs, mode, page_size)
    return batch.take(np.argsort(batch.pages, kind="stable"))


def hscan_all(key: str) -> Op[dict[bytes, bytes]]:
    """Every field and value of hash ``key``, by HSCAN in chunks (duplicates merged)."""
    values: dict[bytes, bytes] = {}
    cursor = 0
    while True:
        cursor, chunk = yield Command(("HSCAN", key, cursor, "COUNT", _HSCAN_COUNT))
        values.update(chunk)
        if int(cursor) == 0:
            return values


def _int(reply: bytes | None) -> int:
    return 0 if reply is None else int(reply)


# ---------------------------------------------------------------------------------------------
# Buckets: a pool's or a disk's records in hashes of `BUCKET_PAGES` pages each

BUCKET_BITS = 7
BUCKET_PAGES = 1 << BUCKET_BITS  # within hash-max-ziplist-entries (128): compact encoding


def bucket_key(base: str, page: int) -> str:
    """Key of the hash holding `page`'s record in the pool or disk whose key is `base`."""
    return f"{base}:{int(page) >> BUCKET_BITS}"


def raw_replies(data: bytes, n: int) -> Op[list[Any]]:
    """Send `n` commands packed in `data` in one write; their replies, unparsed, as a list."""
    reply = yield Raw("BUCKETS", data, n)
    return [reply] if n == 1 else reply


def bucket_records(base: str, guest: str, mode: PayloadMode, page_size: int) -> Op[RecordBatch]:
    """Every record of the pool or disk whose key (its index of buckets) is `base`, sorted by
    page: the index, then the buckets' `HVALS` sent together, in chunks of at most
    `_HVALS_BYTES` of records (128 records a bucket at most), so no reply grows without bound."""
    fields = yield Command(("HKEYS", base))
    buckets = sorted(int(f) for f in fields if f.isdigit())
    per = max(1, _HVALS_BYTES // (BUCKET_PAGES * record_len(guest, mode, page_size)))
    key = base.encode()
    recs: list[bytes] = []
    for lo in range(0, len(buckets), per):
        chunk = buckets[lo : lo + per]
        keys = [b"%s:%d" % (key, b) for b in chunk]
        data = b"".join(b"*2\r\n$5\r\nHVALS\r\n$%d\r\n%s\r\n" % (len(k), k) for k in keys)
        recs.extend(v for values in (yield from raw_replies(data, len(chunk))) for v in values)
    batch = decode(guest, b"".join(recs), mode, page_size)
    return batch.take(np.argsort(batch.pages, kind="stable"))


# ---------------------------------------------------------------------------------------------
# Tmem


def tmem_key(prefix: str, guest: str) -> str:
    """Key of a guest's persistent pool."""
    if guest == "meta":
        raise ValueError("'meta' is reserved and cannot be a guest name")
    return f"{prefix}:tmem:{guest}"


def meta_key(prefix: str) -> str:
    """Key of the host's tmem bookkeeping hash."""
    return f"{prefix}:tmem:meta"


@dataclass
class TmemBatchResult:
    """Outcome of one :meth:`TmemPool.batch` call."""

    found: np.ndarray  # bool, aligned with gets
    got: RecordBatch  # records of the found pages, in gets order
    put_ok: np.ndarray  # bool, aligned with puts
    flushed: int  # flushed pages that existed
    invalidated: int  # old copies removed by failing duplicate puts
    guest_pages: int  # the guest's pool size after the batch
    host_used: int  # host-wide persistent pages after the batch


class TmemStoreOps:
    """The tmem operations, each a generator of Redis requests (see module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.meta = meta_key(prefix)

    def batch(
        self,
        guest: str,
        gets: np.ndarray | Sequence[int] | None,
        flushes: np.ndarray | Sequence[int] | None,
        puts: RecordBatch | None,
        quota: int,
        capacity: int,
        exclusive_gets: bool,
        mode: PayloadMode,
        page_size: int,
        costs: np.ndarray | None = None,
        room: int = 0,
    ) -> Op[TmemBatchResult]:
        puts_blob, reclen, pageoff = records_args(guest, puts, mode, page_size)
        args: tuple[bytes | str | int, ...] = (
            "batch",
            guest,
            pages_blob(gets),
            pages_blob(flushes),
            puts_blob,
            reclen,
            pageoff,
            int(quota),
            int(capacity),
            1 if exclusive_gets else 0,
        )
        if costs is not None and len(costs):  # a pool billing by compressed size
            args += (np.asarray(costs).astype(">u4").tobytes(), int(room))
        reply = yield Eval("tmem_batch", (tmem_key(self.prefix, guest), self.meta), args)
        flags, recs, put_flags, flushed, invalidated, guest_pages, host_used = reply
        return TmemBatchResult(
            found=found_mask(flags),
            got=decode(guest, recs, mode, page_size),
            put_ok=found_mask(put_flags),
            flushed=int(flushed),
            invalidated=int(invalidated),
            guest_pages=int(guest_pages),
            host_used=int(host_used),
        )

    def flush_area(self, guest: str) -> Op[int]:
        keys = (tmem_key(self.prefix, guest), self.meta)
        return int((yield Eval("tmem_batch", keys, ("flush_area", guest))))

    def freeze(self, guest: str) -> Op[None]:
        yield Command(("HSET", self.meta, f"frozen:{guest}", "1"))

    def thaw(self, guest: str) -> Op[None]:
        yield Command(("HDEL", self.meta, f"frozen:{guest}"))

    def is_frozen(self, guest: str) -> Op[bool]:
        return (yield Command(("HGET", self.meta, f"frozen:{guest}"))) == b"1"

    def guest_count(self, guest: str) -> Op[int]:
        return _int((yield Command(("HGET", self.meta, f"n:{guest}"))))

    def used(self) -> Op[int]:
        return _int((yield Command(("HGET", self.meta, "used"))))

    def counts(self, guests: Sequence[str]) -> Op[tuple[int, dict[str, int]]]:
        """(host-wide used, each guest's count), read together in one command."""
        fields = ["used", *(f"n:{g}" for g in guests)]
        values = yield Command(("HMGET", self.meta, *fields))
        return _int(values[0]), {g: _int(v) for g, v in zip(guests, values[1:])}

    def read_all(self, guest: str, mode: PayloadMode, page_size: int) -> Op[RecordBatch]:
        return (yield from bucket_records(tmem_key(self.prefix, guest), guest, mode, page_size))

    def guests(self) -> Op[list[str]]:
        """Guests whose count in the meta hash is above zero (the scripts keep it exact)."""
        meta = yield Command(("HGETALL", self.meta))
        if isinstance(meta, list):  # a raw reply (no response callback): field, value, ...
            meta = dict(zip(meta[::2], meta[1::2]))
        return sorted(k.decode()[2:] for k, v in meta.items() if k.startswith(b"n:") and int(v) > 0)


class TmemPool:
    """A host's tmem pools over a synchronous ``redis.Redis`` client."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = TmemStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix
        self.client = client  # the host's Redis (other host stores share it)

    def batch(
        self,
        guest: str,
        *,
        gets: np.ndarray | Sequence[int] | None = None,
        flushes: np.ndarray | Sequence[int] | None = None,
        puts: RecordBatch | None = None,
        quota: int,
        capacity: int,
        exclusive_gets: bool = False,
        mode: PayloadMode,
        page_size: int,
        costs: np.ndarray | None = None,
        room: int = 0,
    ) -> TmemBatchResult:
        """Gets, then flushes, then puts of one guest: atomic, one round trip. With `costs`
        (bytes per put) the puts are decided against `room` bytes instead of the counts."""
        op = self._ops.batch(
            guest,
            gets,
            flushes,
            puts,
            quota,
            capacity,
            exclusive_gets,
            mode,
            page_size,
            costs,
            room,
        )
        return run_sync(self._runner, op)

    def flush_area(self, guest: str) -> int:
        """Drop the guest's whole pool (invalidate_area); returns the pages removed."""
        return run_sync(self._runner, self._ops.flush_area(guest))

    def freeze(self, guest: str) -> None:
        """Make every put of the guest fail (and invalidate duplicates) until thawed."""
        run_sync(self._runner, self._ops.freeze(guest))

    def thaw(self, guest: str) -> None:
        run_sync(self._runner, self._ops.thaw(guest))

    def is_frozen(self, guest: str) -> bool:
        return run_sync(self._runner, self._ops.is_frozen(guest))

    def guest_count(self, guest: str) -> int:
        return run_sync(self._runner, self._ops.guest_count(guest))

    def used(self) -> int:
        return run_sync(self._runner, self._ops.used())

    def read_all(self, guest: str, mode: PayloadMode, page_size: int) -> RecordBatch:
        """Every record the server holds for the guest, sorted by page."""
        return run_sync(self._runner, self._ops.read_all(guest, mode, page_size))

    def guests(self) -> list[str]:
        """Guests with a non-empty pool, sorted."""
        return run_sync(self._runner, self._ops.guests())


class AsyncTmemPool:
    """:class:`TmemPool` over a ``redis.asyncio.Redis`` client."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._ops = TmemStoreOps(prefix)
        self._runner = ScriptRunner(client)
        self.prefix = prefix
        self.client = client

    async def batch(
        self,
        guest: str,
        *,
        gets: np.ndarray | Sequence[int] | None = None,
        flushes: np.ndarray | Sequence[int] | None = None,
        puts: RecordBatch | None = None,
        quota: int,
        capacity: int,
        exclusive_gets: bool = False,
        mode: PayloadMode,
        page_size: int,
        costs: np.ndarray | None = None,
        room: int = 0,
    ) -> TmemBatchResult:
        op = self._ops.batch(
            guest,
            gets,
            flushes,
            puts,
            quota,
            capacity,
            exclusive_gets,
            mode,
            page_size,
            costs,
            room,
        )
        return await run_async(self._runner, op)

    async def flush_area(self, guest: str) -> int:
        return await run_async(self._runner, self._ops.flush_area(guest))

    async def freeze(self, guest: str) -> None:
        await run_async(self._runner, self._ops.freeze(guest))

    async def thaw(self, guest: str) -> None:
        await run_async(self._runner, self._ops.thaw(guest))

    async def is_frozen(self, guest: str) -> bool:
        return await run_async(self._runner, self._ops.is_frozen(guest))

    async def guest_count(self, guest: str) -> int:
        return await run_async(self._runner, self._ops.guest_count(guest))

    async def used(self) -> int:
        return await run_async(self._runner, self._ops.used())

    async def read_all(self, guest: str, mode: PayloadMode, page_size: int) -> RecordBatch:
        return await run_async(self._runner, self._ops.read_all(guest, mode, page_size))

    async def guests(self) -> list[str]:
        return await run_async(self._runner, self._ops.guests())


#: the former private name, kept for importers not yet updated
_TmemOps = TmemStoreOps
