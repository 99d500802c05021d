"""Emulation speed of configs/bench-4x8.yaml in the three placements, measured in one run.

Runs the fixed benchmark scenario inline, on Ray with guests packed into host actors, and on
Ray with one actor per guest, one after another in this process, and prints a Markdown table:
emulated seconds per wall second for each placement, its ratio to `inline` measured in the same
run, epochs per actor call, and whether the three summaries agree (they must: same config and
seed). Ray start-up is outside the timed part (a local Ray is started first and shared); the
run's own set-up (Redis servers, actors created) is inside it, and is also shown apart, with
the rate of the epochs alone (emulated seconds per wall second after set-up).

    python benchmarks/bench_placements.py [--duration 10m] [--only inline,packed,actors]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from overcommit.cluster.engine import run_scenario  # noqa: E402
from overcommit.config import apply_overrides, load_scenario  # noqa: E402

PLACEMENTS = {
    "inline": {"runtime.kind": "inline"},
    "packed": {"runtime.kind": "ray", "runtime.guests": "packed"},
    "actors": {"runtime.kind": "ray", "runtime.guests": "actors"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "bench-4x8.yaml"))
    ap.add_argument("--duration", default=None, help="override the emulated duration")
    ap.add_argument("--only", default="inline,packed,actors")
    args = ap.parse_args()
    base = load_scenario(args.config)
    if args.duration:
        base = apply_overrides(base, {"duration": args.duration})
    names = [n for n in args.only.split(",") if n]
    if any(n != "inline" for n in names):
        import ray

        from overcommit.cluster.ray_runtime import quiet_ray

        quiet_ray()  # no raylet warnings on the console
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = {}
    summaries = {}
    for name in names:
        sc = apply_overrides(base, PLACEMENTS[name])
        t0 = time.perf_counter()
        last = [t0]

        def progress(
            t: float, total: float, info: dict, name: str = name, last: list = last
        ) -> None:
            now = time.perf_counter()
            if now - last[0] > 30:
                print(f"  {name}: {t:.0f}/{total:.0f} emulated s", file=sys.stderr)
                last[0] = now

        result = run_scenario(sc, progress=progress)
        wall = time.perf_counter() - t0
        rows[name] = (result.summary["emulated_seconds"], wall, result.summary["run"])
        summaries[name] = {k: v for k, v in result.summary.items() if k != "run"}
        print(f"{name}: {wall:.1f} s wall", file=sys.stderr)
    agree = all(s == next(iter(summaries.values())) for s in summaries.values())
    base_rate = rows["inline"][0] / rows["inline"][1] if "inline" in rows else None
    print(f"\nbench-4x8, {base.duration:g} emulated s; {platform.node()}, nproc {os.cpu_count()}")
    print(
        "\n| placement | wall s | set-up s | emulated s / wall s | ratio to inline "
        "| epochs alone: emulated s / wall s | epochs per call |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (emulated, wall, run) in rows.items():
        rate = emulated / wall
        setup = run["setup_seconds"]
        ratio = f"{rate / base_rate:.2f}x" if base_rate else "n/a"
        print(
            f"| {name} | {wall:.1f} | {setup:.1f} | {rate:.2f}x | {ratio} "
            f"| {emulated / (wall - setup):.2f}x | {run['epochs_per_call']:g} |"
        )
    print(f"\nsummaries identical across placements: {agree}")


if __name__ == "__main__":
    main()
