"""End-to-end runs of the inline engine against real Redis servers it starts itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from overcommit.cluster.engine import run_scenario
from overcommit.config import apply_overrides, load_scenario, load_scenario_text
from overcommit.nodes.guest import FRONTSWAP
from overcommit.stores.codec import encode, make_batch
from overcommit.stores.tmem import bucket_key, page_field, tmem_key

SMALL = """
name: small
seed: 3
duration: 8s
epoch: 100ms
sync_window: 500ms
runtime: {{kind: inline}}
mechanism: {mechanism}
hosts: {{count: {hosts}, ram: 320MiB, reserve: 32MiB, boot: {boot}}}
shared_storage: {{device: ssd}}
guests:
  - name: g
    count: {count}
    memory: 64MiB
    maxmem: 96MiB
    swap: {swap}
    pinned: {pinned}
    workload: {{kind: zipf, working_set: 96MiB, access_rate: 40k/s, write_fraction: 0.3,
               skew: 0.5}}
{extra}
"""


def small(
    mechanism: str = "frontswap",
    hosts: int = 1,
    count: int = 2,
    boot: str = "eager",
    swap: str = "96MiB",
    pinned: float = 0.0,
    extra: str = "",
    **overrides: object,
):
    text = SMALL.format(
        mechanism=mechanism,
        hosts=hosts,
        count=count,
        boot=boot,
        swap=swap,
        pinned=pinned,
        extra=extra,
    )
    sc = load_scenario_text(text, "small.yaml")
    return apply_overrides(sc, overrides) if overrides else sc


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "run"}


@pytest.fixture(scope="module")
def frontswap_run():
    return run_scenario(small())


def test_determinism_same_seed_same_everything(frontswap_run):
    again = run_scenario(small())
    assert comparable(again.summary) == comparable(frontswap_run.summary)
    pd.testing.assert_frame_equal(again.guests, frontswap_run.guests)
    pd.testing.assert_frame_equal(again.hosts, frontswap_run.hosts)
    assert again.events == frontswap_run.events


def test_other_seed_gives_other_touches(frontswap_run):
    other = run_scenario(small(seed=4))
    assert other.summary["totals"]["touches"] != frontswap_run.summary["totals"]["touches"]


def test_run_exercises_frontswap_and_is_valid(frontswap_run):
    s = frontswap_run.summary
    t = s["totals"]
    assert s["valid"], s["checks"]
    assert t["frontswap_puts"] > 0 and t["frontswap_gets"] > 0
    assert t["frontswap_put_failures"] > 0  # the host cannot lend all that maxmem allows
    assert t["stale_reads"] == 0 and t["lost_pages"] == 0


def test_no_constant_placeholder_columns_and_checks_named_for_what_they_check(frontswap_run):
    """Every host column is a figure the run computes (no always-zero placeholder such as
    migration buffers), and the checkers are named for what they check."""
    assert "buffer_pages" not in frontswap_run.hosts.columns
    assert set(frontswap_run.summary["checks"]) == {
        "conservation",
        "integrity",
        "frontswap",
        "no_missing_pages",
    }


def test_conservation_every_epoch_from_time_series(frontswap_run):
    h = frontswap_run.hosts
    lhs = h["ram_pages"]
    rhs = (
        h["reserve_pages"]
        + h["guest_frames"]
        + h["tmem_pages"]
        + h["cache_pages"]
        + h["free_pages"]
    )
    assert (lhs == rhs).all()
    assert (h["free_pages"] >= 0).all()
    g = frontswap_run.guests
    footprint = 96 * 256
    total = g["untouched_pages"] + g["resident_pages"] + g["frontswap_pages"] + g["swap_pages"]
    assert (total == footprint).all()
    assert (g["resident_pages"] + g["free_frames"] == 64 * 256).all()
    # billing: RAM + tmem never above maxmem
    assert (64 * 256 + g["tmem_pages"] <= 96 * 256).all()
    # the pool's per-epoch size is the sum of its guests' pools
    per_epoch = g.groupby("epoch")["tmem_pages"].sum().to_numpy()
    assert (per_epoch == h["tmem_pages"].to_numpy()).all()
    assert frontswap_run.summary["checks"]["conservation"]["violations"] == 0


def test_pool_contents_match_put_counters(frontswap_run):
    t = frontswap_run.summary["totals"]
    held = sum(g["tmem_pages_end"] for g in frontswap_run.summary["guests"].values())
    assert held == t["frontswap_puts"] - t["frontswap_flushes"] - t["frontswap_invalidated"]
    assert frontswap_run.summary["checks"]["integrity"]["ok"]


def _inject_at(epoch_wanted: int, action):
    done = []

    def hook(epoch, runtime, fleet):
        if epoch >= epoch_wanted and not done:
            done.append(action(runtime, fleet))

    return hook, done


def _held_in_tmem_only(g):
    return np.flatnonzero((g.loc == FRONTSWAP) & (g.slot == FRONTSWAP))


def test_stale_record_written_into_redis_is_caught():
    def stale(runtime, fleet):
        g = runtime.models()[0]
        pages = _held_in_tmem_only(g)[:3]
        assert len(pages), "the scenario must have pages in tmem by then"
        old = (g.version[pages] - 1).astype(np.uint32)  # a version the guest overwrote
        old[g.version[pages] == 0] = 7
        batch = make_batch(g.name, pages.astype(np.uint32), old, "digest", 4096, 0.5)
        raw = fleet.host(g.host).client()
        blob = encode(g.name, batch, "digest", 4096)
        n = len(blob) // len(pages)
        for i, p in enumerate(pages):
            key = bucket_key(tmem_key("oc", g.name), int(p))
            assert raw.hset(key, page_field(int(p)), blob[i * n : (i + 1) * n]) == 0
        return pages

    hook, done = _inject_at(40, stale)
    r = run_scenario(small(), on_window=hook)
    assert done
    assert not r.valid and r.exit_code == 3
    ev = " ".join(r.summary["checks"]["integrity"]["evidence"])
    assert "stale" in ev


def test_record_deleted_from_redis_is_a_lost_page():
    def delete(runtime, fleet):
        g = runtime.models()[1]
        pages = _held_in_tmem_only(g)[:2]
        raw = fleet.host(g.host).client()
        for p in pages:
            assert raw.hdel(bucket_key(tmem_key("oc", g.name), int(p)), page_field(int(p))) == 1
        return pages

    hook, done = _inject_at(40, delete)
    r = run_scenario(small(), on_window=hook)
    assert done and len(done[0]) == 2
    assert not r.valid
    checks = r.summary["checks"]
    assert not checks["integrity"]["ok"] or not checks["no_missing_pages"]["ok"]


def test_freeze_makes_every_put_fail_until_thaw():
    extra = """events:
  - {at: 2s, tmem_freeze: host-1}
  - {at: 5s, tmem_thaw: host-1}"""
    r = run_scenario(small(extra=extra))
    g = r.guests
    frozen = g[(g["t"] >= 2.0) & (g["t"] < 5.0)]
    assert frozen["tmem_puts"].sum() == 0
    assert frozen["tmem_put_failures"].sum() > 0
    after = g[g["t"] >= 5.0]
    assert after["tmem_puts"].sum() > 0
    assert r.valid, r.summary["checks"]
    kinds = [e["kind"] for e in r.events]
    assert "tmem_freeze" in kinds and "tmem_thaw" in kinds


def test_tmem_flush_event_drains_cooperative_guest_to_disk():
    extra = """events:
  - {at: 6s, tmem_flush: g-1}
  - {at: 6s, tmem_flush: g-2}"""
    text = SMALL.format(
        mechanism="frontswap",
        hosts=1,
        count=2,
        boot="eager",
        swap="96MiB",
        pinned=0.0,
        extra=extra,
    ).replace("    pinned: 0.0\n", "    pinned: 0.0\n    cooperative: true\n")
    r = run_scenario(load_scenario_text(text, "t.yaml"))
    ev = [e for e in r.events if e["kind"] == "tmem_flush"]
    assert [e["guest"] for e in ev] == ["g-1", "g-2"]
    assert all(e["pages_moved"] > 0 for e in ev)
    g = r.guests
    at6 = g[g["epoch"] == 59]  # last epoch before the drain
    assert at6["tmem_pages"].sum() > 0
    assert r.valid, r.summary["checks"]

    unco = run_scenario(
        load_scenario_text(text.replace("cooperative: true", "cooperative: false"), "t.yaml")
    )
    ev = [e for e in unco.events if e["kind"] == "tmem_flush"]
    assert all(e["pages_moved"] == 0 for e in ev)
    assert unco.valid


def test_none_mechanism_never_touches_tmem():
    r = run_scenario(small(mechanism="none"))
    t = r.summary["totals"]
    assert t["frontswap_puts"] == t["frontswap_gets"] == t["frontswap_put_failures"] == 0
    assert t["disk_writes"] > 0 and t["disk_reads"] > 0
    assert r.valid


def test_oom_kill_when_ram_and_swap_are_full():
    r = run_scenario(small(swap="8MiB", duration="6s"))
    t = r.summary["totals"]
    assert t["guest_oom_kills"] > 0
    assert t["downtime_seconds"] > 0
    assert any(e["kind"] == "oom_kill" for e in r.events)
    assert r.valid, r.summary["checks"]  # an OOM kill is an outcome, not an emulator error


def test_lazy_boot_backs_frames_on_first_touch():
    eager = run_scenario(small(boot="eager", duration="3s"))
    lazy = run_scenario(small(boot="lazy", duration="3s"))
    he, hl = eager.hosts, lazy.hosts
    assert (he["guest_frames"] == 2 * 64 * 256).all()
    assert hl["guest_frames"].iloc[0] < hl["guest_frames"].iloc[-1] <= 2 * 64 * 256
    assert lazy.summary["totals"]["host_frames_allocated"] == hl["guest_frames"].iloc[-1]
    assert lazy.valid


def test_pinned_pages_stay_resident():
    r = run_scenario(small(pinned=0.25, duration="4s"))
    assert r.valid
    g = r.guests
    assert (g["resident_pages"] >= int(0.25 * 96 * 256)).all()


def test_hypothesis_not_met_gives_exit_code_1():
    extra = 'hypothesis: ["progress >= 0.999", "stale_reads == 0"]'
    r = run_scenario(small(extra=extra, duration="3s"))
    assert r.valid
    hyp = r.summary["hypothesis"]
    assert hyp["status"] == "not met"
    assert [d["ok"] for d in hyp["details"]] == [False, True]
    assert r.exit_code == 1


def test_frontswap_beats_none_on_shipped_scenario():
    """Both runs see the same access sequence (common random numbers); frontswap consumes it
    faster. Compared per guest over the same accesses (frontswap's prefix of at most as many
    touches as the baseline made), the disk pages (read + written) frontswap avoided are at
    least the pages it put into tmem minus the puts that failed."""
    base = load_scenario("configs/frontswap-vs-none.yaml")
    runs = {
        m: run_scenario(
            apply_overrides(base, {"mechanism": m, "duration": "30s", "runtime.kind": "inline"})
        )
        for m in ("none", "frontswap")
    }
    none, fs = runs["none"].summary, runs["frontswap"].summary
    assert none["valid"] and fs["valid"]
    tf = fs["totals"]
    # what the pools in Redis hold is what the put counters say went in
    held = sum(g["tmem_pages_end"] for g in fs["guests"].values())
    assert held == tf["frontswap_puts"] - tf["frontswap_flushes"] - tf["frontswap_invalidated"]
    assert held > 0
    gn, gf = runs["none"].guests, runs["frontswap"].guests
    for name in none["guests"]:
        a = gn[gn["guest"] == name]
        b = gf[gf["guest"] == name].reset_index(drop=True)
        upto = int(np.searchsorted(b["touches"].cumsum().to_numpy(), a["touches"].sum()))
        b = b.iloc[:upto]
        assert 0.99 * a["touches"].sum() <= b["touches"].sum() <= a["touches"].sum()
        disk_a = a["disk_reads"].sum() + a["disk_writes"].sum()
        disk_b = b["disk_reads"].sum() + b["disk_writes"].sum()
        moved = b["tmem_puts"].sum()
        assert moved > 0
        assert disk_a - disk_b >= moved - b["tmem_put_failures"].sum()
    assert tf["disk_reads"] < none["totals"]["disk_reads"]
    assert tf["progress"] > none["totals"]["progress"]


def test_thrashing_guest_is_not_oom_killed_while_swap_has_room():
    """An epoch touching more new pages than RAM holds thrashes; it does not OOM."""
    text = """
