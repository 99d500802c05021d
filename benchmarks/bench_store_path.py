"""Bytes per record and Redis CPU of the tmem pool and swap disk stores, through their API.

Starts one real redis-server with the launcher (as a run does) and drives it only through the
stores' public operations (`TmemPool.batch`, `SwapStore.batch`, the posted
`SwapStoreOps.write`), so the same script measures any layout the stores use:

1. **Bytes per record**: `--records` digest records put into one guest's tmem pool (batches of
   256 pages) and written to one swap disk (posted writes of 256 pages), each on a fresh
   server: the growth of `used_memory` per record.
2. **CPU**: on one server, a tmem pool of `--records` pages, then `--batches` batches of 64
   random gets and 64 random puts (a pool at steady state), and a swap disk of `--records`
   pages, then `--batches` batches of 64 reads and 64 frees (the plain path) followed by a
   posted write of the 64 freed pages back. Reported: the client's pages/s and the server's
   CPU microseconds per page (`used_cpu_user + used_cpu_sys` of `INFO cpu`), median of
   `--repeat` runs.

    python benchmarks/bench_store_path.py [--records N] [--batches B] [--repeat R]

Prints Markdown; results are recorded in BENCHMARKS.md ("Bytes per emulated page").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from overcommit.stores.codec import make_batch  # noqa: E402
from overcommit.stores.launcher import RedisServer  # noqa: E402
from overcommit.stores.swap import SwapStore, SwapStoreOps  # noqa: E402
from overcommit.stores.tmem import ScriptRunner, TmemPool, run_sync  # noqa: E402

GUEST = "vm-1"
DISK = "vm-1#0"
PS = 4096
MODE = "digest"
BIG = 10**9
CHUNK = 256


def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


def cpu_seconds(client) -> float:
    c = client.info("cpu")
    return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])


def fill_pool(pool: TmemPool, pages: np.ndarray, version: int = 1) -> None:
    for lo in range(0, len(pages), CHUNK):
        chunk = pages[lo : lo + CHUNK]
        recs = make_batch(GUEST, chunk, np.full(len(chunk), version), MODE, PS, 0.5)
        pool.batch(GUEST, puts=recs, quota=BIG, capacity=BIG, mode=MODE, page_size=PS)


def fill_disk(client, pages: np.ndarray, version: int = 1) -> None:
    runner, ops = ScriptRunner(client), SwapStoreOps("oc")
    for lo in range(0, len(pages), CHUNK):
        chunk = pages[lo : lo + CHUNK]
        recs = make_batch(GUEST, chunk, np.full(len(chunk), version), MODE, PS, 0.5)
        run_sync(runner, ops.write(DISK, GUEST, recs, MODE, PS))


def bytes_per_record(workdir: Path, store: str, n: int) -> float:
    server = RedisServer.start(f"bpr-{store}", workdir)
    try:
        client = server.client()
        pages = np.random.default_rng(7).permutation(n).astype(np.uint32)
        u0 = used_memory(client)
        if store == "tmem":
            fill_pool(TmemPool(client, "oc"), pages)
        else:
            fill_disk(client, pages)
        return (used_memory(client) - u0) / n
    finally:
        server.stop()


def tmem_pass(pool: TmemPool, n: int, batches: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        gets = rng.choice(n, 64, replace=False).astype(np.uint32)
        puts = rng.choice(n, 64, replace=False).astype(np.uint32)
        recs = make_batch(GUEST, puts, np.full(64, 2), MODE, PS, 0.5)
        pool.batch(GUEST, gets=gets, puts=recs, quota=BIG, capacity=BIG, mode=MODE, page_size=PS)
    return 128 * batches


def swap_pass(client, store: SwapStore, n: int, batches: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    runner, ops = ScriptRunner(client), SwapStoreOps("oc")
    for _ in range(batches):
        reads = rng.choice(n, 64, replace=False).astype(np.uint32)
        frees = rng.choice(n, 64, replace=False).astype(np.uint32)
        r = store.batch(DISK, GUEST, reads=reads, frees=frees, mode=MODE, page_size=PS)
        assert r.found.all()
        recs = make_batch(GUEST, frees, np.full(64, 2), MODE, PS, 0.5)
        run_sync(runner, ops.write(DISK, GUEST, recs, MODE, PS))
    return 192 * batches


def measure(client, fn, *args) -> tuple[float, float]:
    c0, t0 = cpu_seconds(client), time.perf_counter()
    pages = fn(*args)
    t1, c1 = time.perf_counter(), cpu_seconds(client)
    return pages / (t1 - t0), (c1 - c0) * 1e6 / pages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20000, help="records in the pool / on disk")
    ap.add_argument("--batches", type=int, default=2000, help="batches per measured pass")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    args = ap.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory(prefix="oc-bench-") as tmp:
        print(f"command: python benchmarks/bench_store_path.py {' '.join(sys.argv[1:])}")
        print()
        print("| store | used_memory B/record |")
        print("|---|---:|")
        for store in ("tmem", "swap"):
            print(f"| {store} | {bytes_per_record(Path(tmp), store, n):.1f} |")
        server = RedisServer.start("bench", Path(tmp))
        try:
            client = server.client()
            pool = TmemPool(client, "oc")
            fill_pool(pool, np.arange(n, dtype=np.uint32))
            swap = SwapStore(client, "oc")
            fill_disk(client, np.arange(n, dtype=np.uint32))
            runs: dict[str, list[tuple[float, float]]] = {"tmem": [], "swap": []}
            for rep in range(args.repeat):
                runs["tmem"].append(measure(client, tmem_pass, pool, n, args.batches, rep))
                runs["swap"].append(measure(client, swap_pass, client, swap, n, args.batches, rep))
        finally:
            server.stop()
    print()
    print(f"{args.batches} batches a pass, median of {args.repeat} passes:")
    print()
    print("| store | batch | client pages/s | server CPU µs/page |")
    print("|---|---|---:|---:|")
    what = {"tmem": "64 gets + 64 puts", "swap": "64 reads + 64 frees, 64 posted writes"}
    for store, r in runs.items():
        rate = statistics.median(x[0] for x in r)
        cpu = statistics.median(x[1] for x in r)
        print(f"| {store} | {what[store]} | {rate:,.0f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
