"""Throughput of the tmem store path against a plain redis-py pipeline on the same server.

Starts one real redis-server with the launcher and measures pages/s of ``TmemPool.batch``
puts and gets (one Lua call per batch, records encoded and decoded with numpy) against a
baseline of pipelined plain HSET / HGET of the same encoded records with the same batch size
(records pre-split outside the timed loop, replies not decoded: the baseline's best case).
Both payload modes: ``digest`` and ``full`` (4 KiB pages). If ``redis-benchmark`` is on PATH,
also reports its pipelined SET rate for the same value size.

    python benchmarks/bench_tmem.py [--pages N] [--batch B] [--repeat R]

Prints a Markdown table; results are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from overcommit.stores.codec import PayloadMode, encode, make_batch, record_len  # noqa: E402
from overcommit.stores.launcher import RedisServer, find_redis_server  # noqa: E402
from overcommit.stores.tmem import TmemPool, page_field  # noqa: E402

GUEST = "web-1"
PAGE_SIZE = 4096
COMPRESSIBILITY = 0.5
UNLIMITED = 2**40


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_mode(
    client: redis.Redis, mode: PayloadMode, pages: int, batch: int, repeat: int
) -> dict[str, tuple[float, float]]:
    """{op: (tmem pages/s, baseline pages/s)}, medians over ``repeat`` runs."""
    chunks = [
        np.arange(lo, min(lo + batch, pages), dtype=np.uint32) for lo in range(0, pages, batch)
    ]
    records = [
        make_batch(GUEST, c, np.ones(len(c)), mode, PAGE_SIZE, COMPRESSIBILITY) for c in chunks
    ]
    width = record_len(GUEST, mode, PAGE_SIZE)
    plain = []  # the baseline's per-page (field, value) pairs, prepared outside the timing
    for rec in records:
        blob = encode(GUEST, rec, mode, PAGE_SIZE)
        plain.append(
            [
                (page_field(p), blob[i * width : (i + 1) * width])
                for i, p in enumerate(rec.pages.tolist())
            ]
        )
    pool = TmemPool(client, prefix="bench")
    key = "bench:plain"
    kw = dict(quota=UNLIMITED, capacity=UNLIMITED, mode=mode, page_size=PAGE_SIZE)

    def tmem_put() -> None:
        for rec in records:
            assert pool.batch(GUEST, puts=rec, **kw).put_ok.all()

    def tmem_get() -> None:
        for c in chunks:
            assert pool.batch(GUEST, gets=c, **kw).found.all()

    def plain_put() -> None:
        for pairs in plain:
            pipe = client.pipeline(transaction=False)
            for field, value in pairs:
                pipe.hset(key, field, value)
            pipe.execute()

    def plain_get() -> None:
        for pairs in plain:
            pipe = client.pipeline(transaction=False)
            for field, _ in pairs:
                pipe.hget(key, field)
            assert all(pipe.execute())

    client.flushall()
    for warm_up in (tmem_put, plain_put, tmem_get, plain_get):  # grow the server's heap once
        warm_up()
    runs: dict[str, list[float]] = {k: [] for k in ("tp", "bp", "tg", "bg")}
    for rep in range(repeat):  # each put into an empty store; who goes first alternates
        client.flushall()
        for pair in ([("tp", tmem_put), ("bp", plain_put)], [("tg", tmem_get), ("bg", plain_get)]):
            for name, fn in pair if rep % 2 == 0 else reversed(pair):
                runs[name].append(timed(fn))
    client.flushall()
    rate = {k: pages / statistics.median(v) for k, v in runs.items()}
    return {"put": (rate["tp"], rate["bp"]), "get": (rate["tg"], rate["bg"])}


def redis_benchmark_set(server: RedisServer, value_size: int) -> str:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return "absent (redis-benchmark not on PATH)"
    out = subprocess.run(
        [
            exe,
            "-s",
            str(server.socket_path),
            "-a",
            server.password,
            "-t",
            "set",
            "-P",
            "32",
            "-d",
            str(value_size),
            "-n",
            "200000",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    ).stdout
    m = re.search(r"SET: ([\d.]+) requests per second", out)
    return f"{float(m[1]):,.0f} SET/s" if m else f"unparsed output: {out.strip()[:200]!r}"


def machine() -> list[str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[2]
    return [
        f"- machine: nproc {os.cpu_count()}, CPU {cpu}, {platform.system()} {platform.release()}",
        f"- redis-server {version.removeprefix('v=')} (unix socket), redis-py {redis.__version__},"
        f" Python {platform.python_version()}, numpy {np.__version__}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=32768, help="pages per measured pass")
    ap.add_argument("--batch", type=int, default=256, help="pages per batch / pipeline")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="oc-bench-") as tmp:
        server = RedisServer.start("bench", Path(tmp))
        try:
            client = server.client()
            print(f"command: python benchmarks/bench_tmem.py {' '.join(sys.argv[1:])}".rstrip())
            print(*machine(), sep="\n")
            print(
                f"- {args.pages} pages per pass, batch {args.batch}, median of {args.repeat} "
                "runs after a warm-up pass, order alternating"
            )
            print()
            print(
                "| mode (record size) | op | tmem pages/s | baseline pages/s | tmem / baseline "
                "| tmem record MB/s |"
            )
            print("|---|---|---:|---:|---:|---:|")
            sizes = {}
            for mode in ("digest", "full"):
                sizes[mode] = record_len(GUEST, mode, PAGE_SIZE)
                result = bench_mode(client, mode, args.pages, args.batch, args.repeat)
                for op, (tmem, base) in result.items():
                    print(
                        f"| {mode} ({sizes[mode]} B) | {op} | {tmem:,.0f} | {base:,.0f} "
                        f"| {tmem / base:.2f}x | {tmem * sizes[mode] / 1e6:,.0f} |"
                    )
            print()
            for mode, size in sizes.items():
                print(
                    f"- redis-benchmark -P 32, {size}-byte values ({mode}): "
                    f"{redis_benchmark_set(server, size)}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
