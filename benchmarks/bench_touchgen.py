"""CPU cost of a workload's touch generation per call: µs per `Workload.touches` call.

A guest of `configs/bench-1k.yaml` draws about 500 touches an epoch (zipf working set 640 MiB
of 4 KiB pages, `distribution: power`, skew 0.99, 5k touches/s over 100 ms epochs, 30%
writes), so what a call costs whatever its size dominates. This script times
`Workload.touches` for that guest (and the same guest under the exact Zipf law, the default)
in one process, with the compiled touch arithmetic (`generators.JIT`, the default) and with
the numpy path (`OVERCOMMIT_JIT=0`, the reference), in interleaved rounds on fresh streams of
the same key; each figure is the process CPU time of the best round (the machine is shared).
Both paths must give the same pages and write flags (compared over every call of the first
round).

    python benchmarks/bench_touchgen.py              # defaults: --calls 2000 --rounds 15
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from overcommit.workloads import generators  # noqa: E402
from overcommit.workloads.generators import Phase, TouchStreams, Workload  # noqa: E402

WS = 640 * 1024 // 4  # pages of 4 KiB in 640 MiB
RATE, DT, WRITES, SKEW = 5000.0, 0.1, 0.3, 0.99


def _workload(law: str) -> Workload:
    return Workload(WS, [Phase(math.inf, WS, RATE, WRITES, SKEW, distribution=law)], False, 0.5)


def _round(wl: Workload, jit: bool, calls: int, keep: list | None) -> tuple[float, int]:
    """CPU seconds per call over `calls` calls on fresh streams, and the touches drawn."""
    generators.JIT = jit
    streams = TouchStreams(1, "vm-7", 0, "workload/0")
    touches = 0
    t0 = time.process_time()
    for e in range(calls):
        pages, writes = wl.touches(streams, e * DT, DT)
        touches += len(pages)
        if keep is not None:
            keep.append((pages, writes))
    return (time.process_time() - t0) / calls, touches


def measure(law: str, calls: int, rounds: int) -> dict:
    wl = _workload(law)
    got: dict[bool, list] = {True: [], False: []}
    best = {True: math.inf, False: math.inf}
    touches = 0
    for r in range(rounds + 1):  # round 0 warms up (and compiles) and keeps the touches
        for jit in (True, False):
            s, touches = _round(wl, jit, calls, got[jit] if r == 0 else None)
            if r:
                best[jit] = min(best[jit], s)
    same = all(
        np.array_equal(pa, pb) and np.array_equal(wa, wb)
        for (pa, wa), (pb, wb) in zip(got[True], got[False], strict=True)
    )
    return {"jit": best[True] * 1e6, "numpy": best[False] * 1e6, "n": touches / calls, "same": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls (epochs) a round")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds of each path")
    a = ap.parse_args()
    if os.environ.get("OVERCOMMIT_JIT", "1") == "0":
        sys.exit("run without OVERCOMMIT_JIT=0: the script times both paths itself")
    res = {law: measure(law, a.calls, a.rounds) for law in ("power", "zipf")}
    print(
        f"bench-1k guest workload: {WS:,} pages, skew {SKEW}, {RATE:.0f} touches/s, "
        f"{DT * 1000:.0f} ms epochs, {WRITES:.0%} writes; {a.calls} calls x {a.rounds} rounds, "
        f"best round; nproc {os.cpu_count()}"
    )
    print()
    print("| touch generation µs per call | touches/call | compiled | numpy path | ratio |")
    print("|---|---:|---:|---:|---:|")
    for law, r in res.items():
        print(
            f"| `distribution: {law}` | {r['n']:.0f} | {r['jit']:.1f} | {r['numpy']:.1f} | "
            f"{r['numpy'] / r['jit']:.2f}x |"
        )
    same = all(r["same"] for r in res.values())
    print()
    print(f"same pages and write flags on both paths: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
