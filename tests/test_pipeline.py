"""Lockstep pipelines give the same replies as running store operations one by one."""

from __future__ import annotations

import numpy as np
import pytest

from overcommit.stores.codec import make_batch
from overcommit.stores.pipeline import run_lockstep, run_lockstep_async, targeted
from overcommit.stores.swap import _SwapOps
from overcommit.stores.tmem import ScriptRunner, _TmemOps


def _plans(prefix: str, guests: list[str]):
    tm, sw = _TmemOps(prefix), _SwapOps(prefix)
    plans = []
    for i, g in enumerate(guests):
        pages = np.arange(10 * i, 10 * i + 40, dtype=np.uint32)
        batch = make_batch(g, pages, np.full(40, i + 1, np.uint32), "digest", 4096, 0.5)

        def plan(g=g, pages=pages, batch=batch):
            first = yield from targeted(
                "host", tm.batch(g, None, None, batch, 30, 1000, False, "digest", 4096)
            )
            got = yield from targeted(
                "host", tm.batch(g, pages[:5], pages[5:7], None, 30, 1000, False, "digest", 4096)
            )
            failed = batch.take(np.flatnonzero(~first.put_ok))
            disk = yield from targeted(
                "shared", sw.batch(f"{g}#0", g, None, None, failed, "digest", 4096)
            )
            return first.put_ok.tolist(), got.found.tolist(), got.flushed, disk.pages_after

        plans.append(plan())
    return plans


def test_lockstep_equals_one_by_one(redis_fleet, redis_prefix):
    runners = {
        "host": ScriptRunner(redis_fleet.host("host-a").client()),
        "shared": ScriptRunner(redis_fleet.shared.client()),
    }
    guests = ["g1", "g2", "g3"]
    together = run_lockstep(runners, _plans(redis_prefix + "a", guests))
    alone = [run_lockstep(runners, [p])[0] for p in _plans(redis_prefix + "b", guests)]
    assert together == alone
    assert together[0][0] == [True] * 30 + [False] * 10  # the quota binds per guest
    assert together[0][3] == 10  # the refused puts went to disk


@pytest.mark.asyncio
async def test_lockstep_async_equals_sync(redis_fleet, redis_prefix):
    sync = {
        "host": ScriptRunner(redis_fleet.host("host-b").client()),
        "shared": ScriptRunner(redis_fleet.shared.client()),
    }
    asyn = {
        "host": ScriptRunner(redis_fleet.host("host-b").async_client()),
        "shared": ScriptRunner(redis_fleet.shared.async_client()),
    }
    guests = ["a", "b"]
    want = run_lockstep(sync, _plans(redis_prefix + "s", guests))
    got = await run_lockstep_async(asyn, _plans(redis_prefix + "t", guests))
    assert got == want