name: thrash
duration: 3s
mechanism: none
runtime: {kind: inline}
hosts: {ram: 256MiB}
guests:
  - {name: t, memory: 64MiB, swap: 1GiB,
     workload: {kind: zipf, working_set: 128MiB, access_rate: 400k/s, skew: 0}}
"""
    r = run_scenario(load_scenario_text(text, "thrash.yaml"))
    t = r.summary["totals"]
    assert t["guest_oom_kills"] == 0
    assert t["disk_writes"] > 0 and t["disk_reads"] > 0
    assert r.summary["guests"]["t"]["pages_end"]["swap"] > 0
    assert r.valid, r.summary["checks"]


def test_slow_disk_makes_reclaim_synchronous():
    """kswapd writes only as fast as the disk allows; the rest is direct reclaim (stall)."""
    fast = run_scenario(small(mechanism="none", duration="6s"))
    slow_text = SMALL.format(
        mechanism="none", hosts=1, count=2, boot="eager", swap="96MiB", pinned=0.0, extra=""
    ).replace("device: ssd", "device: hdd")
    slow = run_scenario(
        apply_overrides(load_scenario_text(slow_text, "s.yaml"), {"duration": "6s"})
    )
    assert slow.valid and fast.valid
    ts, tf = slow.summary["totals"], fast.summary["totals"]
    assert ts["direct_reclaims"] > 0
    assert ts["stall_by_source"]["reclaim_write"] > tf["stall_by_source"]["reclaim_write"]
    assert ts["progress"] < tf["progress"]


def test_external_redis_is_reused_cleanly_and_left_running(tmp_path):
    from overcommit.stores.launcher import RedisServer

    host = RedisServer.start("ext-host", tmp_path)
    shared = RedisServer.start("ext-shared", tmp_path, appendonly=True)
    try:
        extra = f"""redis: {{hosts: {{host-1: "{host.url}"}}, shared: "{shared.url}"}}
