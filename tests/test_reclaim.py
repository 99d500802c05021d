"""Reclaim victim choice: the lazily scanned clock order decides what the whole order would.

The reference below computes the clock's whole order (unreferenced candidates in sweep order
from the hand, then referenced ones) and the victims from it, as the model did before it
scanned only a prefix; the model must choose the same victims, flags, referenced bits and hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from overcommit.nodes.guest import NO_SLOT, RAM, SWAP, GuestModel, _member


def _whole_order(g, want, exclude):
    """The candidates, coldest first, and the commit of the scan (whole arrays)."""
    mask = g.loc == RAM
    mask[: g.pinned_n] = False
    mask[exclude] = False
    cand = np.flatnonzero(mask)
    if len(cand) == 0:
        return cand, None
    if g.spec.lru == "lru":
        key = g.last[cand] * g.N + cand
        if len(cand) > 2 * want:
            part = np.argpartition(key, 2 * want - 1)[: 2 * want]
            cand, key = cand[part], key[part]
        return cand[np.argsort(key)], None
    start = int(np.searchsorted(cand, g.hand))
    sweep = np.concatenate([cand[start:], cand[:start]])
    refd = g.ref[sweep]
    first = np.flatnonzero(~refd)
    order = np.concatenate([sweep[first], sweep[refd]])
    pos = np.concatenate([first, np.flatnonzero(refd)])

    def commit(victims):
        taken = np.flatnonzero(np.isin(order, victims))
        if len(taken) == 0:
            return
        last = int(taken[-1])
        if last >= len(first):  # a full sweep cleared every bit
            g.ref[sweep] = False
            g.hand = int(order[last]) + 1
            return
        stop = int(pos[last])
        g.ref[sweep[: stop + 1]] = False
        g.hand = int(sweep[stop]) + 1

    return order, commit


def _whole_order_victims(g, want, uniq, loc_u, pin_to, wset, free, need, async_want, room, budget):
    # pages read ahead and not touched since come first, in page order (kernel.readahead)
    first = np.flatnonzero(g.ra & (g.loc == RAM))
    first = first[(first >= g.pinned_n) & ~np.isin(first, uniq)]
    order, commit = _whole_order(g, want, np.union1d(uniq, first))
    order = np.concatenate([first, order])
    if free + len(order) < need:
        order = np.concatenate([order, uniq[(loc_u == RAM) & (uniq >= max(g.pinned_n, pin_to))]])
    written = _member(order, wset)
    slotless = g.slot[order] == NO_SLOT
    clean = ~slotless & ~g.dirty[order] & ~written
    new_slot = slotless | written
    ok = ~new_slot | (np.cumsum(new_slot) <= room)
    order, clean = order[ok], clean[ok]
    if budget < 0:
        async_pick = np.arange(min(async_want, len(order)))
    else:
        fits = clean | (np.cumsum(~clean) <= budget)
        async_pick = np.flatnonzero(fits)[:async_want]
    is_async = np.zeros(len(order), bool)
    is_async[async_pick] = True
    rest = np.flatnonzero(~is_async)
    direct_n = max(0, g.wm_min + need - free - len(async_pick))
    take = np.sort(np.concatenate([async_pick, rest[:direct_n]]))
    if commit is not None:
        victims = order[take]
        commit(victims[~g.ra[victims]])
    return order[take], is_async[take], clean[take]


def _guest(rng: np.random.Generator, lru: str) -> SimpleNamespace:
    n = int(rng.choice([40, 300, 5000, 60000]))
    loc = np.where(rng.random(n) < rng.random(), RAM, rng.choice([0, 2, 3], n)).astype(np.int8)
    pinned = int(rng.integers(0, n // 3 + 1)) if rng.random() < 0.3 else 0
    ra = (loc == RAM) & (rng.random(n) < 0.1) if rng.random() < 0.5 else np.zeros(n, bool)
    g = SimpleNamespace(
        ra=ra,
        ra_n=int(np.count_nonzero(ra)),
        N=n,
        spec=SimpleNamespace(lru=lru),
        loc=loc,
        ref=rng.random(n) < rng.random(),
        slot=np.where(rng.random(n) < 0.5, NO_SLOT, SWAP).astype(np.int8),
        dirty=rng.random(n) < 0.5,
        last=rng.integers(0, 1000, n),
        pinned_n=pinned,
        hand=int(rng.integers(0, n + 1)),
        has_files=False,
        file_lo=n,
        wm_min=int(rng.integers(1, 20)),
    )
    g._policy_order = lambda k, exclude: GuestModel._policy_order(g, k, exclude)
    return g


@pytest.mark.parametrize("seed", range(6))
def test_clock_prefix_chooses_what_the_whole_order_would(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        g = _guest(rng, "lru" if rng.random() < 0.2 else "clock")
        uniq = np.unique(rng.integers(0, g.N, int(rng.integers(0, min(g.N, 3000)))))
        loc_u = g.loc[uniq]
        wset = uniq[rng.random(len(uniq)) < 0.3]
        resident = int(np.count_nonzero(g.loc == RAM))
        want = int(rng.integers(1, max(2, int(resident * rng.choice([0.01, 0.1, 1.2])) + 2)))
        free = int(rng.integers(0, 50))
        need = int(rng.integers(0, want + 50 if rng.random() < 0.8 else resident + 100))
        async_want = int(rng.integers(0, want + 1))
        room = int(rng.integers(0, 2 * want + 10)) if rng.random() < 0.5 else 10**9
        budget = -1 if rng.random() < 0.5 else int(rng.integers(0, want + 10))
        args = (want, uniq, loc_u, g.pinned_n, wset, free, need, async_want, room, budget)
        ref = SimpleNamespace(**{**vars(g), "ref": g.ref.copy()})
        expect = _whole_order_victims(ref, *args)
        scan = GuestModel._reclaim_order(g, want, uniq)
        got = GuestModel._pick_victims(g, scan, *args)
        for e, o in zip(expect, got):
            assert e.dtype == o.dtype and np.array_equal(e, o)
        assert np.array_equal(ref.ref, g.ref) and ref.hand == g.hand
