"""Tests of the page-record codec: layout, round trips, content, checksums and verify."""

from __future__ import annotations

import hashlib
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overcommit.stores.codec import (
    RecordBatch,
    checksums,
    decode,
    encode,
    encode_pages,
    guest_key,
    make_batch,
    make_payload,
    page_offset,
    record_len,
    verify,
)

PAGE_SIZES = st.sampled_from([64, 512, 4096])
MODES = st.sampled_from(["digest", "full"])
GUESTS = st.text(min_size=1, max_size=40).filter(lambda s: 1 <= len(s.encode()) <= 255)


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, str, int, float, RecordBatch]:
    guest = draw(GUESTS)
    mode = draw(MODES)
    page_size = draw(PAGE_SIZES)
    compressibility = draw(st.floats(0.0, 0.9))
    k = draw(st.integers(0, 12))
    pages = draw(st.lists(st.integers(0, 2**32 - 1), min_size=k, max_size=k, unique=True))
    versions = draw(st.lists(st.integers(0, 2**32 - 1), min_size=k, max_size=k))
    batch = make_batch(
        guest,
        np.array(pages, np.int64),
        np.array(versions, np.int64),
        mode,
        page_size,
        compressibility,
    )
    return guest, mode, page_size, compressibility, batch


def assert_batches_equal(a: RecordBatch, b: RecordBatch) -> None:
    assert np.array_equal(a.pages, b.pages)
    assert np.array_equal(a.versions, b.versions)
    assert np.array_equal(a.checksums, b.checksums)
    assert (a.payload is None) == (b.payload is None)
    if a.payload is not None:
        assert np.array_equal(a.payload, b.payload)


@settings(max_examples=150, deadline=None)
@given(batches())
def test_encode_decode_round_trip_and_msgpack_layout(case: tuple) -> None:
    guest, mode, page_size, _, batch = case
    blob = encode(guest, batch, mode, page_size)
    width = record_len(guest, mode, page_size)
    assert len(blob) == width * len(batch)
    back = decode(guest, blob, mode, page_size)
    assert back.pages.dtype == np.uint32 and back.checksums.dtype == np.uint64
    assert_batches_equal(batch, back)
    for i in range(len(batch)):
        record = blob[i * width : (i + 1) * width]
        expected = [guest, int(batch.pages[i]), int(batch.versions[i]), int(batch.checksums[i])]
        if mode == "full":
            expected.append(batch.payload[i].tobytes())
        assert msgpack.unpackb(record) == expected
        off = page_offset(guest)
        assert record[off : off + 4] == int(batch.pages[i]).to_bytes(4, "big")


@settings(max_examples=100, deadline=None)
@given(batches(), st.data())
def test_verify_detects_flipped_byte_and_wrong_version(case: tuple, data: st.DataObject) -> None:
    guest, mode, page_size, compressibility, batch = case
    assert not verify(guest, batch, mode, page_size, compressibility).any()
    if len(batch) == 0:
        return
    i = data.draw(st.integers(0, len(batch) - 1))

    wrong_version = batch.take(np.arange(len(batch)))
    wrong_version.versions = wrong_version.versions.copy()
    wrong_version.versions[i] ^= np.uint32(1 + data.draw(st.integers(0, 2**31 - 2)))
    bad = verify(guest, wrong_version, mode, page_size, compressibility)
    assert bad.tolist() == [j == i for j in range(len(batch))]

    if mode == "full":
        flipped = batch.take(np.arange(len(batch)))
        byte = data.draw(st.integers(0, page_size - 1))
        flipped.payload[i, byte] ^= np.uint8(1 << data.draw(st.integers(0, 7)))
        bad = verify(guest, flipped, mode, page_size, compressibility)
        assert bad.tolist() == [j == i for j in range(len(batch))]
        # the checksum alone catches it too (content hash of the stored payload)
        recomputed = checksums(
            guest_key(guest), flipped.pages, flipped.versions, "full", flipped.payload
        )
        assert recomputed[i] != batch.checksums[i]


