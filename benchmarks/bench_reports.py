"""What a host's window report costs to cross processes: blocks against one array per column.

A packed host actor returns, each sync window, one `GuestWindow` per guest; Ray pickles it
(protocol 5, numpy arrays as out-of-band buffers) in the actor and unpickles it in the driver.
A window's time series now travel as two blocks (`GuestWindow.block`, `fblock`); before, as a
dict of one array per column (37 arrays, each a buffer of its own). This script builds 64
guests' reports for a 10-epoch window from real `_row`-shaped values and times, in one process,
the pickle and unpickle round trip of both forms (interleaved rounds, best of each), and
checks that both carry the same values.

    python benchmarks/bench_reports.py            # ~10 s; --guests 64 --epochs 10 --rounds 7
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _windows(guests: int, epochs: int):
    from overcommit.cluster.runners import _FLOATS, _ROW, GuestWindow, _columns

    rng = np.random.default_rng(1)
    out = []
    for i in range(guests):
        ints = rng.integers(0, 200_000, epochs * len(_ROW)).tolist()
        floats = rng.random(epochs * len(_FLOATS)).tolist()
        out.append(GuestWindow(f"vm-{i}", *_columns(ints, floats, epochs)))
    return out


class _PerColumn:
    """A report as it was: the columns as a dict of arrays (views of the window's blocks)."""

    def __init__(self, w) -> None:
        self.name = w.name
        self.rows = dict(w.rows)
        self.backed = w.backed
        self.violations, self.events = w.violations, w.events


def _round_trip(reports: list, repeat: int) -> tuple[float, int, list]:
    """Seconds per round trip of the whole host's reports, buffers sent, what came back."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        buffers: list = []
        blob = pickle.dumps(reports, protocol=5, buffer_callback=buffers.append)
        back = pickle.loads(blob, buffers=[b.raw() for b in buffers])
    return (time.perf_counter() - t0) / repeat, len(buffers), back


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guests", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=50)
    a = ap.parse_args()
    blocks = _windows(a.guests, a.epochs)
    columns = [_PerColumn(w) for w in blocks]
    best = {"blocks": float("inf"), "columns": float("inf")}
    sent = {}
    for _ in range(a.rounds):
        for name, reports in (("blocks", blocks), ("columns", columns)):
            s, n, back = _round_trip(reports, a.repeat)
            best[name] = min(best[name], s)
            sent[name] = n
            for w, b in zip(blocks, back, strict=True):
                if any(not np.array_equal(w.rows[c], b.rows[c]) for c in w.rows):
                    sys.exit(f"{name}: a report came back with other values")
    per = {k: v / a.guests * 1e6 for k, v in best.items()}
    print(
        f"{a.guests} guests x {a.epochs} epochs, pickle protocol 5 round trip, best of {a.rounds}"
    )
    print()
    print("| report form | buffers a host window | µs per guest-window |")
    print("|---|---:|---:|")
    print(f"| one array per column (before) | {sent['columns']} | {per['columns']:.1f} |")
    print(f"| two blocks (now) | {sent['blocks']} | {per['blocks']:.1f} |")
    print(f"\nratio: {per['columns'] / per['blocks']:.2f}x; same values: yes")


if __name__ == "__main__":
    main()
