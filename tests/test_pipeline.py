"""StoreMux: plans in flight together get the replies they would get one by one."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from overcommit.stores.codec import make_batch
from overcommit.stores.launcher import RedisServer
from overcommit.stores.pipeline import Posted, ServerLost, StoreMux, pack_command, targeted
from overcommit.stores.swap import SwapStoreOps
from overcommit.stores.tmem import Command, Raw, ScriptRunner, TmemStoreOps, run_sync, tmem_key
from tests.test_tmem_store import stored


def _ops(prefix: str, guest: str, i: int):
    """The store operations of one guest, as (target, op factory) steps."""
    tm, sw = TmemStoreOps(prefix), SwapStoreOps(prefix)
    pages = np.arange(10 * i, 10 * i + 40, dtype=np.uint32)
    batch = make_batch(guest, pages, np.full(40, i + 1, np.uint32), "digest", 4096, 0.5)
    return tm, sw, pages, batch


def _plan(prefix: str, guest: str, i: int):
    tm, sw, pages, batch = _ops(prefix, guest, i)
    first = yield from targeted(
        "host", tm.batch(guest, None, None, batch, 30, 1000, False, "digest", 4096)
    )
    got = yield from targeted(
        "host", tm.batch(guest, pages[:5], pages[5:7], None, 30, 1000, False, "digest", 4096)
    )
    failed = batch.take(np.flatnonzero(~first.put_ok))
    disk = yield from targeted(
        "shared", sw.batch(f"{guest}#0", guest, None, None, failed, "digest", 4096)
    )
    back = yield from targeted(  # reads and frees only: plain commands in one write
        "shared", sw.batch(f"{guest}#0", guest, _reads(failed), failed.pages[:3], None, *_D)
    )
    return (
        first.put_ok.tolist(),
        got.found.tolist(),
        got.flushed,
        disk.pages_after,
        _swap_result(back),
    )


_D = ("digest", 4096)


def _reads(failed):
    """Two pages the disk holds, one it does not, one it holds again."""
    p = failed.pages
    return np.array([p[1], 999_999, p[0], p[1]], np.uint32)


def _swap_result(r):
    return r.found.tolist(), r.got.pages.tolist(), r.got.versions.tolist(), r.freed, r.pages_after


def _one_by_one(runners: dict, prefix: str, guest: str, i: int):
    """The same operations through `run_sync`, one round trip each."""
    tm, sw, pages, batch = _ops(prefix, guest, i)
    host, shared = runners["host"], runners["shared"]
    first = run_sync(host, tm.batch(guest, None, None, batch, 30, 1000, False, "digest", 4096))
    got = run_sync(
        host, tm.batch(guest, pages[:5], pages[5:7], None, 30, 1000, False, "digest", 4096)
    )
    failed = batch.take(np.flatnonzero(~first.put_ok))
    disk = run_sync(shared, sw.batch(f"{guest}#0", guest, None, None, failed, "digest", 4096))
    back = run_sync(
        shared, sw.batch(f"{guest}#0", guest, _reads(failed), failed.pages[:3], None, *_D)
    )
    return (
        first.put_ok.tolist(),
        got.found.tolist(),
        got.flushed,
        disk.pages_after,
        _swap_result(back),
    )


@pytest.fixture
def clients(redis_fleet):
    return {"host": redis_fleet.host("host-a").client(), "shared": redis_fleet.shared.client()}


def test_mux_equals_one_by_one(clients, redis_prefix):
    mux = StoreMux(clients)
    guests = ["g1", "g2", "g3"]
    together = mux.run([_plan(redis_prefix + "a", g, i) for i, g in enumerate(guests)])
    runners = {k: ScriptRunner(c) for k, c in clients.items()}
    alone = [_one_by_one(runners, redis_prefix + "b", g, i) for i, g in enumerate(guests)]
    assert together == alone
    assert together[0][0] == [True] * 30 + [False] * 10  # the quota binds per guest
    assert together[0][3] == 10  # the refused puts went to disk
    found, pages, _, freed, after = together[0][4]  # read back, then three slots freed
    assert found == [True, False, True, True] and len(pages) == 3 and (freed, after) == (3, 7)
    # what the stores hold is the same too
    host = clients["host"]
    for g in guests:
        a = stored(host, tmem_key(redis_prefix + "a", g))
        b = stored(host, tmem_key(redis_prefix + "b", g))
        assert a == b and len(a) == 28
    mux.close()


def _logger(key: str, name: str, steps: int):
    for k in range(steps):
        yield from targeted("host", _push(key, f"{name}{k}"))
    return name


def _push(key: str, value: str):
    return (yield Command(("RPUSH", key, value)))


def test_plans_are_in_flight_together(clients, redis_prefix):
    """The server sees the plans' requests interleaved, not one plan after another."""
    key = f"{redis_prefix}:log"
    mux = StoreMux(clients)
    assert mux.run([_logger(key, "a", 3), _logger(key, "b", 2)]) == ["a", "b"]
    log = [v.decode() for v in clients["host"].lrange(key, 0, -1)]
    assert log == ["a0", "b0", "a1", "b1", "a2"]
    mux.close()