def test_verify_flags_a_record_of_another_guest() -> None:
    batch = make_batch("web-1", np.arange(4), np.ones(4), "digest", 4096, 0.5)
    assert verify("web-2", batch, "digest", 4096, 0.5).all()


def test_record_widths_and_page_offset() -> None:
    assert record_len("web-1", "digest", 4096) == 22 + 5
    assert record_len("web-1", "full", 4096) == 22 + 5 + 5 + 4096
    assert page_offset("web-1") == 9
    assert record_len("é", "digest", 64) == 22 + 2  # utf-8 bytes, not characters
    with pytest.raises(ValueError):
        record_len("", "digest", 64)
    with pytest.raises(ValueError):
        record_len("x" * 256, "digest", 64)


def test_payload_compressibility_is_real() -> None:
    def ratio(c: float) -> float:
        pages = make_payload(guest_key("g"), np.arange(8), np.arange(8), 4096, c)
        return 8 * 4096 / sum(len(zlib.compress(p.tobytes(), 6)) for p in pages)

    assert 1.8 < ratio(0.5) < 2.1
    assert 3.6 < ratio(0.75) < 4.1
    assert ratio(0.0) < 1.01
    same = make_payload(guest_key("g"), np.arange(3), np.arange(3), 4096, 1.0)
    assert not same.any()  # a same-filled (zero) page


def test_content_and_checksums_are_deterministic_and_distinct() -> None:
    pages, versions = np.arange(64), np.full(64, 3)
    a = make_batch("web-1", pages, versions, "full", 4096, 0.25)
    b = make_batch("web-1", pages, versions, "full", 4096, 0.25)
    assert_batches_equal(a, b)
    assert len(np.unique(a.checksums)) == 64
    c = make_batch("web-1", pages, versions + 1, "full", 4096, 0.25)
    assert not (a.payload == c.payload).all(axis=1).any()  # every page differs per version
    d = make_batch("web-1", pages, versions, "digest", 4096, 0.25)
    assert len(np.unique(np.concatenate([d.checksums, a.checksums]))) == 128
    # full-mode checksums are content hashes: equal content, equal checksum
    zeros = make_batch("web-1", pages, versions, "full", 4096, 1.0)
    assert len(np.unique(zeros.checksums)) == 1
    # guest keys: stable values (blake2b), not Python's salted hash()
    blake = hashlib.blake2b(b"web-1", digest_size=8).digest()
    assert guest_key("web-1") == int.from_bytes(blake, "big")
    assert guest_key("web-1") != guest_key("web-2")


def test_encode_pages_and_range_checks() -> None:
    assert encode_pages(np.array([1, 2**32 - 1])) == b"\x00\x00\x00\x01\xff\xff\xff\xff"
    assert encode_pages(np.zeros(0, np.uint32)) == b""
    with pytest.raises(ValueError):
        encode_pages(np.array([-1]))
    with pytest.raises(ValueError):
        encode_pages(np.array([2**32]))


def test_decode_rejects_foreign_or_truncated_records() -> None:
    batch = make_batch("web-1", np.arange(3), np.ones(3), "digest", 4096, 0.5)
    blob = encode("web-1", batch, "digest", 4096)
    with pytest.raises(ValueError, match="whole number"):
        decode("web-1", blob[:-1], "digest", 4096)
    with pytest.raises(ValueError, match="guest 'web-2'"):
        decode("web-2", blob, "digest", 4096)  # same width, other name
    corrupt = bytearray(blob)
    corrupt[record_len("web-1", "digest", 4096) + 13] = 0xCD  # version tag of record 1
    with pytest.raises(ValueError, match="record 1"):
        decode("web-1", bytes(corrupt), "digest", 4096)


