"""Swap readahead as Linux does it: pages read ahead enter unreferenced and are reclaimed
first until touched, and the window adapts to how many of them are used.

A page read ahead of a fault (not the faulting page) is flagged `g.ra` until the workload
touches it (a readahead *hit*) or reclaim takes it untouched (a *miss*); flagged pages are the
first reclaim candidates under either LRU approximation (`scan.FirstScan`). They are clean and
keep their swap slot (the swap cache), so evicting one costs no I/O.

The window (`g.ra_window`, pages read per disk fault, an aligned cluster) follows Linux's
`__swapin_nr_pages` (mm/swap_state.c). Per fault, Linux takes the readahead hits since the
previous fault: the window is `hits + 2` rounded up to a power of two (at least 4); with no
hits it is 1, or 2 when the fault is next to the previous one (a sequential stream gets a
chance to grow); never more than the configured `readahead`, and never less than half the
previous window (it does not shrink too fast). An epoch has one window for all its disk
faults: the average of Linux's per-fault windows with the hits since the last window spread
evenly over the epoch's faults (each fault sees `hits // faults` when there are at least as
many hits as faults; otherwise one fault in every `faults / hits` sees a hit and the window
halves over the faults between, down to 1 or 2), rounded to a whole number of pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from overcommit.nodes.kernel import jit
from overcommit.nodes.kernel.types import RAM

if TYPE_CHECKING:
    from overcommit.nodes.kernel.model import GuestModel


def _linux_pages(hits: int, base: int, cap: int) -> int:
    """`__swapin_nr_pages` for one fault after `hits` readahead hits (before the floor of
    half the previous window): `hits + 2` rounded up to a power of two (at least 4), or
    `base` (1, or 2 after an adjacent fault) with no hits; at most `cap`."""
    if hits == 0:
        return min(base, cap)
    pages = 4
    while pages < hits + 2:
        pages <<= 1
    return min(pages, cap)


def window(g: GuestModel, f_sw: np.ndarray) -> int:
    """The readahead window for this epoch's disk faults `f_sw` (sorted, distinct)."""
    cap = g.readahead
    if cap <= 1 or len(f_sw) == 0:
        return max(1, min(cap, g.ra_window))
    c, hits = len(f_sw), g.ra_hits_since
    g.ra_hits_since = 0
    near = jit.adjacent(f_sw) if jit.ENABLED else c > 1 and bool((np.diff(f_sw) == 1).any())
    base = 2 if near else 1
    floor = g.ra_window // 2
    if hits >= c or hits == 0:  # every fault saw hits / c of them, or none saw any
        pages = max(_linux_pages(hits // c, base, cap), floor, 1)
    else:  # one fault in every c / hits saw a hit; the others let the window decay
        span = c / hits
        w = max(_linux_pages(1, base, cap), floor)
        total, steps = float(w), 1
        while steps < span and w > base:
            w = max(base, w // 2)
            total += w
            steps += 1
        total += base * max(0.0, span - steps)
        pages = max(1, round(total / span))
    g.ra_window = pages
    return pages


def brought_in(g: GuestModel, extra: np.ndarray) -> None:
    """Pages read ahead (not faulted) are resident now: flag them."""
    if len(extra):
        g.ra[extra] = True
        g.ra_n += len(extra)


def touched(g: GuestModel, uniq: np.ndarray) -> None:
    """The workload touched `uniq`: flagged pages among them are readahead hits."""
    if g.ra_n and len(uniq):
        hit = uniq[g.ra[uniq]]
        if len(hit):
            g.ra[hit] = False
            g.ra_n -= len(hit)
            g.ra_hits_since += len(hit)
            g.counters["readahead_hits"] += len(hit)


def evicted(g: GuestModel, victims: np.ndarray) -> None:
    """Reclaim took `victims`: flagged pages among them were read ahead for nothing."""
    if g.ra_n and len(victims):
        miss = victims[g.ra[victims]]
        if len(miss):
            g.ra[miss] = False
            g.ra_n -= len(miss)
            g.counters["readahead_misses"] += len(miss)


def first(g: GuestModel, exclude: np.ndarray) -> np.ndarray:
    """Reclaim candidates read ahead and not yet touched (resident, unpinned, not in
    `exclude`), in page order."""
    if not g.ra_n:
        return np.empty(0, np.int64)
    cand = np.flatnonzero(g.ra)
    cand = cand[(cand >= g.pinned_n) & (g.loc[cand] == RAM)]
    if len(exclude) and len(cand):
        at = np.minimum(exclude.searchsorted(cand), len(exclude) - 1)
        cand = cand[exclude[at] != cand]
    return cand
