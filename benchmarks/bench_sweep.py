"""Sweep throughput: a 16-run sweep as parallel Ray actors against the same runs one after
another in this process, measured in one script.

The sweep is configs/quickstart.yaml (one host, frontswap) with its duration cut to
`--duration` (default 20s), over `guests.0.count=1,2,3,4` x mechanisms `none,frontswap` x 2
seeds = 16 runs. The sequential baseline runs the same plan in this process (the code path a
Ray actor runs: `overcommit.capacity.execute_run`, its own Redis servers per run); the parallel
path is `overcommit sweep`'s (`run_sweep`, a pool of `--parallel` Ray actors). Ray start-up is
timed separately and outside both measurements (a local Ray is started first). Prints a Markdown
table with both wall times, the speed-up, and whether the two give the same rows.

    python benchmarks/bench_sweep.py [--duration 20s] [--parallel N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from overcommit.capacity import plan_sweep, run_sweep, start_ray  # noqa: E402
from overcommit.config import apply_overrides, load_scenario  # noqa: E402

SKIP = {"key", "dir", "wall_seconds"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--duration", default="20s")
    ap.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    base = apply_overrides(load_scenario(args.config), {"duration": args.duration})
    plan = plan_sweep(base, {"guests.0.count": [1, 2, 3, 4]}, ["none", "frontswap"], seeds=2)
    assert len(plan.runs) == 16
    t0 = time.perf_counter()
    start_ray(num_cpus=max(args.parallel, os.cpu_count() or 1))
    ray_start = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        seq = run_sweep(plan, Path(tmp) / "sequential", use_ray=False)
        seq_wall = time.perf_counter() - t0
        print(f"sequential: {seq_wall:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        par = run_sweep(plan, Path(tmp) / "parallel", parallel=args.parallel)
        par_wall = time.perf_counter() - t0
        print(f"parallel: {par_wall:.1f} s", file=sys.stderr)
    cols = [c for c in seq.rows.columns if c not in SKIP]
    same = seq.rows[cols].equals(par.rows[cols])
    run_wall = seq.rows["wall_seconds"].sum()
    print(
        f"\n16-run sweep of {Path(args.config).name}, {base.duration:g} emulated s per run; "
        f"{platform.node()}, nproc {os.cpu_count()}, --parallel {args.parallel}; "
        f"Ray start-up {ray_start:.1f} s (not timed below)"
    )
    print("\n| path | wall s | runs/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| one after another, in one process | {seq_wall:.1f} | {16 / seq_wall:.2f} | 1.00x |")
    print(
        f"| Ray actors, {args.parallel} at a time | {par_wall:.1f} | {16 / par_wall:.2f} | "
        f"{seq_wall / par_wall:.2f}x |"
    )
    print(f"\nsum of the runs' own wall time (sequential): {run_wall:.1f} s")
    print(f"rows identical (apart from keys' directories and wall times): {same}")


if __name__ == "__main__":
    main()