@settings(max_examples=60, deadline=None)
@given(
    gkey=st.integers(0, 2**64 - 1),
    pages=st.lists(st.integers(0, 2**32 - 1), max_size=40),
    seed=st.integers(0, 2**32 - 1),
    page_dtype=st.sampled_from([np.int64, np.uint32]),
)
def test_compiled_digest_checksums_equal_the_numpy_expressions(
    gkey: int, pages: list[int], seed: int, page_dtype: type
) -> None:
    """The digest checksums' compiled loop (`codec.JIT`) gives the numpy path's bits."""
    from overcommit.stores import codec

    p = np.array(pages, page_dtype)
    v = np.random.default_rng(seed).integers(0, 2**32, len(p), dtype=np.uint64).astype(np.uint32)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(codec, "JIT", True)
        compiled = codec.checksums(gkey, p, v, "digest")
        m.setattr(codec, "JIT", False)
        plain = codec.checksums(gkey, p, v, "digest")
    assert compiled.dtype == plain.dtype == np.uint64
    assert np.array_equal(compiled, plain)


@settings(max_examples=40, deadline=None)
@given(
    guest=GUESTS,
    pages=st.lists(st.integers(0, 2**32 - 1), max_size=40),
    seed=st.integers(0, 2**32 - 1),
    flip=st.integers(0, 10_000),
)
def test_compiled_decode_equals_the_numpy_path(
    guest: str, pages: list[int], seed: int, flip: int
) -> None:
    """Digest records decoded in one compiled pass (`codec.JIT`) give the numpy path's
    columns, and a changed constant byte is the same error naming the same record."""
    from overcommit.stores import codec

    v = np.random.default_rng(seed).integers(0, 2**32, len(pages), dtype=np.uint64)
    blob = encode(guest, make_batch(guest, np.array(pages), v, "digest", 4096, 0.5), "digest", 4096)
    width = record_len(guest, "digest", 4096)
    corrupt = bytearray(blob)
    if blob:  # one byte of the record's head (a constant) changed
        rec = flip % len(pages)
        corrupt[rec * width + flip % (page_offset(guest))] ^= 0x5A
    out = {}
    with pytest.MonkeyPatch.context() as m:
        for jit in (True, False):
            m.setattr(codec, "JIT", jit)
            got = decode(guest, blob, "digest", 4096)
            out[jit] = got
            try:
                decode(guest, bytes(corrupt), "digest", 4096)
                out[jit, "err"] = None
            except ValueError as e:
                out[jit, "err"] = str(e)
    for name in ("pages", "versions", "checksums"):
        a, b = getattr(out[True], name), getattr(out[False], name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert out[True, "err"] == out[False, "err"]
    assert (out[True, "err"] is None) == (not blob)


def test_digest_stale_counts_what_verify_and_the_versions_find() -> None:
    """`digest_stale` (the guest's compiled read check) flags exactly the records whose
    version is not the expected one or whose checksum `verify` rejects, first one first."""
    from overcommit.stores.codec import digest_stale

    rng = np.random.default_rng(5)
    table = rng.integers(0, 50, 1000).astype(np.uint32)  # the version each page was last written
    pages = rng.choice(1000, 200, replace=False).astype(np.uint32)
    batch = make_batch("g-1", pages, table[pages], "digest", 4096, 0.5)
    assert digest_stale("g-1", batch, table, True) == (0, -1)
    assert digest_stale("g-1", batch, table[pages], False) == (0, -1)
    batch.versions[[7, 90]] += 1  # stale: an older or newer version than last written
    batch.checksums[[3, 150]] ^= 1  # corrupt
    batch.pages[199] = 5000  # no such page in the table
    bad = (batch.versions != table[np.minimum(batch.pages, 999)]) | verify(
        "g-1", batch, "digest", 4096, 0.5
    )
    bad[199] = True
    assert digest_stale("g-1", batch, table, True) == (int(bad.sum()), 3) == (5, 3)
    assert digest_stale("g-2", batch, table, True)[0] == 200  # another guest's records
