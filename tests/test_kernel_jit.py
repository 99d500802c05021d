"""The paging core's compiled kernels (`overcommit/nodes/kernel/jit.py`) against the numpy
they replace: each kernel on random inputs, and whole scenarios run on the numpy path
(`jit.ENABLED` off, as `OVERCOMMIT_JIT=0` does) giving the golden outputs the kernels give."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from overcommit.nodes.kernel import jit
from overcommit.nodes.kernel.types import _counts, _unique

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
        return jit.touch_pass(
            pages, writes, 13, loc, slot, quiet, free_top, 10, 20, 5, *args.values()
        )

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