events:
  - {{at: 3s, tmem_freeze: host-1}}"""
        first = run_scenario(small(extra=extra, duration="4s"))
        assert first.valid and first.summary["run"]["stale_keys_deleted"] == 0
        assert host.alive() and shared.alive()
        # the first run left a frozen pool and records behind; the second starts clean
        assert host.client().dbsize() > 0
        second = run_scenario(small(extra=extra.split("\nevents")[0], duration="4s"))
        assert second.valid, second.summary["checks"]
        assert second.summary["run"]["stale_keys_deleted"] > 0
        g = second.guests
        assert g[g["t"] < 1.0]["tmem_put_failures"].sum() == 0 or g["tmem_puts"].sum() > 0
        assert g["tmem_puts"].sum() > 0  # not frozen by the earlier run
    finally:
        host.stop()
        shared.stop()


def test_drain_carries_a_stale_tmem_copy_to_disk_where_it_is_caught():
    def stale(runtime, fleet):
        g = runtime.models()[0]
        pages = _held_in_tmem_only(g)[:1]
        old = np.array([g.version[pages[0]] + 5], np.uint32)
        batch = make_batch(g.name, pages.astype(np.uint32), old, "digest", 4096, 0.5)
        fleet.host(g.host).client().hset(
            bucket_key(tmem_key("oc", g.name), int(pages[0])),
            page_field(int(pages[0])),
            encode(g.name, batch, "digest", 4096),
        )
        return pages

    hook, done = _inject_at(50, stale)
    extra = """events:
  - {at: 5.5s, tmem_flush: g-1}"""
    r = run_scenario(small(extra=extra), on_window=hook)
    assert done
    assert not r.valid
    assert r.summary["checks"]["integrity"]["violations"] > 0


def test_pool_counter_disagreeing_with_the_stored_records_makes_the_run_invalid():
    """A raw write into the host's Redis moves a guest's pool counter off what it holds: the
    `frontswap` check names it and the run is invalid (exit 3)."""
    from overcommit.stores.tmem import meta_key

    def bump(runtime, fleet):
        g = runtime.models()[0]
        fleet.host(g.host).client().hincrby(meta_key("oc"), f"n:{g.name}", 5)
        return g.name

    hook, done = _inject_at(40, bump)
    r = run_scenario(small(), on_window=hook)
    assert done
    assert not r.valid and r.exit_code == 3
    ev = " ".join(r.summary["checks"]["frontswap"]["evidence"])
    assert f"pool counter for {done[0]}" in ev


def test_a_put_accepted_while_frozen_is_caught():
    """Redis forgets a frozen client's flag (a raw HDEL), so its puts succeed while the host
    froze it: the `frontswap` check names them and the run is invalid."""
    from overcommit.stores.tmem import meta_key

    extra = """events:
  - {at: 2s, tmem_freeze: host-1}
  - {at: 6s, tmem_thaw: host-1}"""

    def unfreeze(runtime, fleet):
        raw = fleet.host("host-1").client()
        names = [g.name for g in runtime.models()]
        for n in names:
            raw.hdel(meta_key("oc"), f"frozen:{n}")
        return names

    hook, done = _inject_at(25, unfreeze)
    r = run_scenario(small(extra=extra), on_window=hook)
    assert done
    assert not r.valid and r.exit_code == 3
    ev = " ".join(r.summary["checks"]["frontswap"]["evidence"])
    assert "succeeded while frozen" in ev


@pytest.mark.parametrize("mechanism", ["none", "frontswap"])
def test_quiet_epoch_fast_path_gives_the_general_paths_results(mechanism, monkeypatch):
    """An epoch whose touches all hit RAM takes `_quiet_epoch`; forcing every epoch down the
    general path gives byte-identical results."""
    from overcommit.nodes.kernel.model import GuestModel

    sc = small(mechanism, swap="0MiB", **{"guests.0.workload.working_set": "40MiB"})
    taken = []

    def counting(quiet):
        def wrapper(self, *a, **k):
            taken.append(1)
            return quiet(self, *a, **k)

        return wrapper

    # the numpy path ends a quiet epoch in `_quiet_epoch`, the compiled one in `_quiet_applied`
    for name in ("_quiet_epoch", "_quiet_applied"):
        monkeypatch.setattr(GuestModel, name, counting(getattr(GuestModel, name)))
    fast = run_scenario(sc)
    assert len(taken) > 50  # the fast path ran
    monkeypatch.setattr(GuestModel, "_plain", lambda self: False)
    taken.clear()
    general = run_scenario(sc)
    assert not taken
    assert comparable(general.summary) == comparable(fast.summary)
    pd.testing.assert_frame_equal(general.guests, fast.guests)
    pd.testing.assert_frame_equal(general.hosts, fast.hosts)
    assert general.events == fast.events


def test_sigterm_inside_a_kernel_call_stops_the_run_as_sigterm(monkeypatch, tmp_path):
    """A signal that arrives while a compiled kernel is called (or compiled, on a cold
    cache) surfaces as a SystemError "returned a result with an exception set" caused by the
    handler's SystemExit: the run stops as on SIGTERM, keeping its complete epochs."""
    import json

    from overcommit.cluster.summary import signal_behind
    from overcommit.nodes.kernel import jit

    real, calls = jit.touch_pass, [0]

    def interrupted(*args):
        calls[0] += 1
        if calls[0] == 40:  # two guests: epoch 20, after the first windows
            try:
                raise SystemExit(143)  # what the SIGTERM handler raises
            except SystemExit as exc:
                raise SystemError(
                    "CPUDispatcher(<function touch_pass>) returned a result with an exception set"
                ) from exc
        return real(*args)

    monkeypatch.setattr(jit, "touch_pass", interrupted)
    with pytest.raises(SystemExit) as info:
        run_scenario(small(), out_dir=tmp_path / "run")
    assert info.value.code == 143
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "aborted"
    assert summary["reason"] == "interrupted by SIGTERM"
    assert summary["last_epoch"] >= 9
    plain = SystemError("a kernel's own bug")
    assert signal_behind(plain) is plain  # anything else stays an internal error


