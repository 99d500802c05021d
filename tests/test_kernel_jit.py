"""The paging core's compiled kernels (`overcommit/nodes/kernel/jit.py`) against the numpy
they replace: each kernel on random inputs, and whole scenarios run on the numpy path
(`jit.ENABLED` off, as `OVERCOMMIT_JIT=0` does) giving the golden outputs the kernels give."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from overcommit.nodes.host import F_HSWAP
from overcommit.nodes.kernel import jit
from overcommit.nodes.kernel.types import (
    FILE,
    FRONTSWAP,
    NLOC,
    NO_SLOT,
    RAM,
    SWAP,
    UNTOUCHED,
    _counts,
    _unique,
)

_spec = importlib.util.spec_from_file_location(
    "overcommit_golden", Path(__file__).parent / "golden" / "golden.py"
)
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


@pytest.mark.parametrize("n", [0, 1, 5, 47, 48, 2000, 20000])
@pytest.mark.parametrize("nbits", [1, 7, 20, 33])
def test_sorted_is_a_sort(n: int, nbits: int) -> None:
    rng = np.random.default_rng(n * 100 + nbits)
    a = rng.integers(0, 1 << nbits, n, dtype=np.int64)
    assert np.array_equal(jit._sorted(a, nbits), np.sort(a))


def _touch_pass(*args):
    """`jit.touch_pass` into fresh buffers: (applied, uniq, loc_u, wp, wc, top, n_zero, new,
    fresh, hits), the distinct pages and written ones as arrays of their own."""
    out = jit.touch_buffers(len(args[0]) + 5)  # longer than needed: the lengths come back
    applied, nu, m, *rest = jit.touch_pass(*args, *out)
    return (applied, out[0][:nu], out[1][:nu], out[2][:m], out[3][:m], *rest)


@pytest.mark.parametrize("count", [0, 1, 23, 47, 48, 3000])
@pytest.mark.parametrize("nbits", [1, 13, 21])
def test_touch_pass_pages_and_writes_match_numpy(count: int, nbits: int) -> None:
    """The one sort of (page, write) keys gives the distinct pages and the written ones with
    their counts as numpy's unique does, up to the largest page index of `nbits` bits."""
    rng = np.random.default_rng(count * 31 + nbits)
    n = 1 << nbits
    pages = rng.integers(max(0, n - 40), n, count, dtype=np.int64)  # near the top bits
    pages[: count // 2] = rng.integers(0, n, count // 2)
    writes = rng.random(count) < 0.4
    loc = rng.integers(0, 6, n).astype(np.int8)
    slot = np.zeros(n, np.int8)
    flags = np.zeros(n, bool)
    applied, uniq, loc_u, wp, wc, top, n_zero, *_ = _touch_pass(
        pages, writes, nbits, loc, slot, False, 0, 0, 0, 0, flags, np.zeros(n, np.uint32),
        np.zeros(0, np.int32), np.zeros(n, np.int32), np.zeros(0, np.int32),
        np.zeros(0, np.int8), True, np.zeros(n, np.int32), flags.copy(), flags.copy(), 1, 0,
        True,
    )  # fmt: skip
    assert not applied
    assert np.array_equal(uniq, np.unique(pages)) and np.array_equal(loc_u, loc[uniq])
    want_wp, want_wc = np.unique(pages[writes], return_counts=True)
    assert np.array_equal(wp, want_wp) and np.array_equal(wc, want_wc)
    assert top == (int(loc_u.max()) if count else 0)
    assert n_zero == int(np.count_nonzero(loc_u == 0))


def test_touch_pass_matches_numpy_and_applies_a_quiet_epoch_only_when_quiet() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    pages = rng.integers(0, n, 3000, dtype=np.int64)
    writes = rng.random(3000) < 0.3
    loc = rng.integers(0, 2, n).astype(np.int8)  # untouched or resident
    slot = np.zeros(n, np.int8)
    nf = n
    args = dict(
        dirty=np.zeros(n, bool),
        version=np.zeros(n, np.uint32),
        free_stack=np.arange(nf, dtype=np.int32),
        frame=np.full(n, -1, np.int32),
        fpage=np.full(nf, -1, np.int64),
        state=np.zeros(nf, np.int8),
        full=False,
        last=np.zeros(n, np.int64),
        ref=np.zeros(n, bool),
        ra=np.zeros(n, bool),
        stamp=5,
        window_start=4,
        check_ra=False,
    )

    def call(quiet: bool, free_top: int):
        return _touch_pass(pages, writes, 13, loc, slot, quiet, free_top, 10, 20, 5, *args.values())

    applied, uniq, loc_u, wp, wc, top, n_zero, *_ = call(False, nf)
    assert not applied
    assert np.array_equal(uniq, _unique(pages)) and np.array_equal(loc_u, loc[uniq])
    want_wp, want_wc = _counts(pages[writes])
    assert np.array_equal(wp, want_wp) and np.array_equal(wc, want_wc)
    assert top == 1 and n_zero == int(np.count_nonzero(loc_u == 0))
    assert not args["dirty"].any()  # nothing applied
    # too few free frames: reclaim is wanted, so not quiet
    assert not call(True, n_zero)[0] and not args["dirty"].any()
    zero = uniq[loc_u == 0]
    applied, *_, new, fresh, hits = call(True, nf)
    assert applied and new == len(zero) and fresh == len(uniq) and hits == 0
    assert (loc[zero] == 1).all() and args["dirty"][zero].all() and args["dirty"][wp].all()
    assert np.array_equal(args["version"][wp], wc.astype(np.uint32))
    assert np.array_equal(args["frame"][zero], np.arange(nf - 1, nf - 1 - len(zero), -1))
    assert (args["last"][uniq] == 5).all() and args["ref"][uniq].all()


def test_adjacent_matches_numpy() -> None:
    rng = np.random.default_rng(5)
    cases = [np.empty(0, np.int64), np.array([7]), np.array([3, 4]), np.array([3, 5, 9])]
    cases += [np.unique(rng.integers(0, n, k)) for n, k in ((100, 5), (40, 12), (10**6, 50))]
    seen = set()
    for a in cases:
        want = len(a) > 1 and bool((np.diff(a) == 1).any())
        assert jit.adjacent(a.astype(np.int64)) == want
        seen.add(want)
    assert seen == {True, False}


def test_set_kernels_match_numpy() -> None:
    rng = np.random.default_rng(3)
    a = np.unique(rng.integers(0, 1000, 300))
    b = np.unique(rng.integers(0, 1000, 300))
    assert np.array_equal(jit.sorted_diff(a, b), np.setdiff1d(a, b, assume_unique=True))
    shuffled = rng.permutation(a)
    assert np.array_equal(
        jit.sorted_diff(shuffled, b), np.setdiff1d(shuffled, b, assume_unique=True)
    )
    for pages in (a, shuffled):
        _, want = np.unique(pages // 8, return_counts=True)
        assert np.array_equal(jit.cluster_counts(pages, 8), want)
    loc = rng.integers(0, 6, 1000).astype(np.int8)
    zero, fs, z, sw, fnew, ffile = jit.split_faults(a, loc[a], 800)
    assert np.array_equal(zero, a[(loc[a] == 0) & (a < 800)])
    assert np.array_equal(fnew, a[(loc[a] == 0) & (a >= 800)])
    for got, k in ((fs, 2), (sw, 3), (z, 4), (ffile, 5)):
        assert np.array_equal(got, a[loc[a] == k])
    clusters, reads = jit.swap_reads(sw, 4, 1000, loc)
    want_c = np.unique(sw // 4)
    want_r = (want_c[:, None] * 4 + np.arange(4)).ravel()
    assert np.array_equal(clusters, want_c)
    assert np.array_equal(reads, want_r[loc[want_r] == 3])
    for n in (0, 1, 257):  # frontswap's puts by outcome and reclaim kind
        ok, sync = rng.random(n) < 0.6, rng.random(n) < 0.3
        want = np.bincount(ok.view(np.uint8) * 2 + sync.view(np.uint8), minlength=4)
        assert [int(c) for c in jit.pair_counts(ok, sync)] == want.tolist()


@pytest.mark.parametrize("swap_full", [False, True])
def test_slots_freed_matches_numpy(swap_full: bool) -> None:
    rng = np.random.default_rng(11)
    slot = rng.integers(0, 5, 2000).astype(np.int8)

    def pick(k: int) -> np.ndarray:
        return np.unique(rng.integers(0, 2000, k))

    wp, f_fs, f_sw, f_z, extra = pick(300), pick(50), pick(60), pick(40), pick(30)
    taken = f_fs[::2]
    want = wp[slot[wp] != 0]
    if swap_full:
        want = np.union1d(want, np.union1d(np.union1d(f_fs, f_sw), f_z))
    want = np.union1d(want, extra)
    want = want[~np.isin(want, taken)]
    free, fs, sw, z = jit.slots_freed(wp, slot, swap_full, f_fs, f_sw, f_z, extra, taken)
    assert np.array_equal(free, want)
    for got, k in ((fs, 2), (sw, 3), (z, 4)):
        assert np.array_equal(got, want[slot[want] == k])


@pytest.mark.parametrize(
    "case_id",
    [
        "peaks-and-valleys:page-sharing+balloon+zswap+host-swap",
        "peaks-and-valleys:zram",
        "cleancache:own",
        "quickstart:frontswap/exact-lru",
    ],
)
def test_numpy_path_gives_the_golden_outputs(
    case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = {golden.case_id(*c): c for c in golden.cases()}
    want = json.loads(golden.GOLDEN.read_text())[case_id]
    monkeypatch.setattr(jit, "ENABLED", False)
    got = golden.run_case(*cases[case_id], tmp_path / "run")
    assert {k: got[k] for k in want} == want


# ---------------------------------------------------------------------------------------------
# the conservation checks: the kernels' full audit against the numpy path, page table by table

AUDITED = """
name: audited
duration: 10s
epoch: 100ms
page_size: 4KiB
mechanism: frontswap
hosts: {ram: 1GiB}
guests:
  - name: vm
    memory: 32MiB
    maxmem: 48MiB
    swap: 64MiB
    workload: {kind: zipf, working_set: 48MiB, access_rate: 40k/s, write_fraction: 0.3}
"""


@pytest.fixture(scope="module")
def filled_guest(redis_fleet):
    """A frontswap guest whose RAM filled and overflowed into its tmem quota and its swap
    disk (real Redis stores), every check holding."""
    from overcommit.cluster.runners import GuestRunner
    from overcommit.cluster.runtime import SyncExecutor, build_guest, drive
    from overcommit.config import load_scenario_text
    from overcommit.nodes.host import Directives
    from overcommit.profiles import DeviceQueue, device_profiles

    sc = load_scenario_text(AUDITED, "audited.yaml")
    g = build_guest(sc, sc.guest_specs()[0], "host-a")
    execute = SyncExecutor(
        {"host-a": redis_fleet.host("host-a").client()},
        redis_fleet.shared.client(),
        "audit",
        sc.payload,
        sc.page_size,
    )
    device = DeviceQueue(device_profiles(None)["ssd"], users=1)
    runner = GuestRunner(g)
    d = Directives(tmem_quota=1500, tmem_capacity=1500)
    for e0 in range(0, 60, 10):
        out = drive(runner.window(e0, e0 + 10, sc.epoch, device, d), execute)
        assert not out.violations, out.violations
    assert g.census[RAM] > 0 and g.census[FRONTSWAP] > 0 and g.census[SWAP] > 0
    assert g.free_top > 0
    return g


def both_paths(g, monkeypatch) -> list[str]:
    """The full audit's messages, which the kernels and the numpy path must agree on."""
    kernels = g._recount_jit()
    reference = g._recount_numpy()
    assert kernels == reference
    assert g._frame_audit_jit() == g._frame_audit_numpy()
    full = {}
    for on in (True, False):
        monkeypatch.setattr(jit, "ENABLED", on)
        full[on] = g.conservation(full=True)
    assert full[True] == full[False]
    return kernels


def _resident(g, k: int = 2) -> list[int]:
    return [int(p) for p in np.flatnonzero(g.loc == RAM)[-k:]]


def _corrupt_frame_twice(g):
    p1, p2 = _resident(g)
    g.frame[p2] = g.frame[p1]


def _corrupt_used_and_free(g):
    (p,) = _resident(g, 1)
    g.free_stack[g.free_top] = g.frame[p]
    g.free_top += 1


def _corrupt_free_twice(g):
    g.free_stack[0] = g.free_stack[1]  # and frame free_stack[0] is lost


def _corrupt_frame_map(g):
    p1, p2 = _resident(g)
    f1, f2 = g.frame[p1], g.frame[p2]
    g.fpage[f1], g.fpage[f2] = p2, p1


def _corrupt_page_ledger(g):
    g.census[RAM] += 1
    g.census[UNTOUCHED] -= 1


def _corrupt_slot_ledger(g):
    g.slot_census[SWAP] += 1
    g.slot_census[NO_SLOT] -= 1


def _corrupt_wrong_slot(g):
    p = int(np.flatnonzero(g.loc == SWAP)[0])
    g.slot[p] = FRONTSWAP  # the slot ledger moved with it: only the kind is wrong
    g.slot_census[SWAP] -= 1
    g.slot_census[FRONTSWAP] += 1


def _corrupt_pinned(g):
    g.pinned_n = int(np.flatnonzero(g.loc != RAM)[0]) + 1


def _corrupt_merged_count(g):
    g.frames.merged_count += 1


def _corrupt_merged_not_resident(g):
    f = int(g.free_stack[0])
    g.frames.state[f] = F_HSWAP
    g.frames.hswapped_count += 1
    g.frames.backed_count -= 1
    if len(g.frames.mkey) == 0:  # a frontswap guest keeps no merge keys: as page sharing would
        g.frames.mkey = np.zeros(len(g.frames.state), np.uint64)
    g.frames.mkey[f] = 7
    g.frames.merged_count += 1


def _corrupt_host_counters(g):
    g.frames.backed_count += 1


def _corrupt_anonymous_dropped(g):
    p = int(np.flatnonzero(g.loc == UNTOUCHED)[0])
    g.loc[p] = FILE
    g.census[UNTOUCHED] -= 1
    g.census[FILE] += 1


def _corrupt_frameless_resident(g):
    (p,) = _resident(g, 1)
    f = g.frame[p]
    g.frame[p] = -1
    g.fpage[f] = -1
    g.free_stack[g.free_top] = f
    g.free_top += 1


@pytest.mark.parametrize(
    ("corrupt", "expect"),
    [
        (_corrupt_frame_twice, "a frame is used twice, or both used and free"),
        (_corrupt_used_and_free, "a frame is used twice, or both used and free"),
        (_corrupt_free_twice, "a frame is used twice, or both used and free"),
        (_corrupt_frame_map, "the frame-to-page map disagrees with the page table"),
        (_corrupt_page_ledger, "page ledger ["),
        (_corrupt_slot_ledger, "slot ledger ["),
        (_corrupt_wrong_slot, "a swapped page holds no slot of its kind"),
        (_corrupt_pinned, "a pinned page left RAM"),
        (_corrupt_merged_count, "merged frame counter disagrees with the frames"),
        (_corrupt_merged_not_resident, "a merged frame is not resident"),
        (_corrupt_host_counters, "host frame counters disagree with the frames' states"),
        (_corrupt_anonymous_dropped, "an anonymous page was dropped, or a file page swapped"),
        (_corrupt_frameless_resident, "pages have a frame, "),
    ],
)
def test_full_audit_kernels_catch_each_corruption_as_numpy_does(
    filled_guest, monkeypatch, corrupt, expect
):
    g = copy.deepcopy(filled_guest)
    assert both_paths(g, monkeypatch) == []
    corrupt(g)
    found = both_paths(g, monkeypatch)
    assert any(expect in m for m in found), found
    assert all(m.startswith("vm: ") for m in found)


def test_full_audit_kernels_agree_with_numpy_on_random_corruptions(filled_guest, monkeypatch):
    """Random writes into the tables the full audit reads: the same messages, or the same
    error where the numpy path indexes outside a table."""
    rng = np.random.default_rng(11)
    tables = ("loc", "slot", "frame", "fpage", "free_stack", "zp_stack", "balloon_stack")
    tables = [t for t in tables if len(getattr(filled_guest, t))]  # a frontswap guest: no stacks
    flagged = 0
    for _ in range(150):
        g = copy.deepcopy(filled_guest)
        for _ in range(int(rng.integers(1, 4))):
            name = tables[int(rng.integers(len(tables)))]
            a = getattr(g, name)
            live = g.free_top + 2 if name == "free_stack" else len(a)  # mostly the stack
            i = int(rng.integers(min(live, len(a))))
            if name in ("loc", "slot"):
                a[i] = rng.integers(0, NLOC)
            else:
                a[i] = a[int(rng.integers(len(a)))] if rng.random() < 0.8 else -1
            if rng.random() < 0.2:
                g.free_top += int(rng.integers(-2, 3))
        try:
            want = g._recount_numpy()
        except IndexError:
            with pytest.raises(IndexError):
                g._recount_jit()
            continue
        assert g._recount_jit() == want
        assert g._frame_audit_jit() == g._frame_audit_numpy()
        flagged += bool(want)
    assert flagged > 50  # most corruptions are caught


def test_per_epoch_check_messages(filled_guest):
    """The per-epoch ledger check builds its messages only when a sum is off, and they read
    as they always did."""
    g = copy.deepcopy(filled_guest)
    assert g.conservation() == []
    g.census[SWAP] += 1
    g.free_top -= 1
    g.slots_used += 1
    g.tmem_pages += 1
    c, sc = g.census, g.slot_census
    ds = int(sc[FRONTSWAP] + sc[SWAP])
    assert g.conservation() == [
        f"vm: the page ledger does not partition the footprint: {c}",
        f"vm: resident {c[RAM]}, free frames {g.free_top}, balloon 0, pool 0, frames {g.nframes}",
        f"vm: swap slots counted {g.slots_used}+0, held {ds}+0, devices have {g.swap_slots}+0",
        f"vm: guest holds {int(sc[FRONTSWAP])} frontswap pages, host pool reports {g.tmem_pages}",
    ]
    g.tmem_pages = g.maxmem_pages
    assert g.conservation()[-1] == (
        f"vm: RAM {g.alloc_pages} + tmem {g.tmem_billed} pages above maxmem {g.maxmem_pages}"
    )


def test_page_tables_stay_fields_of_one_record_through_copies_and_pickles(filled_guest):
    """A guest's per-page tables are views of its page records (one cache line a page for
    the touch loops), and a copy or an unpickled guest (an actor's) has records of its own
    holding the same values, with every check holding."""
    import pickle

    from overcommit.nodes.kernel.types import PAGE_RECORD

    g = filled_guest
    assert g.pages_rec.dtype == PAGE_RECORD and PAGE_RECORD.itemsize == 12
    for k in PAGE_RECORD.names:
        assert getattr(g, k).base is g.pages_rec
    for c in (copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        for k in PAGE_RECORD.names:
            a = getattr(c, k)
            assert a.base is c.pages_rec and not np.shares_memory(a, g.pages_rec)
            assert a.dtype == getattr(g, k).dtype and np.array_equal(a, getattr(g, k))
        assert c.conservation(full=True) == []
        c.loc[_resident(c, 1)] = SWAP  # a write through a table lands in the record
        assert c.pages_rec["loc"][_resident(g, 1)] == SWAP
