"""Guest swap disks on the shared-storage Redis: SwapStore and AsyncSwapStore."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from overcommit.stores.codec import make_batch, verify
from overcommit.stores.launcher import RedisFleet
from overcommit.stores.swap import AsyncSwapStore, SwapStore, swap_key
from overcommit.stores.tmem import bucket_key
from tests.test_tmem_store import PAGES, stored

PS = 4096
C = 0.5


@pytest.fixture
def client(redis_fleet: RedisFleet) -> redis.Redis:
    return redis_fleet.shared.client()


@pytest.mark.parametrize("mode", ["digest", "full"])
def test_write_read_free_round_trip(client, redis_prefix, mode) -> None:
    store = SwapStore(client, prefix=redis_prefix)
    disk = "web-1#0"
    v1 = make_batch("web-1", np.arange(6), np.full(6, 1), mode, PS, C)
    r = store.batch(disk, "web-1", writes=v1, mode=mode, page_size=PS)
    assert r.pages_after == 6 and r.freed == 0 and len(r.found) == 0
    v2 = make_batch("web-1", np.array([2]), np.array([2]), mode, PS, C)
    r = store.batch(
        disk, "web-1", reads=[5, 2, 9], frees=[0, 1, 42], writes=v2, mode=mode, page_size=PS
    )
    assert r.found.tolist() == [True, True, False]
    assert r.got.pages.tolist() == [5, 2] and r.got.versions.tolist() == [1, 1]  # before write
    assert r.got.checksums.tolist() == v1.checksums[[5, 2]].tolist()
    assert r.freed == 2 and r.pages_after == 4
    assert not verify("web-1", r.got, mode, PS, C).any()
    r = store.batch(disk, "web-1", reads=[0, 2], mode=mode, page_size=PS)
    assert r.found.tolist() == [False, True] and r.got.versions.tolist() == [2]
    assert store.count(disk) == 4 == len(stored(client, swap_key(redis_prefix, disk)))


def test_read_all_count_and_drop(client, redis_prefix) -> None:
    store = SwapStore(client, prefix=redis_prefix)
    pages = np.random.default_rng(3).permutation(2500)
    for chunk in np.array_split(pages, 5):
        store.batch(
            "db#1",
            "db",
            writes=make_batch("db", chunk, chunk % 7, "digest", PS, C),
            mode="digest",
            page_size=PS,
        )
    other = make_batch("db", np.arange(3), np.zeros(3), "digest", PS, C)
    store.batch("db#2", "db", writes=other, mode="digest", page_size=PS)  # a later incarnation
    everything = store.read_all("db#1", "db", "digest", PS)
    assert everything.pages.tolist() == list(range(2500))
    assert everything.versions.tolist() == (np.arange(2500) % 7).tolist()
    assert not verify("db", everything, "digest", PS, C).any()
    assert store.count("db#1") == 2500
    assert store.drop("db#1") == 2500
    assert store.count("db#1") == 0 and not client.keys(swap_key(redis_prefix, "db#1") + "*")
    assert store.drop("db#1") == 0
    assert store.count("db#2") == 3  # other disks untouched
    assert len(store.read_all("db#1", "db", "digest", PS)) == 0


def test_swap_survives_a_restart_of_the_shared_store(tmp_path) -> None:
    with RedisFleet([], tmp_path) as fleet:
        writes = make_batch("g", np.arange(10), np.full(10, 4), "full", PS, C)
        SwapStore(fleet.shared.client()).batch("g#0", "g", writes=writes, mode="full", page_size=PS)
        fleet.restart_shared()  # append-only file: the disk comes back
        back = SwapStore(fleet.shared.client()).read_all("g#0", "g", "full", PS)
        assert back.pages.tolist() == list(range(10))
        assert np.array_equal(back.payload, writes.payload)


@pytest.mark.asyncio
async def test_async_swap_store(redis_fleet: RedisFleet, redis_prefix: str) -> None:
    aclient = redis_fleet.shared.async_client()
    try:
        store = AsyncSwapStore(aclient, prefix=redis_prefix)
        writes = make_batch("g", np.arange(4), np.full(4, 9), "full", PS, C)
        r = await store.batch("g#0", "g", writes=writes, mode="full", page_size=PS)
        assert r.pages_after == 4
        r = await store.batch("g#0", "g", reads=[3, 8], frees=[0], mode="full", page_size=PS)
        assert r.found.tolist() == [True, False] and r.freed == 1 and r.pages_after == 3
        assert np.array_equal(r.got.payload[0], writes.payload[3])
        assert (await store.read_all("g#0", "g", "full", PS)).pages.tolist() == [1, 2, 3]
        assert await store.count("g#0") == 3
        assert await store.drop("g#0") == 3
        assert await store.count("g#0") == 0
    finally:
        await aclient.aclose()


@pytest.mark.parametrize("mode", ["digest", "full"])
def test_read_all_in_one_or_many_chunks_agrees(client, redis_prefix, mode, monkeypatch) -> None:
    """A small disk's buckets are read back in one write, a large one's in chunks (here: a
    write per bucket): the same records."""
    import overcommit.stores.tmem as tmem

    store = SwapStore(client, prefix=redis_prefix)
    pages = np.random.default_rng(3).permutation(3000)
    batch = make_batch("vm", pages, np.full(3000, 4), mode, PS, C)
    store.batch("vm#0", "vm", writes=batch, mode=mode, page_size=PS)
    whole = store.read_all("vm#0", "vm", mode, PS)
    monkeypatch.setattr(tmem, "_HVALS_BYTES", 0)  # every chunk is one bucket
    scanned = store.read_all("vm#0", "vm", mode, PS)
    assert whole.pages.tolist() == scanned.pages.tolist() == list(range(3000))
    assert whole.checksums.tolist() == scanned.checksums.tolist()
    assert not verify("vm", whole, mode, PS, C).any()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["digest", "full"])
async def test_write_as_one_hset_leaves_what_a_batch_leaves(
    client, redis_fleet, redis_prefix, mode
) -> None:
    """`SwapStoreOps.write` (the posted write) and a writes-only batch (the script) leave the
    same hash, over a sync and an asyncio client; a page written twice keeps its last record."""
    from overcommit.stores.swap import SwapStoreOps
    from overcommit.stores.tmem import ScriptRunner, run_async, run_sync

    ops = SwapStoreOps(redis_prefix)
    pages = np.array([7, 3, 9, 3])
    batch = make_batch("vm", pages, np.array([1, 1, 1, 2]), mode, PS, C)
    store = SwapStore(client, prefix=redis_prefix)
    store.batch("a#0", "vm", writes=batch, mode=mode, page_size=PS)
    assert run_sync(ScriptRunner(client), ops.write("b#0", "vm", batch, mode, PS)) == 3
    asyn = redis_fleet.shared.async_client()
    assert await run_async(ScriptRunner(asyn), ops.write("c#0", "vm", batch, mode, PS)) == 3
    await asyn.aclose()
    want = stored(client, swap_key(redis_prefix, "a#0"))
    assert len(want) == 3
    for disk in ("b#0", "c#0"):
        assert stored(client, swap_key(redis_prefix, disk)) == want
        assert store.count(disk) == 3
    assert store.read_all("b#0", "vm", mode, PS).versions.tolist() == [2, 1, 1]  # pages 3, 7, 9


def test_disks_stay_in_compact_buckets_of_128_pages(client, redis_prefix) -> None:
    """The server's own view: after a few hundred pages written by a batch and by the posted
    write, then a batch of reads and frees, every bucket hash is in the compact encoding
    (ziplist; listpack on Redis 7) with at most 128 fields, the page count stays exact, and a
    disk of 20,000 digest records costs well under half a hashtable's bytes per record (it was
    ~100 B)."""
    from overcommit.stores.swap import SwapStoreOps
    from overcommit.stores.tmem import ScriptRunner, run_sync

    store, ops, runner = SwapStore(client, redis_prefix), SwapStoreOps(redis_prefix), None
    runner = ScriptRunner(client)
    rng = np.random.default_rng(5)
    pages = rng.choice(6000, 800, replace=False)
    a, b = pages[:400], pages[400:]
    r = store.batch("vm#0", "vm", writes=make_batch("vm", a, np.ones(400), "digest", PS, C),
                    mode="digest", page_size=PS)  # fmt: skip
    assert r.pages_after == 400
    posted = make_batch("vm", np.concatenate([b, a[:50]]), np.full(450, 2), "digest", PS, C)
    assert run_sync(runner, ops.write("vm#0", "vm", posted, "digest", PS)) == 400
    assert store.count("vm#0") == 800
    r = store.batch("vm#0", "vm", reads=pages[::-7], frees=a[100:200], mode="digest", page_size=PS)
    assert r.found.all() and r.got.pages.tolist() == pages[::-7].tolist()
    assert r.freed == 100 and r.pages_after == 700 == store.count("vm#0")
    base = swap_key(redis_prefix, "vm#0")
    held = stored(client, base)  # every bucket: <= 128 fields, the right pages, listed
    assert len(held) == 700
    keys = {bucket_key(base, p) for p in pages}
    assert len(keys) > 30
    for key in keys:
        if client.exists(key):
            assert client.object("encoding", key) in (b"ziplist", b"listpack"), key
    assert client.object("encoding", base) in (b"ziplist", b"listpack")  # the index, too

    before = int(client.info("memory")["used_memory"])
    n = 20_000
    many = rng.permutation(n)
    for chunk in np.array_split(many, n // 256):
        batch = make_batch("vm", chunk, np.ones(len(chunk)), "digest", PS, C)
        run_sync(runner, ops.write("vm#1", "vm", batch, "digest", PS))
    per_record = (int(client.info("memory")["used_memory"]) - before) / n
    print(f"swap disk: {per_record:.1f} B of used_memory per digest record")
    assert per_record < 45, per_record
    assert store.count("vm#1") == n and store.drop("vm#1") == n and store.drop("vm#0") == 700
    assert not client.keys(base + "*") and not client.keys(swap_key(redis_prefix, "vm#1") + "*")


def test_freeing_a_disk_s_last_page_removes_its_index(client, redis_prefix) -> None:
    store = SwapStore(client, redis_prefix)
    w = make_batch("vm", np.array([1, 1000]), np.ones(2), "digest", PS, C)
    store.batch("vm#0", "vm", writes=w, mode="digest", page_size=PS)
    r = store.batch("vm#0", "vm", reads=[1], frees=[1, 1000, 5], mode="digest", page_size=PS)
    assert r.found.tolist() == [True] and r.freed == 2 and r.pages_after == 0
    assert not client.keys(swap_key(redis_prefix, "vm#0") + "*")
    r = store.batch("vm#0", "vm", reads=[1], mode="digest", page_size=PS)
    assert r.found.tolist() == [False] and r.pages_after == 0 and store.count("vm#0") == 0


_disks = itertools.count()
_writes = itertools.count(1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(PAGES, PAGES, PAGES), min_size=1, max_size=8))
def test_random_batches_match_a_dict(redis_fleet: RedisFleet, steps) -> None:
    """Batches of reads, frees and writes over pages of several buckets, a page often written
    twice in one batch (its last record stays, it counts once as new), against a dict."""
    client, prefix = redis_fleet.shared.client(), f"swapmodel{next(_disks)}"
    store, model, disk = SwapStore(client, prefix=prefix), {}, "vm#0"
    for reads, frees, writes in steps:
        versions = [next(_writes) for _ in writes]
        batch = make_batch("vm", np.array(writes, np.uint32), np.array(versions), "digest", PS, C)
        r = store.batch(
            disk, "vm", reads=reads, frees=frees, writes=batch if writes else None,
            mode="digest", page_size=PS,
        )  # fmt: skip
        found = [p in model for p in reads]
        got = [model[p] for p in reads if p in model]
        freed = sum(model.pop(p, None) is not None for p in frees)
        model.update(zip(writes, versions, strict=True))
        assert r.found.tolist() == found and r.got.versions.tolist() == got
        assert r.freed == freed and r.pages_after == len(model) == store.count(disk)
    held = store.read_all(disk, "vm", "digest", PS)
    assert dict(zip(held.pages.tolist(), held.versions.tolist(), strict=True)) == model
    assert len(stored(client, swap_key(prefix, disk))) == len(model)
