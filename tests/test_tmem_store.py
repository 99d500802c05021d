"""Frontswap/tmem semantics of TmemPool and AsyncTmemPool through a real Redis server."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from overcommit.stores.codec import PayloadMode, RecordBatch, encode, make_batch, verify
from overcommit.stores.launcher import RedisFleet
from overcommit.stores.tmem import (
    BUCKET_BITS,
    BUCKET_PAGES,
    AsyncTmemPool,
    TmemBatchResult,
    TmemPool,
    bucket_key,
    meta_key,
    page_field,
    tmem_key,
)

PS = 4096
BIG = 10**9
C = 0.5  # compressibility


@pytest.fixture
def client(redis_fleet: RedisFleet) -> redis.Redis:
    return redis_fleet.host("host-a").client()


@pytest.fixture
def pool(client: redis.Redis, redis_prefix: str) -> TmemPool:
    return TmemPool(client, prefix=redis_prefix)


def recs(guest: str, pages, version: int | list[int], mode: PayloadMode = "digest") -> RecordBatch:
    pages = np.asarray(pages)
    versions = np.broadcast_to(np.asarray(version), pages.shape)
    return make_batch(guest, pages, versions, mode, PS, C)


def put(pool: TmemPool, guest: str, pages, version, *, quota=BIG, capacity=BIG, mode="digest"):
    return pool.batch(
        guest,
        puts=recs(guest, pages, version, mode),
        quota=quota,
        capacity=capacity,
        mode=mode,
        page_size=PS,
    )


def get(pool: TmemPool, guest: str, pages, *, exclusive=False, mode="digest") -> TmemBatchResult:
    return pool.batch(
        guest,
        gets=np.asarray(pages),
        quota=BIG,
        capacity=BIG,
        exclusive_gets=exclusive,
        mode=mode,
        page_size=PS,
    )


def stored(client: redis.Redis, base: str) -> dict[bytes, bytes]:
    """Every (field, record) the server holds under the pool or disk key `base`, read from
    its bucket hashes (a SCAN of the keyspace: tests only), checking the layout on the way:
    each bucket is `{base}:{p >> 7}`, holds the pages of that bucket only and at most 128, and
    is listed in the index `base`."""
    pattern = base.replace("[", "\\[").replace("*", "\\*").replace("?", "\\?") + ":*"
    index = set(client.hkeys(base))
    out: dict[bytes, bytes] = {}
    for key in client.scan_iter(match=pattern, count=1000):
        b = key.decode()[len(base) + 1 :]
        assert b.isdigit(), key
        fields = client.hgetall(key)
        assert 0 < len(fields) <= BUCKET_PAGES, (key, len(fields))
        assert b.encode() in index, (key, index)
        for f in fields:
            assert bucket_key(base, int.from_bytes(f, "big")) == key.decode()
        out.update(fields)
    return out


def assert_counts_consistent(client: redis.Redis, prefix: str) -> dict[str, int]:
    """meta n:{guest} == the records of every pool, and used == their sum; returns the counts."""
    meta = {
        k.decode(): int(v)
        for k, v in client.hgetall(meta_key(prefix)).items()
        if not k.startswith(b"frozen:")
    }
    head = tmem_key(prefix, "")
    pools = {k.decode()[len(head) :].split(":")[0] for k in client.keys(head + "*")}
    pools.discard("meta")
    held = {g: len(stored(client, tmem_key(prefix, g))) for g in pools}
    held = {g: n for g, n in held.items() if n}
    counts = {k[2:]: v for k, v in meta.items() if k.startswith("n:") and v != 0}
    assert counts == held
    assert meta.get("used", 0) == sum(held.values())
    return held


@pytest.mark.parametrize("mode", ["digest", "full"])
def test_put_then_get_returns_the_record(pool, client, redis_prefix, mode) -> None:
    sent = recs("web-1", [7, 3, 11], [4, 5, 6], mode)
    r = pool.batch("web-1", puts=sent, quota=BIG, capacity=BIG, mode=mode, page_size=PS)
    assert r.put_ok.tolist() == [True, True, True]
    assert (r.guest_pages, r.host_used, r.invalidated, r.flushed) == (3, 3, 0, 0)
    g = get(pool, "web-1", [11, 7, 3], mode=mode)
    assert g.found.tolist() == [True, True, True]
    order = [2, 0, 1]
    assert g.got.pages.tolist() == [11, 7, 3]
    assert g.got.versions.tolist() == sent.versions[order].tolist()
    assert g.got.checksums.tolist() == sent.checksums[order].tolist()
    if mode == "full":
        assert np.array_equal(g.got.payload, sent.payload[order])
    assert not verify("web-1", g.got, mode, PS, C).any()
    assert assert_counts_consistent(client, redis_prefix) == {"web-1": 3}


def test_get_of_missing_pages_reports_not_found(pool) -> None:
    put(pool, "g", [1, 3], 1)
    g = get(pool, "g", [5, 1, 99, 3, 2])
    assert g.found.tolist() == [False, True, False, True, False]
    assert g.got.pages.tolist() == [1, 3]
    assert get(pool, "other", [1]).found.tolist() == [False]  # pools are per guest


def test_successful_duplicate_put_overwrites_without_changing_counts(pool, client, redis_prefix):
    put(pool, "g", [0, 1, 2], 1)
    r = put(pool, "g", [1, 2], 2)
    assert r.put_ok.all() and r.invalidated == 0
    assert (r.guest_pages, r.host_used) == (3, 3)
    assert get(pool, "g", [0, 1, 2]).got.versions.tolist() == [1, 2, 2]
    assert_counts_consistent(client, redis_prefix)


def test_failed_duplicate_put_when_frozen_invalidates_the_old_copy(pool, client, redis_prefix):
    put(pool, "g", range(5), 1)
    pool.freeze("g")
    assert pool.is_frozen("g")
    r = put(pool, "g", [0, 1, 2, 9], 2)
    assert r.put_ok.tolist() == [False] * 4
    assert r.invalidated == 3  # page 9 did not exist: nothing to invalidate
    assert (r.guest_pages, r.host_used) == (2, 2)
    g = get(pool, "g", range(5))
    assert g.found.tolist() == [False, False, False, True, True]  # no stale copy readable
    assert g.got.versions.tolist() == [1, 1]
    assert_counts_consistent(client, redis_prefix)


def test_duplicate_put_needs_no_room_but_fails_when_over_quota(pool, client, redis_prefix):
    put(pool, "g", range(5), 1, quota=5)
    at_limit = put(pool, "g", [0], 2, quota=5)  # count == quota: an overwrite still fits
    assert at_limit.put_ok.tolist() == [True] and at_limit.guest_pages == 5
    over = put(pool, "g", [1, 2, 3], 2, quota=3)  # quota lowered below the count (5)
    # 1 and 2 fail while the guest is over its quota, each invalidating its old copy; then
    # 3 pages remain, so the overwrite of page 3 fits again
    assert over.put_ok.tolist() == [False, False, True]
    assert over.invalidated == 2 and over.guest_pages == 3
    g = get(pool, "g", range(5))
    assert g.found.tolist() == [True, False, False, True, True]
    assert g.got.versions.tolist() == [2, 2, 1]
    assert put(pool, "g", [7], 2, quota=3).put_ok.tolist() == [False]  # no room for a new one
    assert_counts_consistent(client, redis_prefix)


def test_puts_fail_exactly_at_the_quota(pool, client, redis_prefix) -> None:
    r = put(pool, "g", range(8), 1, quota=5)
    assert r.put_ok.tolist() == [True] * 5 + [False] * 3
    assert (r.guest_pages, r.host_used, r.invalidated) == (5, 5, 0)
    assert get(pool, "g", range(8)).found.tolist() == [True] * 5 + [False] * 3
    assert pool.guest_count("g") == 5
    r = put(pool, "g", [20], 1, quota=0)
    assert r.put_ok.tolist() == [False]  # a guest at (or over) maxmem cannot put one page
    assert_counts_consistent(client, redis_prefix)


def test_puts_fail_exactly_at_host_capacity_across_guests(pool, client, redis_prefix) -> None:
    assert put(pool, "a", range(4), 1, capacity=6).put_ok.all()
    r = put(pool, "b", range(4), 1, capacity=6)
    assert r.put_ok.tolist() == [True, True, False, False]
    assert (r.guest_pages, r.host_used) == (2, 6)
    assert pool.used() == 6 and pool.guest_count("a") == 4 and pool.guest_count("b") == 2
    assert put(pool, "a", [0], 2, capacity=6).put_ok.tolist() == [True]  # overwrite fits
    assert_counts_consistent(client, redis_prefix)


def test_puts_fail_when_frozen_and_succeed_after_thaw(pool, client, redis_prefix) -> None:
    pool.freeze("g")
    assert put(pool, "g", [1, 2], 1).put_ok.tolist() == [False, False]
    assert pool.guest_count("g") == 0
    assert not pool.is_frozen("other")
    pool.thaw("g")
    assert not pool.is_frozen("g")
    assert put(pool, "g", [1, 2], 1).put_ok.tolist() == [True, True]
    assert assert_counts_consistent(client, redis_prefix) == {"g": 2}


def test_a_pool_billing_bytes_decides_puts_by_their_cost_not_the_counts(
    pool, client, redis_prefix
) -> None:
    """hosts.tmem.compress/dedup: each put costs the bytes the caller bills it (its compressed
    size, 0 for content the host already stores once); it succeeds while the costs fit in the
    room, whatever the page quota and capacity say; frozen, it fails and invalidates."""
    costs = np.array([1500, 0, 2000, 1500, 700])
    r = pool.batch("g", puts=recs("g", range(5), 1), quota=1, capacity=1, mode="digest",
                   page_size=PS, costs=costs, room=4200)  # fmt: skip
    assert r.put_ok.tolist() == [True, True, True, False, True]  # 1500 + 0 + 2000, then 700
    assert (r.guest_pages, r.host_used) == (4, 4)  # pages stored, above the page quota of 1
    pool.freeze("g")
    r = pool.batch("g", puts=recs("g", [0], 2), quota=BIG, capacity=BIG, mode="digest",
                   page_size=PS, costs=np.array([10]), room=10**6)  # fmt: skip
    assert r.put_ok.tolist() == [False] and r.invalidated == 1  # the old copy is gone
    assert get(pool, "g", [0]).found.tolist() == [False]
    assert assert_counts_consistent(client, redis_prefix) == {"g": 3}
    pool.thaw("g")  # a page put twice in one batch, stored then refused: removed, as in order
    r = pool.batch("g", puts=recs("g", [9, 9, 8], [3, 4, 3]), quota=BIG, capacity=BIG,
                   mode="digest", page_size=PS, costs=np.array([5, 10, 1]), room=8)  # fmt: skip
    assert r.put_ok.tolist() == [True, False, True] and r.invalidated == 1
    assert get(pool, "g", [9, 8]).found.tolist() == [False, True]
    assert assert_counts_consistent(client, redis_prefix) == {"g": 4}


def test_flush_page(pool, client, redis_prefix) -> None:
    put(pool, "g", range(6), 1)
    r = pool.batch("g", flushes=[1, 3, 50], quota=BIG, capacity=BIG, mode="digest", page_size=PS)
    assert r.flushed == 2 and (r.guest_pages, r.host_used) == (4, 4)
    assert get(pool, "g", range(6)).found.tolist() == [True, False, True, False, True, True]
    assert_counts_consistent(client, redis_prefix)


def test_flush_area_empties_the_pool_and_fixes_host_used(pool, client, redis_prefix) -> None:
    put(pool, "a", range(5), 1)
    put(pool, "b", range(3), 1)
    assert pool.guests() == ["a", "b"] and pool.used() == 8
    assert pool.flush_area("a") == 5
    assert not client.exists(tmem_key(redis_prefix, "a"))
    assert pool.guest_count("a") == 0 and pool.used() == 3
    assert pool.guests() == ["b"]
    assert not get(pool, "a", range(5)).found.any()
    assert pool.flush_area("a") == 0  # idempotent
    assert pool.flush_area("b") == 3 and pool.used() == 0
    assert assert_counts_consistent(client, redis_prefix) == {}


def test_exclusive_gets_remove_the_page(pool, client, redis_prefix) -> None:
    put(pool, "g", range(4), 1)
    g = get(pool, "g", [2, 9, 0], exclusive=True)
    assert g.found.tolist() == [True, False, True] and g.got.pages.tolist() == [2, 0]
    assert (g.guest_pages, g.host_used) == (2, 2)
    assert get(pool, "g", range(4)).found.tolist() == [False, True, False, True]
    twice = get(pool, "g", [1, 1], exclusive=True)  # gets run in order within a batch
    assert twice.found.tolist() == [True, False] and twice.guest_pages == 1
    assert_counts_consistent(client, redis_prefix)


def test_one_batch_runs_gets_then_flushes_then_puts(pool) -> None:
    put(pool, "g", [1, 2], 1)
    r = pool.batch(
        "g",
        gets=[1, 2],
        flushes=[1],
        puts=recs("g", [1], 2),
        quota=BIG,
        capacity=BIG,
        mode="digest",
        page_size=PS,
    )
    assert r.got.versions.tolist() == [1, 1]  # gets saw the state before the flush and put
    assert r.flushed == 1 and r.put_ok.tolist() == [True] and r.guest_pages == 2
    assert get(pool, "g", [1]).got.versions.tolist() == [2]
    empty = pool.batch("g", quota=BIG, capacity=BIG, mode="digest", page_size=PS)
    assert len(empty.found) == 0 and len(empty.got) == 0 and len(empty.put_ok) == 0
    assert empty.guest_pages == 2


@pytest.mark.parametrize("mode", ["digest", "full"])
def test_stale_or_corrupt_records_written_raw_are_returned_and_detected(
    pool, client, redis_prefix, mode
) -> None:
    put(pool, "g", [4, 5], 7, mode=mode)
    key = tmem_key(redis_prefix, "g")
    old = encode("g", recs("g", [4], 3, mode), mode, PS)
    assert client.hset(bucket_key(key, 4), page_field(4), old) == 0  # overwrote the record
    bad = recs("g", [5], 7, mode)
    bad.checksums = bad.checksums ^ np.uint64(1)
    assert client.hset(bucket_key(key, 5), page_field(5), encode("g", bad, mode, PS)) == 0
    g = get(pool, "g", [4, 5], mode=mode)
    assert g.found.all()
    assert g.got.versions.tolist() == [3, 7]
    expected_versions = np.array([7, 7])
    assert (g.got.versions < expected_versions).tolist() == [True, False]  # page 4 is stale
    assert verify("g", g.got, mode, PS, C).tolist() == [False, True]  # page 5 is corrupt


@pytest.mark.parametrize("mode", ["digest", "full"])
def test_read_all_returns_everything_sorted(pool, mode) -> None:
    n = 3000 if mode == "digest" else 600  # large enough for a multi-step HSCAN
    pages = np.random.default_rng(1).permutation(n)
    for chunk in np.array_split(pages, 6):
        assert put(pool, "g", chunk, 1, mode=mode).put_ok.all()
    everything = pool.read_all("g", mode, PS)
    assert everything.pages.tolist() == list(range(n))
    assert not verify("g", everything, mode, PS, C).any()
    assert len(pool.read_all("nobody", mode, PS)) == 0


def test_pools_stay_in_compact_buckets_of_128_pages(client, redis_prefix) -> None:
    """The server's own view: after puts of a few hundred pages spread over several buckets,
    each bucket hash is in the compact encoding (ziplist; listpack on Redis 7) with at most
    128 fields, and a pool of 20,000 digest records costs well under half a hashtable's
    bytes per record (it was ~100 B)."""
    pool, guest, other = TmemPool(client, prefix=redis_prefix), "vm-1", "vm-2"
    pages = np.random.default_rng(5).choice(5000, 700, replace=False)
    for chunk in np.array_split(pages, 3):
        assert put(pool, guest, chunk, 1).put_ok.all()
    base = tmem_key(redis_prefix, guest)
    held = stored(client, base)  # every bucket: <= 128 fields, the right pages, listed
    assert len(held) == 700
    keys = {bucket_key(base, p) for p in pages}
    assert len(keys) > 30
    for key in keys:
        assert client.object("encoding", key) in (b"ziplist", b"listpack"), key
    assert client.object("encoding", base) in (b"ziplist", b"listpack")  # the index, too
    assert pool.read_all(guest, "digest", PS).pages.tolist() == sorted(pages.tolist())

    before = int(client.info("memory")["used_memory"])
    n = 20_000
    many = np.random.default_rng(6).permutation(n)
    for chunk in np.array_split(many, n // 256):
        assert put(pool, other, chunk, 1).put_ok.all()
    per_record = (int(client.info("memory")["used_memory"]) - before) / n
    print(f"tmem pool: {per_record:.1f} B of used_memory per digest record")
    assert per_record < 45, per_record
    assert pool.flush_area(other) == n and pool.flush_area(guest) == 700
    assert not client.keys(f"{base}*") and not client.keys(f"{tmem_key(redis_prefix, other)}*")


def test_an_emptied_pool_leaves_no_keys_behind(pool, client, redis_prefix) -> None:
    put(pool, "g", [3, 300, 3000], 1)
    r = pool.batch("g", flushes=[3, 3000], quota=BIG, capacity=BIG, mode="digest", page_size=PS)
    listed = {str(p >> BUCKET_BITS).encode() for p in (3, 300, 3000)}  # emptied ones may stay
    assert r.flushed == 2 and set(client.hkeys(tmem_key(redis_prefix, "g"))) == listed
    get(pool, "g", [300], exclusive=True)  # the last page: the index goes with it
    assert not client.keys(tmem_key(redis_prefix, "g") + "*")
    assert pool.guests() == [] and pool.read_all("g", "digest", PS).pages.tolist() == []


def test_reserved_guest_name() -> None:
    with pytest.raises(ValueError):
        tmem_key("oc", "meta")


# ---------------------------------------------------------------------------------------------
# Random batch sequences against a reference model of the frontswap rules


@dataclass
class Model:
    pools: dict[str, dict[int, int]] = field(default_factory=lambda: {"a": {}, "b": {}})
    frozen: set[str] = field(default_factory=set)

    def used(self) -> int:
        return sum(len(p) for p in self.pools.values())

    def batch(self, guest, gets, flushes, puts, quota, capacity, exclusive) -> dict:
        pool = self.pools[guest]
        found, got = [], []
        for p in gets:  # in order: an exclusive get removes the page for later gets too
            found.append(p in pool)
            if p in pool:
                got.append(pool.pop(p) if exclusive else pool[p])
        flushed = sum(pool.pop(p, None) is not None for p in flushes)
        put_ok, invalidated = [], 0
        for page, version in puts:
            room = 0 if page in pool else 1
            ok = (
                guest not in self.frozen
                and len(pool) + room <= quota
                and self.used() + room <= capacity
            )
            if ok:
                pool[page] = version
            elif pool.pop(page, None) is not None:
                invalidated += 1
            put_ok.append(ok)
        return dict(
            found=found,
            got=got,
            put_ok=put_ok,
            flushed=flushed,
            invalidated=invalidated,
            guest_pages=len(pool),
            host_used=self.used(),
        )


_versions = itertools.count(1)
_model_prefixes = itertools.count()
# ten pages over four buckets of 128 (pages put twice in a batch are frequent)
PAGE = st.sampled_from([0, 1, 2, 127, 128, 129, 255, 300, 301, 1000])
PAGES = st.lists(PAGE, max_size=6)
STEP = st.one_of(
    st.tuples(
        st.just("batch"),
        st.sampled_from("ab"),
        PAGES,
        PAGES,
        PAGES,
        st.integers(0, 8),
        st.integers(0, 12),
        st.booleans(),
    ),
    st.tuples(st.sampled_from(["freeze", "thaw", "flush_area"]), st.sampled_from("ab")),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=10))
def test_random_batches_match_the_reference_model(redis_fleet: RedisFleet, steps) -> None:
    client = redis_fleet.host("host-b").client()
    prefix = f"model{next(_model_prefixes)}"
    pool, model = TmemPool(client, prefix=prefix), Model()
    for step in steps:
        kind, guest = step[0], step[1]
        if kind == "freeze":
            pool.freeze(guest)
            model.frozen.add(guest)
        elif kind == "thaw":
            pool.thaw(guest)
            model.frozen.discard(guest)
        elif kind == "flush_area":
            assert pool.flush_area(guest) == len(model.pools[guest])
            model.pools[guest].clear()
        else:
            _, _, gets, flushes, put_pages, quota, capacity, exclusive = step
            versions = [next(_versions) for _ in put_pages]
            r = pool.batch(
                guest,
                gets=np.array(gets, np.uint32),
                flushes=np.array(flushes, np.uint32),
                puts=recs(guest, np.array(put_pages, np.uint32), versions),
                quota=quota,
                capacity=capacity,
                exclusive_gets=exclusive,
                mode="digest",
                page_size=PS,
            )
            want = model.batch(
                guest,
                gets,
                flushes,
                list(zip(put_pages, versions, strict=True)),
                quota,
                capacity,
                exclusive,
            )
            assert r.found.tolist() == want["found"]
            assert r.got.versions.tolist() == want["got"]
            assert r.put_ok.tolist() == want["put_ok"]
            for name in ("flushed", "invalidated", "guest_pages", "host_used"):
                assert getattr(r, name) == want[name], name
        counts = assert_counts_consistent(client, prefix)
        assert counts == {g: len(p) for g, p in model.pools.items() if p}
    for guest in "ab":
        held = pool.read_all(guest, "digest", PS)
        assert (
            dict(zip(held.pages.tolist(), held.versions.tolist(), strict=True))
            == (model.pools[guest])
        )


# ---------------------------------------------------------------------------------------------
# Async pool


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["digest", "full"])
async def test_async_pool_main_paths(redis_fleet: RedisFleet, redis_prefix: str, mode) -> None:
    aclient = redis_fleet.host("host-a").async_client()
    try:
        pool = AsyncTmemPool(aclient, prefix=redis_prefix)
        kw = dict(capacity=BIG, mode=mode, page_size=PS)
        sent = recs("g", range(6), 1, mode)
        r = await pool.batch("g", puts=sent, quota=4, **kw)
        assert r.put_ok.tolist() == [True] * 4 + [False] * 2 and r.guest_pages == 4
        g = await pool.batch("g", gets=[3, 5, 0], quota=4, **kw)
        assert g.found.tolist() == [True, False, True]
        assert g.got.checksums.tolist() == sent.checksums[[3, 0]].tolist()
        assert not verify("g", g.got, mode, PS, C).any()
        await pool.freeze("g")
        assert await pool.is_frozen("g")
        r = await pool.batch("g", puts=recs("g", [0], 2, mode), quota=4, **kw)
        assert r.put_ok.tolist() == [False] and r.invalidated == 1 and r.guest_pages == 3
        await pool.thaw("g")
        r = await pool.batch("g", gets=[1], flushes=[2], exclusive_gets=True, quota=4, **kw)
        assert r.found.tolist() == [True] and r.flushed == 1 and r.guest_pages == 1
        assert (await pool.read_all("g", mode, PS)).pages.tolist() == [3]
        assert await pool.guests() == ["g"]
        assert await pool.guest_count("g") == 1 and await pool.used() == 1
        assert await pool.flush_area("g") == 1
        assert await pool.used() == 0 and await pool.guests() == []
    finally:
        await aclient.aclose()
    assert_counts_consistent(redis_fleet.host("host-a").client(), redis_prefix)