def _bad(key: str):
    yield from targeted("host", _push(key, "x"))
    yield "host", Command(("INCR", key))  # a list is not a number: an error reply


def test_error_reply_propagates_and_leaves_no_reply_behind(clients, redis_prefix):
    key = f"{redis_prefix}:errlog"
    mux = StoreMux(clients)
    with pytest.raises(redis.ResponseError):
        mux.run([_bad(key), _logger(f"{key}2", "c", 4)])
    # the next run reads its own replies, not leftovers of the failed one
    assert mux.run([_logger(f"{key}3", "d", 2)]) == ["d"]
    assert clients["host"].lrange(f"{key}3", 0, -1) == [b"d0", b"d1"]
    mux.close()


def _multi(key: bytes):
    """A Raw request of three commands, the second of them failing."""
    cmd = b"*2\r\n$4\r\nHLEN\r\n$%d\r\n%s\r\n" % (len(key), key)
    bad = b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key)
    return (yield "host", Raw("HLEN", cmd + bad + cmd, 3))


def test_multi_command_raw_error_propagates_and_leaves_no_reply_behind(clients, redis_prefix):
    key = f"{redis_prefix}:multi"
    clients["host"].hset(key, "f", "v")
    mux = StoreMux(clients)
    with pytest.raises(redis.ResponseError):
        mux.run([_multi(key.encode()), _logger(f"{key}2", "e", 3)])
    assert mux.run([_logger(f"{key}3", "f", 2)]) == ["f"]
    mux.close()


def test_restarted_server_reloads_scripts_after_bind(redis_fleet, redis_prefix, tmp_path):
    server = RedisServer.start("mux-a", tmp_path)
    try:
        mux = StoreMux({"host": server.client(), "shared": redis_fleet.shared.client()})
        assert mux.run([_plan(redis_prefix + "r", "g", 0)])[0][0][:30] == [True] * 30
        server.kill()  # the server dies between two runs
        with pytest.raises(ServerLost) as lost:
            mux.run([_plan(redis_prefix + "r2", "g", 0)])
        assert lost.value.target == "host"
        server = RedisServer.start("mux-b", tmp_path)  # empty: no data, no scripts loaded
        mux.bind("host", server.client())
        got = mux.run([_plan(redis_prefix + "r3", "g", 0)])[0]
        assert got[0] == [True] * 30 + [False] * 10
        mux.close()
    finally:
        server.stop()


def _posting(prefix: str, guest: str):
    """A posted write, then a read of the same disk: the read sees the write."""
    sw = SwapStoreOps(prefix)
    batch = make_batch(guest, np.arange(5), np.full(5, 3), "digest", 4096, 0.5)
    op = sw.write(f"{guest}#0", guest, batch, "digest", 4096)
    assert (yield "shared", Posted(next(op))) is None  # the plan goes on at once
    got = yield from targeted(
        "shared", sw.batch(f"{guest}#0", guest, np.arange(5), None, None, "digest", 4096)
    )
    return got.found.tolist(), got.got.versions.tolist()