def test_sigint_dropped_inside_a_del_still_stops_the_run(tmp_path, monkeypatch):
    """Python runs a signal handler wherever the main thread is, also inside a `__del__`
    that garbage collection started, where its KeyboardInterrupt is printed and dropped (seen
    on a cold cache: a collection during kernel compilation). The run remembers the signal
    and stops at the next window as interrupted by SIGINT, keeping its complete epochs."""
    import json
    import os
    import signal
    import sys

    from overcommit.stores.launcher import install_signal_handlers, received_signal

    class SignalledOnCollection:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between these bytecodes
                pass

    def hook(epoch, runtime, fleet):
        if epoch == 10:
            SignalledOnCollection()  # collected at once: the SIGINT lands in its __del__

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install_signal_handlers()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_scenario(small(), out_dir=tmp_path / "run", on_window=hook)
        assert received_signal() is None  # handled: a later run in this process is not stopped
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
    assert dropped == [KeyboardInterrupt]  # the first raise was dropped
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "aborted"
    assert summary["reason"] == "interrupted by SIGINT"
    assert 9 <= summary["last_epoch"] < 20


def test_host_window_pickles_its_guests_blocks_stacked():
    """A host's report crosses processes with its guests' blocks and latency histograms as
    three stacked arrays (beside its own rows), and comes back with every guest's rows, carry
    and histogram as sent; the report pickled is left as it was."""
    import pickle

    from overcommit.cluster.runners import _FLOATS, _ROW, GuestWindow, HostWindow, _columns
    from overcommit.metrics import GUEST_COLUMNS

    n, k = 4, len(_ROW)
    guests = []
    for i in range(5):
        ints = [i * 10_000 + e * 100 + j for e in range(n) for j in range(k)]
        floats = [0.5 * i + 0.1 * e + f for e in range(n) for f in range(len(_FLOATS))]
        carry = None if i == 3 else {"counters": {"touches": i}, "hist": np.arange(8) * i}
        guests.append(GuestWindow(f"vm-{i}", *_columns(ints, floats, n), carry=carry))
    host = HostWindow("h", guests, {"free_pages": np.arange(n), "up": np.ones(n, np.int64)})
    before = {g.name: {c: g.rows[c].copy() for c in GUEST_COLUMNS} for g in guests}
    buffers: list = []
    sent = pickle.dumps(host, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 2 + 3  # the host's two rows; blocks, float blocks, histograms
    back = pickle.loads(sent, buffers=buffers)
    for g, b in zip(guests, back.guests):
        assert b.name == g.name and b.block.shape == g.block.shape
        assert all(np.array_equal(b.rows[c], before[g.name][c]) for c in GUEST_COLUMNS)
        assert np.array_equal(b.backed, g.backed)
        if g.carry is None:
            assert b.carry is None
        else:
            assert b.carry["counters"] == g.carry["counters"]
            assert np.array_equal(b.carry["hist"], g.carry["hist"])
        assert g.block is not None and (g.carry is None or g.carry["hist"] is not None)
    assert np.array_equal(back.rows["free_pages"], np.arange(n))
    assert back.guest_rows["touches"].shape == (5, n)


def test_window_columns_from_row_values_match_element_stores():
    """A window's columns, converted at once from its epochs' `_row` values, hold what a
    store of each value into its column would (a float value truncated as numpy does)."""
    import pickle

    from overcommit.cluster.runners import _FLOATS, _ROW, GuestWindow, _columns
    from overcommit.metrics import GUEST_COLUMNS

    n, k = 3, len(_ROW)
    for bad in (None, 2.7, -2.7, np.int64(5)):  # Python ints, then one other value
        ints = [e * 1000 + j for e in range(n) for j in range(k)]
        if bad is not None:
            ints[k + 5] = bad
        floats = [0.1 * e + f for e in range(n) for f in range(len(_FLOATS))]
        window = GuestWindow("vm", *_columns(ints, floats, n))
        rows, backed = window.rows, window.backed
        assert list(rows) == list(GUEST_COLUMNS)
        # across processes a window is its two blocks, not one array per column
        buffers: list = []
        sent = pickle.dumps(window, protocol=5, buffer_callback=buffers.append)
        assert len(buffers) == 2
        back = pickle.loads(sent, buffers=buffers)
        assert all(np.array_equal(back.rows[c], rows[c]) for c in GUEST_COLUMNS)
        for j, c in enumerate(_ROW[:-1]):
            want = np.zeros(n, np.int64)
            for e in range(n):
                want[e] = ints[e * k + j]
            assert rows[c].dtype == np.int64 and rows[c].tolist() == want.tolist(), c
        assert backed.tolist() == [ints[e * k + k - 1] for e in range(n)]
        for j, c in enumerate(_FLOATS):
            assert rows[c].dtype == np.float64
            assert rows[c].tolist() == [floats[e * len(_FLOATS) + j] for e in range(n)]
        if bad is not None:
            assert rows[_ROW[5]][1] == int(bad)
