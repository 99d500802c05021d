"""Page records: fixed-width msgpack encoding, deterministic page content and checksums.

A page record is the msgpack array ``[guest, page, version, checksum]`` (payload mode
``digest``) or ``[guest, page, version, checksum, payload]`` (mode ``full``). Every record of
one guest has the same width, so a batch of records is one numpy structured array and one
``bytes`` blob, and Lua scripts can slice records and page fields at fixed offsets:

====================  ======================================  =========================
field                 msgpack encoding                        bytes
====================  ======================================  =========================
header                fixarray 0x94 (digest) / 0x95 (full)    1
guest                 str8: 0xd9, len, utf-8 bytes            2 + len
page                  uint32: 0xce + 4 bytes big-endian       5
version               uint32: 0xce + 4 bytes big-endian       5
checksum              uint64: 0xcf + 8 bytes big-endian       9
payload (full only)   bin32: 0xc6 + 4-byte BE length + data   5 + page_size
====================  ======================================  =========================

Each record decodes with plain ``msgpack.unpackb``. Page content is generated from
(guest key, page, version) with vectorised splitmix64, so any copy of a page can be checked
against what its version implies (:func:`verify`) without keeping the content anywhere else.
Digest checksums, computed for every record written or read back, run as one compiled numba
loop (the numpy expressions under ``OVERCOMMIT_JIT=0``, bit for bit the same).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numba import njit

PayloadMode = Literal["digest", "full"]
PAYLOAD_MODES: tuple[PayloadMode, ...] = ("digest", "full")

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_DIGEST_SALT = _U64(0xD1B54A32D192ED03)
_VERIFY_CHUNK = 4096  # pages per chunk when regenerating content in verify()


@dataclass
class RecordBatch:
    """Records of one guest, column-wise: ``payload`` is (k, page_size) uint8 in full mode."""

    pages: np.ndarray  # uint32
    versions: np.ndarray  # uint32
    checksums: np.ndarray  # uint64
    payload: np.ndarray | None = None  # uint8 (k, page_size), full mode only

    def __len__(self) -> int:
        return int(self.pages.shape[0])

    @classmethod
    def empty(cls, mode: PayloadMode, page_size: int) -> RecordBatch:
        payload = np.zeros((0, page_size), np.uint8) if mode == "full" else None
        return cls(np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.uint64), payload)

    def take(self, index: np.ndarray) -> RecordBatch:
        """The records selected by an index array or boolean mask, in that order."""
        payload = None if self.payload is None else self.payload[index]
        return RecordBatch(self.pages[index], self.versions[index], self.checksums[index], payload)


# ---------------------------------------------------------------------------------------------
# Hashing and content


def guest_key(name: str) -> int:
    """Stable 64-bit key of a guest name (blake2b; never Python's ``hash()``)."""
    return _guest_key(name)


@lru_cache(maxsize=4096)
def _guest_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of ``x + golden`` (wrapping uint64 arithmetic, vectorised)."""
    if np.ndim(x) == 0:  # numpy scalar arithmetic warns when it wraps around; arrays do not
        with np.errstate(over="ignore"):
            z = x + _GOLDEN
            z = (z ^ (z >> _U64(30))) * _MIX1
            z = (z ^ (z >> _U64(27))) * _MIX2
            return z ^ (z >> _U64(31))
    return _mix(x + _GOLDEN)


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of the uint64 array `z`, in place (returns `z`)."""
    z ^= z >> _U64(30)
    z *= _MIX1
    z ^= z >> _U64(27)
    z *= _MIX2
    z ^= z >> _U64(31)
    return z


#: digest checksums in one compiled loop (`OVERCOMMIT_JIT=0`: the numpy expressions below)
JIT = os.environ.get("OVERCOMMIT_JIT", "1") != "0"


@njit(cache=True, nogil=True)
def _mix1(z: np.uint64) -> np.uint64:
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _digest_checksums(gkey: np.uint64, pages: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """`checksums(..., "digest")`: the same wrapping uint64 arithmetic, page by page."""
    out = np.empty(len(pages), np.uint64)
    for i in range(len(pages)):
        out[i] = _digest1(gkey, pages[i], versions[i])
    return out


@njit(cache=True, nogil=True)
def _digest1(gkey: np.uint64, page: int, version: int) -> np.uint64:
    """The digest checksum of one (page, version) of the guest keyed `gkey`."""
    z = (np.uint64(page) << np.uint64(32)) | np.uint64(version)
    z = _mix1(z + _GOLDEN) ^ gkey
    z = _mix1(z + _GOLDEN) ^ _DIGEST_SALT
    return _mix1(z + _GOLDEN)


@njit(cache=True, nogil=True)
def _digest_stale(
    gkey: np.uint64,
    pages: np.ndarray,
    versions: np.ndarray,
    sums: np.ndarray,
    expect: np.ndarray,
    by_page: bool,
):
    """(count, first index) of digest records whose version is not the one expected
    (`expect[page]` when `by_page`, else `expect[i]`; a page beyond `expect` is stale) or
    whose checksum is not the digest of their (page, version): `digest_stale`'s loop."""
    n = 0
    first = -1
    for i in range(len(pages)):
        p = pages[i]
        if by_page and p >= len(expect):  # no such page: not a record this guest wrote
            stale = True
        else:
            want = expect[p] if by_page else expect[i]
            stale = versions[i] != want or sums[i] != _digest1(gkey, p, versions[i])
        if stale:
            if n == 0:
                first = i
            n += 1
    return n, first


def digest_stale(
    guest: str, batch: RecordBatch, expect: np.ndarray, by_page: bool
) -> tuple[int, int]:
    """How many digest records of `batch` are stale or corrupt, and the first one's index
    (-1 if none): a record is stale when its version is not `expect[page]` (`by_page`) or
    `expect[i]`, corrupt when its checksum is not what (guest, page, version) implies."""
    return _digest_stale(
        _U64(_guest_key(guest)), batch.pages, batch.versions, batch.checksums, expect, by_page
    )


def _seeds(gkey: int, pages: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """One 64-bit seed per (guest key, page, version): splitmix64 of splitmix64 of
    (page << 32 | version), xor the guest key."""
    pv = np.asarray(pages).astype(_U64)
    pv <<= _U64(32)
    pv |= np.asarray(versions).astype(_U64, copy=False)
    pv += _GOLDEN
    pv = _mix(pv)
    pv ^= _U64(gkey)
    pv += _GOLDEN
    return _mix(pv)


def _random_words(page_size: int, compressibility: float) -> int:
    if page_size <= 0 or page_size % 8:
        raise ValueError(f"page_size must be a positive multiple of 8, got {page_size}")
    if not 0.0 <= compressibility <= 1.0:
        raise ValueError(f"compressibility must be within [0, 1], got {compressibility}")
    words = page_size // 8
    return int(round((1.0 - compressibility) * words))


def is_common(pages: np.ndarray, duplicates: float) -> np.ndarray:
    """Mask of pages whose never-written content (version 0) is the same in every guest: a
    `duplicates` share of the page numbers, chosen by a fixed hash (the shared image)."""
    if duplicates <= 0:
        return np.zeros(np.shape(pages), bool)
    h = _splitmix64(np.asarray(pages).astype(_U64) ^ _U64(0xC0DE5EED))
    return (h >> _U64(11)).astype(np.float64) / float(1 << 53) < duplicates


def make_payload(
    gkey: int,
    pages: np.ndarray,
    versions: np.ndarray,
    page_size: int,
    compressibility: float,
    duplicates: float = 0.0,
) -> np.ndarray:
    """Deterministic page content, (k, page_size) uint8.

    The first ``round((1 - compressibility) * words)`` 64-bit words are pseudo-random
    (splitmix64 of guest key, page, version and word index), the rest zero, so a real
    compressor finds about the configured ratio; compressibility 1.0 gives a zero-filled page.
    With `duplicates`, version-0 pages of that shared share are generated without the guest key,
    so identical across guests (what page sharing finds by content hash).
    """
    nrand = _random_words(page_size, compressibility)
    seeds = _seeds(gkey, pages, versions)
    if duplicates > 0:  # image pages never written: the same bytes whatever guest holds them
        shared = (np.asarray(versions) == 0) & is_common(pages, duplicates)
        if shared.any():
            seeds[shared] = _seeds(0, np.asarray(pages)[shared], np.asarray(versions)[shared])
    out = np.zeros((seeds.shape[0], page_size), np.uint8)
    if nrand:
        with np.errstate(over="ignore"):
            steps = np.arange(nrand, dtype=_U64) * _GOLDEN
            out.view("<u8")[:, :nrand] = _splitmix64(seeds[:, None] + steps[None, :])
    return out


@lru_cache(maxsize=16)
def _word_weights(words: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers, one per payload word."""
    weights = _splitmix64(np.arange(words, dtype=_U64)) | _U64(1)
    weights.flags.writeable = False
    return weights


def checksums(
    gkey: int,
    pages: np.ndarray,
    versions: np.ndarray,
    mode: PayloadMode,
    payload: np.ndarray | None = None,
) -> np.ndarray:
    """Per-record uint64 checksums.

    ``digest``: a mix of (guest key, page, version). ``full``: a hash of the payload words
    only (wrapping multiply-add by fixed odd constants, then mixed), so equal content has an
    equal checksum whatever guest or page holds it (what page sharing looks for).
    """
    if mode == "digest":
        if JIT:
            return _digest_checksums(
                _U64(gkey), np.asarray(pages), np.asarray(versions).astype(_U64, copy=False)
            )
        z = _seeds(gkey, pages, versions)
        z ^= _DIGEST_SALT
        z += _GOLDEN
        return _mix(z)
    if mode != "full":
        raise ValueError(f"unknown payload mode {mode!r}")
    if payload is None:
        raise ValueError("full mode checksums need the payload")
    words = np.ascontiguousarray(payload).view("<u8")
    with np.errstate(over="ignore"):
        acc = (words * _word_weights(words.shape[1])[None, :]).sum(axis=1, dtype=_U64)
        return _splitmix64(acc ^ _U64(words.shape[1]))


def make_batch(
    guest: str,
    pages: np.ndarray,
    versions: np.ndarray,
    mode: PayloadMode,
    page_size: int,
    compressibility: float,
    duplicates: float = 0.0,
) -> RecordBatch:
    """Records for (pages, versions) of ``guest`` with content and checksums as they imply."""
    pages = _as_u32(pages, "pages")
    versions = _as_u32(versions, "versions")
    if pages.shape != versions.shape:
        raise ValueError("pages and versions must have the same length")
    gkey = guest_key(guest)
    payload = None
    if mode == "full":
        payload = make_payload(gkey, pages, versions, page_size, compressibility, duplicates)
    return RecordBatch(pages, versions, checksums(gkey, pages, versions, mode, payload), payload)


def verify(
    guest: str,
    batch: RecordBatch,
    mode: PayloadMode,
    page_size: int,
    compressibility: float,
    duplicates: float = 0.0,
) -> np.ndarray:
    """Mask of records that are NOT what (guest, page, version) implies.

    Digest mode compares the checksum. Full mode recomputes the checksum from the stored
    payload and also compares the payload with regenerated content (at compressibility 1.0
    every version has the same zero page, so only the checksum field can be checked).
    Staleness (an old but intact version) is not corruption: compare ``batch.versions``.
    """
    gkey = guest_key(guest)
    if mode == "digest":
        return batch.checksums != checksums(gkey, batch.pages, batch.versions, "digest")
    if batch.payload is None:
        raise ValueError("full mode verify needs the payload")
    bad = np.empty(len(batch), bool)
    for lo in range(0, len(batch), _VERIFY_CHUNK):  # bounds memory; numpy per chunk
        sl = slice(lo, lo + _VERIFY_CHUNK)
        stored = batch.payload[sl]
        expected = make_payload(
            gkey, batch.pages[sl], batch.versions[sl], page_size, compressibility, duplicates
        )
        bad[sl] = (
            checksums(gkey, batch.pages[sl], batch.versions[sl], "full", stored)
            != batch.checksums[sl]
        ) | (stored != expected).any(axis=1)
    return bad


# ---------------------------------------------------------------------------------------------
# Fixed-width msgpack records


def _guest_bytes(guest: str) -> bytes:
    raw = guest.encode()
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"guest name must be 1..255 utf-8 bytes, got {len(raw)}: {guest!r}")
    return raw


@lru_cache(maxsize=256)
def _layout(guest: str, mode: PayloadMode, page_size: int) -> tuple[np.dtype, dict[str, bytes]]:
    """Packed structured dtype of one record and the constant bytes of its tag fields."""
    raw = _guest_bytes(guest)
    if mode not in PAYLOAD_MODES:
        raise ValueError(f"unknown payload mode {mode!r}")
    full = mode == "full"
    consts = {
        "head": bytes([0x95 if full else 0x94, 0xD9, len(raw)]) + raw + b"\xce",
        "vtag": b"\xce",
        "ctag": b"\xcf",
    }
    fields: list[tuple] = [
        ("head", np.uint8, (len(consts["head"]),)),
        ("page", ">u4"),
        ("vtag", np.uint8, (1,)),
        ("version", ">u4"),
        ("ctag", np.uint8, (1,)),
        ("checksum", ">u8"),
    ]
    if full:
        consts["btag"] = b"\xc6" + page_size.to_bytes(4, "big")
        fields += [("btag", np.uint8, (5,)), ("payload", np.uint8, (page_size,))]
    return np.dtype(fields), consts


@lru_cache(maxsize=256)
def _const_bytes(guest: str, mode: PayloadMode, page_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of the constant bytes (tag fields) inside a record, and their values."""
    dtype, consts = _layout(guest, mode, page_size)
    cols = [dtype.fields[name][1] + k for name, value in consts.items() for k in range(len(value))]
    expect = np.frombuffer(b"".join(consts.values()), np.uint8)
    return np.array(cols, np.intp), expect


@lru_cache(maxsize=256)
def _field_offsets(
    guest: str, mode: PayloadMode, page_size: int
) -> tuple[int, np.ndarray, np.ndarray, int, int, int]:
    """(record width, constant bytes' offsets and values, offsets of page, version and
    checksum): what `_decode_fields` reads a record by."""
    dtype = _layout(guest, mode, page_size)[0]
    f = dtype.fields
    cols, expect = _const_bytes(guest, mode, page_size)
    return dtype.itemsize, cols, expect, f["page"][1], f["version"][1], f["checksum"][1]


def record_len(guest: str, mode: PayloadMode, page_size: int) -> int:
    """Width in bytes of every record of ``guest`` in ``mode``."""
    return _layout(guest, mode, page_size)[0].itemsize


def page_offset(guest: str) -> int:
    """0-based offset of the 4 big-endian page bytes inside a record (same in both modes)."""
    return 4 + len(_guest_bytes(guest))


def _as_u32(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype != np.uint32:
        if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
            raise ValueError(f"{what} must fit in uint32")
        arr = arr.astype(np.uint32)
    return arr.reshape(-1)


def encode_pages(pages: np.ndarray) -> bytes:
    """Page numbers as concatenated 4-byte big-endian fields (the hash field format)."""
    return _as_u32(pages, "pages").astype(">u4").tobytes()


def encode(guest: str, batch: RecordBatch, mode: PayloadMode, page_size: int) -> bytes:
    """Concatenated fixed-width records of ``batch``."""
    dtype, consts = _layout(guest, mode, page_size)
    out = np.empty(len(batch), dtype)
    for name, value in consts.items():
        out[name] = np.frombuffer(value, np.uint8)
    out["page"] = _as_u32(batch.pages, "pages")
    out["version"] = _as_u32(batch.versions, "versions")
    out["checksum"] = batch.checksums
    if mode == "full":
        if batch.payload is None or batch.payload.shape != (len(batch), page_size):
            raise ValueError(f"full mode needs a ({len(batch)}, {page_size}) payload")
        out["payload"] = batch.payload
    return out.tobytes()


@njit(cache=True, nogil=True)
def _be(raw: np.ndarray, at: int, width: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(width):
        v = (v << np.uint64(8)) | np.uint64(raw[at + k])
    return v


@njit(cache=True, nogil=True)
def _decode_fields(
    raw: np.ndarray, size: int, cols: np.ndarray, expect: np.ndarray, po: int, vo: int, co: int
):
    """`decode`'s digest records in one pass: (pages, versions, checksums, -1), or the index
    of the first record whose constant bytes differ in place of -1."""
    n = len(raw) // size
    pages = np.empty(n, np.uint32)
    versions = np.empty(n, np.uint32)
    sums = np.empty(n, np.uint64)
    for i in range(n):
        base = i * size
        for k in range(len(cols)):
            if raw[base + cols[k]] != expect[k]:
                return pages, versions, sums, i
        pages[i] = np.uint32(_be(raw, base + po, 4))
        versions[i] = np.uint32(_be(raw, base + vo, 4))
        sums[i] = _be(raw, base + co, 8)
    return pages, versions, sums, -1


def decode(guest: str, blob: bytes, mode: PayloadMode, page_size: int) -> RecordBatch:
    """Inverse of :func:`encode`; raises ValueError on a record that is not this layout."""
    dtype, consts = _layout(guest, mode, page_size)
    if len(blob) % dtype.itemsize:
        raise ValueError(
            f"{len(blob)} bytes is not a whole number of {dtype.itemsize}-byte records "
            f"of guest {guest!r} in {mode} mode"
        )
    cols, expect = _const_bytes(guest, mode, page_size)
    if JIT and mode == "digest":  # one pass: the constant bytes checked, the fields swapped
        pages, versions, sums, bad = _decode_fields(
            np.frombuffer(blob, np.uint8), *_field_offsets(guest, mode, page_size)
        )
        if bad < 0:
            return RecordBatch(pages, versions, sums, None)
    arr = np.frombuffer(blob, dtype)
    raw = np.frombuffer(blob, np.uint8).reshape(len(arr), dtype.itemsize)
    if not (raw[:, cols] == expect).all():  # some constant byte differs: find the first record
        for name, value in consts.items():
            bad = (arr[name] != np.frombuffer(value, np.uint8)).any(axis=1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"record {i} is not a {mode} record of guest {guest!r} (field {name} differs)"
                )
    payload = np.ascontiguousarray(arr["payload"]) if mode == "full" else None
    return RecordBatch(
        arr["page"].astype(np.uint32),
        arr["version"].astype(np.uint32),
        arr["checksum"].astype(np.uint64),
        payload,
    )
