"""Guest swap disks on the shared-storage Redis: SwapStore and AsyncSwapStore."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from overcommit.stores.codec import make_batch, verify
from overcommit.stores.launcher import RedisFleet
from overcommit.stores.swap import AsyncSwapStore, SwapStore, swap_key

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
    assert store.count(disk) == 4 == client.hlen(swap_key(redis_prefix, disk))


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
    assert store.count("db#1") == 0 and not client.exists(swap_key(redis_prefix, "db#1"))
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
