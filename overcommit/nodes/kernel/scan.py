"""Reclaim orders: exact LRU (`OrderScan`, computed whole) and the clock (`ClockScan`,
computed lazily from the hand as far as the victim choice needs); `FirstScan` puts pages read
ahead and not yet touched before either."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from overcommit.nodes.kernel.types import _EI, RAM

if TYPE_CHECKING:
    from overcommit.nodes.kernel.model import GuestModel


class _OrderScan:
    """A reclaim order computed whole (exact LRU: it keeps no scan state).

    `whole`: the last `prefix` returned the whole order (always, here).
    """

    whole = True

    def __init__(self, order: np.ndarray) -> None:
        self.order = order
        self.total = len(order)

    def prefix(self, m: int) -> np.ndarray:
        """The order (a prefix of it at least `m` long, or all of it)."""
        return self.order

    def commit(self, page: int) -> None:
        """Nothing to record."""


class _ClockScan(_OrderScan):
    """The clock's reclaim order, computed lazily from the hand on.

    The order is every candidate whose referenced bit is clear, in sweep order (page indices
    from the hand up, wrapping at the footprint), then every referenced candidate in sweep
    order. `prefix(m)` scans the page table from the hand in chunks until it has `m`
    unreferenced candidates or has gone all the way round (then the order is `complete`,
    referenced pages included). A candidate is a resident page at or above `pinned_n` and not
    in `exclude` (sorted, distinct). Once complete, the referenced candidates are appended to
    the order only as far as a prefix asks (`whole` when all of them are in it): a full turn
    over a table whose pages are all referenced yields a long order of which reclaim takes
    the first few thousand.
    """

    def __init__(self, g: GuestModel, exclude: np.ndarray) -> None:
        self.g = g
        self.exclude = exclude
        self.n = g.N
        self.h = g.hand % g.N  # the hand (at N: sweeping starts again at page 0)
        self.pos = 0  # pages scanned, counted along the sweep from the hand
        self.chunks: list[tuple[int, int, np.ndarray]] = []  # (lo, hi, candidate mask)
        self.found: list[np.ndarray] = []  # unreferenced candidates of each chunk
        self.nfound = 0
        self.order = _EI
        self.complete = False  # the sweep went all the way round
        self.whole = False
        self._stale = False
        self._ref_at = (0, 0)  # (chunk, offset in it): where the referenced part stops
        self.total = g.N + 1  # beyond any prefix: asking for this much completes the scan

    def _scan_to(self, upto: int) -> None:
        """Scan the sweep positions [pos, upto), one page-index range at a time."""
        g, n, h = self.g, self.n, self.h
        ex = self.exclude
        while self.pos < upto:
            s0 = self.pos
            if s0 < n - h:  # from the hand up to the end of the footprint
                lo, hi = h + s0, h + min(upto, n - h)
            else:  # then from page 0 up to the hand
                lo, hi = s0 - (n - h), upto - (n - h)
            cm = g.loc[lo:hi] == RAM
            if lo < g.pinned_n:
                cm[: min(g.pinned_n, hi) - lo] = False
            a, b = ex.searchsorted(lo), ex.searchsorted(hi)
            if b > a:
                cm[ex[a:b] - lo] = False
            f = np.flatnonzero(cm & ~g.ref[lo:hi])
            if len(f):
                f += lo
                self.found.append(f)
                self.nfound += len(f)
            self.chunks.append((lo, hi, cm))
            self.pos += hi - lo
            self._stale = True

    def prefix(self, m: int) -> np.ndarray:
        """A prefix of the order at least `m` long (or the whole order)."""
        if not self.complete:
            while self.nfound < m and self.pos < self.n:
                density = self.nfound / self.pos if self.pos else 0.5
                step = int((m - self.nfound) / max(density, 0.02) * 1.25) + 4096
                self._scan_to(min(self.n, self.pos + step))
            self.complete = self.pos >= self.n
        if self.complete:  # all the way round: the referenced candidates follow
            self._referenced_to(m)
        if self._stale:
            self._stale = False
            parts = [p for p in self.found if len(p)]
            self.order = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else _EI)
        return self.order

    def _referenced_to(self, m: int) -> None:
        """Append the referenced candidates, in sweep order, until the order has `m` pages or
        all of them (`whole`); chunks are taken in slices sized by the candidates still
        wanted, so a short prefix reads a short stretch of the table."""
        ref, chunks = self.g.ref, self.chunks
        c, off = self._ref_at
        while self.nfound < m and c < len(chunks):
            lo, hi, cm = chunks[c]
            end = min(hi - lo, off + 2 * (m - self.nfound) + 4096)
            f = np.flatnonzero(cm[off:end] & ref[lo + off : lo + end])
            if len(f):
                f += lo + off
                self.found.append(f)
                self.nfound += len(f)
                self._stale = True
            c, off = (c + 1, 0) if end == hi - lo else (c, end)
        self._ref_at = (c, off)
        self.whole = c == len(chunks)

    def commit(self, page: int) -> None:
        """Record the sweep up to `page`, the victim furthest along the order: the candidates
        swept past lose their referenced bit (all of them when `page` was itself referenced:
        the sweep went all the way round) and the hand moves past `page`."""
        g, n, h = self.g, self.n, self.h
        ref = g.ref
        if ref[page]:  # in the referenced part: a full turn cleared every bit
            for lo, hi, cm in self.chunks:
                r = ref[lo:hi]
                r &= ~cm
        else:
            s_page = (page - h) % n
            for lo, hi, cm in self.chunks:
                s_lo = (lo - h) % n
                if s_lo > s_page:
                    break
                e = min(hi, lo + (s_page - s_lo) + 1)
                r = ref[lo:e]
                r &= ~cm[: e - lo]
        g.hand = page + 1


class _FirstScan(_OrderScan):
    """`first` (readahead pages not yet touched, like Linux's unreferenced inactive pages),
    then `inner`'s order without them."""

    def __init__(self, first: np.ndarray, inner: _OrderScan, flagged: np.ndarray) -> None:
        self.first = first
        self.inner = inner
        self.flagged = flagged  # the per-page flag of `first`'s pages
        self.total = len(first) + inner.total

    @property
    def whole(self) -> bool:  # type: ignore[override]
        return self.inner.whole

    def prefix(self, m: int) -> np.ndarray:
        """`first`, then at least `m` more pages of the inner order (or all of it)."""
        rest = self.inner.prefix(m)
        rest = rest[~self.flagged[rest]]
        return np.concatenate([self.first, rest])

    def commit(self, page: int) -> None:
        """The inner scan records up to `page` when the victims reached it."""
        if not self.flagged[page]:
            self.inner.commit(page)
