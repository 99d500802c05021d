"""Emulation speed of configs/bench-4x8.yaml in the three placements, measured in one run.

Runs the fixed benchmark scenario inline, on Ray with guests packed into host actors, and on
Ray with one actor per guest, one after another in this process, and prints a Markdown table:
emulated seconds per wall second for each placement, its ratio to `inline` measured in the same
run, epochs per actor call, and whether the three summaries agree (they must: same config and
seed). Ray start-up is outside the timed part (a local Ray is started first and shared); the
run's own set-up (Redis servers, actors created) is inside it, and is also shown apart, with
the rate of the epochs alone (emulated seconds per wall second after set-up).

Memory, per placement: the model's bytes per emulated page (the array bytes a guest model
allocates per page of its workload's footprint, from the preflight estimate), Redis's bytes per
stored page (the growth of `used_memory` over every server of the run divided by the page
records they hold, sampled during the run), and the peak resident memory of the whole process
tree (this process, Ray's processes and workers, every redis-server; summed RSS sampled every
0.5 s by `benchmarks/memtree.py`) beside the preflight estimate of it.

`--bench-1k` runs the scale scenario `configs/bench-1k.yaml` (1,024 guests, Ray with packed
host actors) instead; with a `--duration` shorter than its 5 minutes, its host failure moves to
the middle of the run.

    python benchmarks/bench_placements.py [--duration 10m] [--only inline,packed,actors]
    python benchmarks/bench_placements.py --bench-1k [--duration 60s] [--only packed,grouped]

`packed` runs one host per actor process (`runtime.hosts_per_actor: 1`); `grouped` is packed
with `--hosts-per-actor` hosts (default 4; `auto`, the scenarios' default layout, spreads the
hosts over as many processes as Ray has CPUs) sharing each actor process
(`runtime.hosts_per_actor`): fewer Ray worker processes, each with its base of Ray, numba and
the loaded kernels. Beside the summed RSS the memory table gives the summed PSS (shared library
pages counted once over the processes sharing them).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from memtree import TreeSampler  # noqa: E402

from overcommit.cluster.engine import preflight, run_scenario  # noqa: E402
from overcommit.config import apply_overrides, load_scenario  # noqa: E402

PLACEMENTS = {
    "inline": {"runtime.kind": "inline"},
    # one host per actor process (`runtime.hosts_per_actor: 1`; the default, `auto`, groups
    # hosts when the CPUs are fewer)
    "packed": {"runtime.kind": "ray", "runtime.guests": "packed", "runtime.hosts_per_actor": 1},
    "actors": {"runtime.kind": "ray", "runtime.guests": "actors"},
    # packed, several hosts per actor process (`--hosts-per-actor`)
    "grouped": {"runtime.kind": "ray", "runtime.guests": "packed"},
}


def _hash_lengths(c: redis.Redis, keys: list[bytes], chunk: int = 10_000) -> int:
    """The summed `HLEN` of `keys`, pipelined in chunks."""
    total = 0
    for lo in range(0, len(keys), chunk):
        pipe = c.pipeline(transaction=False)
        for k in keys[lo : lo + chunk]:
            pipe.hlen(k)
        total += sum(pipe.execute())
    return total


class RedisPages:
    """Samples, during a run (its `on_window` hook), every Redis server's `used_memory` and the
    page records the run's hashes hold, to give Redis's bytes per stored page."""

    def __init__(self, prefix: str, every: int) -> None:
        self.prefix = prefix
        self.every = max(1, every)
        self.windows = 0
        self.base: dict[str, int] = {}
        self.last: tuple[int, int] | None = None  # (bytes above the servers' base, records)

    def urls(self, runtime, fleet) -> list[str]:
        infos = getattr(runtime, "infos", None)
        if infos is not None:  # Ray: each host actor runs its own server
            hosts = [i["redis_url"] for i in infos.values() if i.get("redis_url")]
        else:
            hosts = [s.url for s in fleet.servers()[:-1]]
        return [*hosts, fleet.shared.url]

    def __call__(self, epoch: int, runtime, fleet) -> None:
        self.windows += 1
        first = not self.base
        if not first and self.windows % self.every:
            return
        used = records = 0
        for url in self.urls(runtime, fleet):
            try:
                c = redis.Redis.from_url(url, socket_timeout=10)
                mem = int(c.info("memory")["used_memory"])
                if first:
                    self.base[url] = mem
                    continue
                keys = [  # SCAN's TYPE filter: no round trip per key
                    k
                    for k in c.scan_iter(match=f"{self.prefix}:*", count=10_000, _type="hash")
                    if not k.endswith(b":meta")
                ]
                # a bucketed pool's or disk's index (`{key}` beside its `{key}:{bucket}`
                # hashes) lists buckets, not records
                heads = {k.rsplit(b":", 1)[0] for k in keys if k.rsplit(b":", 1)[-1].isdigit()}
                keys = [k for k in keys if k not in heads]
                records += _hash_lengths(c, keys)
                used += mem - self.base.get(url, mem)
                c.close()
            except redis.RedisError:  # a failed host's server is gone
                continue
        if not first and records:
            self.last = (used, records)

    @property
    def bytes_per_page(self) -> float | None:
        return None if self.last is None else self.last[0] / self.last[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "bench-4x8.yaml"))
    ap.add_argument("--duration", default=None, help="override the emulated duration")
    ap.add_argument("--only", default=None, help="placements (default inline,packed,actors)")
    ap.add_argument(
        "--bench-1k", action="store_true", help="run configs/bench-1k.yaml (packed) instead"
    )
    ap.add_argument(
        "--hosts-per-actor",
        default="4",
        help="hosts per actor process of `grouped` (a number, or auto: the default layout)",
    )
    args = ap.parse_args()
    if args.bench_1k:
        args.config = str(ROOT / "configs" / "bench-1k.yaml")
    if args.only is None:
        args.only = "packed" if args.bench_1k else "inline,packed,actors"
    base = load_scenario(args.config)
    if args.duration:
        from overcommit.units import parse_duration

        seconds = parse_duration(args.duration)
        late = {
            f"events.{i}.at": seconds / 2 for i, ev in enumerate(base.events) if ev.at >= seconds
        }
        base = apply_overrides(base, {"duration": args.duration, **late})
    names = [n for n in args.only.split(",") if n]
    if any(n != "inline" for n in names):
        import ray

        from overcommit.cluster.ray_runtime import quiet_ray

        quiet_ray()  # no raylet warnings on the console
        # a new local Ray: without address="local", ray.init joins any cluster this machine runs
        ray.init(
            address="local", include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    rows = {}
    summaries = {}
    for name in names:
        sc = apply_overrides(base, PLACEMENTS[name])
        if name == "grouped":
            sc = apply_overrides(sc, {"runtime.hosts_per_actor": args.hosts_per_actor})
        estimate = preflight(sc)
        print(f"{name}: {estimate.line()}", file=sys.stderr)
        t0 = time.perf_counter()
        last = [t0]

        def progress(
            t: float, total: float, info: dict, name: str = name, last: list = last
        ) -> None:
            now = time.perf_counter()
            if now - last[0] > 30:
                print(f"  {name}: {t:.0f}/{total:.0f} emulated s", file=sys.stderr)
                last[0] = now

        windows = int(round(sc.duration / sc.sync_window))
        pages = RedisPages(sc.redis.prefix, every=windows // 4)
        with TreeSampler(interval=0.5) as tree:
            result = run_scenario(sc, progress=progress, on_window=pages)
        wall = time.perf_counter() - t0
        rows[name] = (result.summary["emulated_seconds"], wall, result.summary["run"])
        rows[name] += (estimate, pages.bytes_per_page, tree, result.summary["valid"])
        summaries[name] = {k: v for k, v in result.summary.items() if k != "run"}
        print(f"{name}: {wall:.1f} s wall", file=sys.stderr)
    agree = all(s == next(iter(summaries.values())) for s in summaries.values())
    base_rate = rows["inline"][0] / rows["inline"][1] if "inline" in rows else None
    print(f"\n{base.name}, {base.duration:g} emulated s; {platform.node()}, nproc {os.cpu_count()}")
    print(
        "\n| placement | wall s | set-up s | emulated s / wall s | ratio to inline "
        "| epochs alone: emulated s / wall s | epochs per call | valid |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, (emulated, wall, run, *_rest) in rows.items():
        rate = emulated / wall
        setup = run["setup_seconds"]
        ratio = f"{rate / base_rate:.2f}x" if base_rate else "n/a"
        print(
            f"| {name} | {wall:.1f} | {setup:.1f} | {rate:.2f}x | {ratio} "
            f"| {emulated / (wall - setup):.2f}x | {run['epochs_per_call']:g} | {_rest[-1]} |"
        )
    print(
        "\n| placement | model B / emulated page | Redis B / stored page | peak RSS, whole tree "
        "| by process kind | preflight estimate | peak PSS, whole tree |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    gib = 2**30
    for name, (_e, _w, _r, estimate, redis_bpp, tree, _valid) in rows.items():
        kinds = ", ".join(
            f"{k} {v / gib:.2f} GiB ({tree.peak_counts.get(k, 0)})"
            for k, v in sorted(tree.peak_parts.items())
        )
        rb = "n/a (no records)" if redis_bpp is None else f"{redis_bpp:.0f}"
        print(
            f"| {name} | {estimate.model_bytes_per_page:.1f} | {rb} | {tree.peak / gib:.2f} GiB "
            f"| {kinds} | {estimate.total / gib:.2f} GiB | {tree.peak_pss / gib:.2f} GiB |"
        )
    print("\n| placement | CPU seconds by process kind (whole tree, sampled) |")
    print("|---|---|")
    for name, (_e, _w, _r, _est, _rb, tree, _valid) in rows.items():
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in sorted(tree.cpu_seconds.items()))
        print(f"| {name} | {cpu} |")
        for pid, cmd in sorted(tree.others.items()):
            print(f"  other: {pid} {cmd}", file=sys.stderr)
    print(f"\nsummaries identical across placements: {agree}")


if __name__ == "__main__":
    main()