def test_posted_request_is_not_waited_for_but_seen_after(clients, redis_prefix):
    mux = StoreMux(clients)
    got = mux.run([_posting(redis_prefix, "p1"), _posting(redis_prefix, "p2")])
    assert got == [([True] * 5, [3] * 5)] * 2
    mux.close()


def _posting_bad(key: str):
    yield from targeted("host", _push(key, "x"))
    yield "host", Posted(Command(("INCR", key)))  # an error reply nobody waits for
    return "done"


def test_posted_error_reply_still_fails_the_run(clients, redis_prefix):
    mux = StoreMux(clients)
    with pytest.raises(redis.ResponseError):
        mux.run([_posting_bad(f"{redis_prefix}:pe")])
    mux.close()


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, b"k:1", "k:é", "batch", b"\x00\xff" * 700, b"", 16, -5, 2**70),
        ("HSET", b"meta", "frozen:vm-1", "1"),
        ("HMGET", "meta", "n:vm-1", "used"),
        ("X", 1.5, 0.1),  # a float: redis-py's path
        ("X", np.float64(0.25)),  # a numpy scalar: redis-py's path (a float subclass)
        ("SCRIPT LOAD", "return 1"),  # a name with a space: redis-py splits it
        ("HSET", "k", bytearray(b"ab"), memoryview(b"cd")),  # buffers: redis-py's path
    ],
)
def test_commands_pack_as_redis_py_packs_them(args):
    conn = redis.Connection()
    assert pack_command(args, conn) == conn.pack_commands([args])


@pytest.mark.parametrize("bad", [True, None, np.int64(3)])
def test_arguments_redis_py_refuses_are_still_refused(bad):
    with pytest.raises(redis.DataError):
        pack_command(("HSET", "k", "f", bad), redis.Connection())


def _pusher(target: str, key: str, name: str, steps: int):
    """Pushes to a list on `target`, then its echo to one on shared storage, `steps` times."""
    for k in range(steps):
        yield target, Command(("RPUSH", f"{key}:{target}", f"{name}{k}"))
        yield "shared", Command(("RPUSH", f"{key}:shared", f"{name}{k}s"))
    return name


def test_union_runs_plans_over_every_member_server_through_their_connections(
    redis_fleet, redis_prefix
):
    """A host group's members run their window in one mux: `StoreMux.union` of their muxes
    reaches every member's server, through the members' own connections."""
    shared = redis_fleet.shared.client()
    a = StoreMux({"host-a": redis_fleet.host("host-a").client(), "shared": shared})
    b = StoreMux({"host-b": redis_fleet.host("host-b").client(), "shared": shared})
    assert StoreMux.union([a], ["host-a"]) is a
    a.bind("host-b", redis_fleet.host("host-b").client())  # a peer: b's own connection wins
    u = StoreMux.union([a, b], ["host-a", "host-b"])
    assert u.conns["host-a"] is a.conns["host-a"] and u.conns["host-b"] is b.conns["host-b"]
    assert u.conns["shared"] is a.conns["shared"] and u.shas["host-b"] is b.shas["host-b"]
    key = f"{redis_prefix}:u"
    assert u.run([_pusher("host-a", key, "a", 3), _pusher("host-b", key, "b", 2)]) == ["a", "b"]
    on_a = redis_fleet.host("host-a").client().lrange(f"{key}:host-a", 0, -1)
    on_b = redis_fleet.host("host-b").client().lrange(f"{key}:host-b", 0, -1)
    assert on_a == [b"a0", b"a1", b"a2"] and on_b == [b"b0", b"b1"]
    echoes = [v.decode() for v in shared.lrange(f"{key}:shared", 0, -1)]
    assert [e for e in echoes if e[0] == "a"] == ["a0s", "a1s", "a2s"]
    assert [e for e in echoes if e[0] == "b"] == ["b0s", "b1s"]
    # both plans were in flight at once: b's first push came before a's last
    assert echoes.index("b0s") < echoes.index("a2s")
    a.close()
    b.close()
