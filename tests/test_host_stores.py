"""Host swap, host disk-cache and ephemeral-pool stores (Lua in a real redis-server), sync and
async."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from overcommit.stores.codec import make_batch, verify
from overcommit.stores.diskcache import (
    AsyncDiskCacheStore,
    DiskCacheStore,
    dcache_dirty_key,
    dcache_key,
)
from overcommit.stores.ephemeral import AsyncEphemeralPool, EphemeralPool, eph_key, eph_lru_key
from overcommit.stores.hostswap import AsyncHostSwapStore, HostSwapStore, hswap_key
from overcommit.stores.launcher import RedisFleet

PS = 4096
C = 0.5


@pytest.fixture
def client(redis_fleet: RedisFleet) -> redis.Redis:
    return redis_fleet.host("host-a").client()


def recs(guest: str, pages, version, mode: str = "digest"):
    pages = np.asarray(pages)
    return make_batch(guest, pages, np.broadcast_to(version, pages.shape), mode, PS, C)


@pytest.mark.parametrize("mode", ["digest", "full"])
def test_host_swap_round_trip_quota_and_drop(client, redis_prefix, mode):
    hs = HostSwapStore(client, redis_prefix)
    # frames 10, 11, 12 hold guest pages 5, 6 and nothing (0xFFFFFFFF)
    out = recs("vm", [5, 6, 0xFFFFFFFF], [3, 1, 0], mode)
    r = hs.batch(
        "vm", write_frames=[10, 11, 12], writes=out, quota=2, capacity=100, mode=mode, page_size=PS
    )
    assert r.write_ok.tolist() == [True, True, False]  # the quota holds 2 frames
    assert r.guest_frames == 2 == hs.guest_count("vm") == hs.used()
    r = hs.batch("vm", reads=[11, 99], frees=[10], quota=2, capacity=100, mode=mode, page_size=PS)
    assert r.found.tolist() == [True, False]
    assert r.got.pages.tolist() == [6] and r.got.versions.tolist() == [1]
    assert not verify("vm", r.got, mode, PS, C).any()
    assert r.freed == 1 and r.guest_frames == 0  # a swap-in frees the slot
    hs.batch("vm", write_frames=[12], writes=out.take([2]), quota=2, capacity=100, mode=mode,
             page_size=PS)  # fmt: skip
    frames, got = hs.read_all("vm", mode, PS)
    assert frames.tolist() == [12] and got.pages.tolist() == [0xFFFFFFFF]
    assert (
        hs.drop("vm") == 1 and hs.used() == 0 and not client.exists(hswap_key(redis_prefix, "vm"))
    )


def test_host_swap_capacity_is_host_wide(client, redis_prefix):
    hs = HostSwapStore(client, redis_prefix)
    a = hs.batch("a", write_frames=[1, 2], writes=recs("a", [1, 2], 1), quota=10, capacity=3,
                 mode="digest", page_size=PS)  # fmt: skip
    b = hs.batch("b", write_frames=[1, 2], writes=recs("b", [1, 2], 1), quota=10, capacity=3,
                 mode="digest", page_size=PS)  # fmt: skip
    assert a.write_ok.all() and b.write_ok.tolist() == [True, False]
    assert hs.used() == 3


def test_disk_cache_never_drops_a_dirty_page(client, redis_prefix):
    dc = DiskCacheStore(client, redis_prefix)
    disk = "vm#0"
    r = dc.batch(disk, "vm", inserts=recs("vm", [1, 2, 3], 2), mode="digest", page_size=PS)
    assert (r.pages, r.dirty) == (3, 3)
    r = dc.batch(disk, "vm", drops=[1, 2], mode="digest", page_size=PS)
    assert r.dropped == 0 and r.refused == 2 and r.pages == 3  # dirty: refused
    r = dc.batch(disk, "vm", writeback=[1, 2], mode="digest", page_size=PS)
    assert sorted(r.written_back.pages.tolist()) == [1, 2] and r.dirty == 1
    assert r.written_back.versions.tolist() == [2, 2]
    r = dc.batch(disk, "vm", reads=[2, 9], drops=[1, 2, 3], mode="digest", page_size=PS)
    assert r.found.tolist() == [True, False] and r.got.pages.tolist() == [2]
    assert r.dropped == 2 and r.refused == 1 and (r.pages, r.dirty) == (1, 1)
    r = dc.batch(disk, "vm", frees=[3], mode="digest", page_size=PS)  # a discard drops dirty
    assert r.freed == 1 and (r.pages, r.dirty) == (0, 0)
    assert dc.host_pages() == (0, 0)
    assert not client.exists(dcache_key(redis_prefix, disk), dcache_dirty_key(redis_prefix, disk))


def test_disk_cache_drop_of_a_clean_cache(client, redis_prefix):
    """Dropping a disk whose pages were all written back (no dirty page: a zero change)."""
    dc = DiskCacheStore(client, redis_prefix)
    r = dc.batch("vm#0", "vm", inserts=recs("vm", [1, 2, 3], 1), mode="digest", page_size=PS)
    r = dc.batch("vm#0", "vm", writeback=[1, 2, 3], mode="digest", page_size=PS)
    assert (r.pages, r.dirty) == (3, 0)
    assert dc.drop("vm#0") == 3
    assert dc.host_pages() == (0, 0)
    assert dc.drop("vm#0") == 0  # an empty disk too


@pytest.mark.parametrize("mode", ["digest", "full"])
def test_ephemeral_pool_drops_lru_beyond_quota_and_gets_exclusively(client, redis_prefix, mode):
    from overcommit.stores.tmem import TmemPool

    ep = EphemeralPool(client, redis_prefix)
    kw = dict(mode=mode, page_size=PS)
    r = ep.batch("vm", puts=recs("vm", [1, 2, 3, 4], 1, mode), quota=3, **kw)
    assert r.put_ok.all() and r.dropped == 1 and r.guest_pages == 3  # page 1, put first, went
    r = ep.batch("vm", gets=[1, 2, 3], quota=3, **kw)
    assert r.found.tolist() == [False, True, True] and r.got.pages.tolist() == [2, 3]
    assert not verify("vm", r.got, mode, PS, C).any()
    assert r.guest_pages == 1 == ep.guest_count("vm")  # a get removes the page
    assert ep.batch("vm", gets=[2], quota=3, **kw).found.tolist() == [False]
    # the host's budget shrinks to 1: the older page goes at once, before anything else
    ep.batch("vm", puts=recs("vm", [5], 2, mode), quota=3, **kw)
    r = ep.batch("vm", gets=[9], quota=1, **kw)
    assert r.dropped == 1 and ep.read_all("vm", mode, PS).pages.tolist() == [5]
    # a second guest's pool is its own; the host-wide count covers both
    ep.batch("w", puts=recs("w", [5, 6], 7, mode), quota=0, **kw)
    assert ep.guest_count("w") == 0 and ep.used() == 1
    ep.batch("w", puts=recs("w", [5, 6], 7, mode), quota=8, **kw)
    assert ep.used() == 3
    # frozen, or no quota: a put is refused and an old copy of the page removed (never stale)
    TmemPool(client, redis_prefix).freeze("vm")
    r = ep.batch("vm", puts=recs("vm", [5], 3, mode), quota=5, **kw)
    assert r.put_ok.tolist() == [False] and r.guest_pages == 0 and r.host_used == 2
    assert client.zcard(eph_lru_key(redis_prefix, "vm")) == 0
    assert ep.flush_area("w") == 2 and ep.used() == 0
    assert not client.exists(eph_key(redis_prefix, "w"), eph_lru_key(redis_prefix, "w"))


def test_async_variants_share_the_logic(redis_fleet, redis_prefix):
    import redis.asyncio

    async def go():
        c = redis.asyncio.Redis.from_url(redis_fleet.host("host-b").url)
        try:
            hs = AsyncHostSwapStore(c, redis_prefix)
            r = await hs.batch("g", write_frames=[4], writes=recs("g", [7], 2), quota=5,
                               capacity=5, mode="digest", page_size=PS)  # fmt: skip
            assert r.write_ok.tolist() == [True]
            frames, got = await hs.read_all("g", "digest", PS)
            dc = AsyncDiskCacheStore(c, redis_prefix)
            await dc.batch("g#0", "g", inserts=recs("g", [1], 1), mode="digest", page_size=PS)
            cached, dirty = await dc.read_all("g#0", "g", "digest", PS)
            ep = AsyncEphemeralPool(c, redis_prefix)
            await ep.batch("g", puts=recs("g", [3, 4], 1), quota=1, mode="digest", page_size=PS)
            held = await ep.read_all("g", "digest", PS)
            n = (await ep.used(), await ep.guest_count("g"), await ep.flush_area("g"))
            return (
                frames.tolist(),
                got.pages.tolist(),
                cached.pages.tolist(),
                dirty.tolist(),
                held.pages.tolist(),
                n,
            )
        finally:
            await c.aclose()

    assert asyncio.run(go()) == ([4], [7], [1], [1], [4], (1, 1, 1))
