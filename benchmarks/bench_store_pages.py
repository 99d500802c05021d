"""Bytes per stored page in Redis, and swap reads through Lua against a plain HMGET.

Starts one real redis-server with the launcher (as a run does) and measures:

1. **Bytes per page** of a guest swap disk of `--disk-pages` pages in three layouts, read three
   ways: `MEMORY USAGE` of the keys, the growth of `used_memory` and of the server's RSS (`INFO
   memory`). Layouts: one hash per disk (a 4-byte field per page, a fixed-width record as value;
   the store's layout until its records moved to buckets), the same pages in hashes of 128
   pages each with a 1-byte field (a key per bucket), and the store's own layout, written
   through `SwapStoreOps.write` (hashes of 128 pages, 4-byte fields, and the disk's index),
   which Redis keeps in its compact encoding (ziplist/listpack: `hash-max-ziplist-entries` 128
   and `hash-max-ziplist-value` 64 are the defaults). Both payload modes; each layout on a
   fresh server (a server's RSS does not shrink when its data goes).
2. **Swap reads**: `--reads` pages per batch read from a disk of `--disk-pages` pages in the
   store's layout, `--batches` batches, through `swap_batch.lua` (one EVALSHA a batch, an HGET
   per page inside the script, flags and records concatenated) against one `HMGET` per bucket
   read (the plain path), the batches pipelined alike (one write, then the replies). Reported:
   pages/s on the client and the server's own microseconds per page (`INFO commandstats`),
   median of `--repeat` runs, order alternating; the records each path returns are checked
   equal.

    python benchmarks/bench_store_pages.py [--disk-pages N] [--reads R] [--batches B]

Prints Markdown; results are recorded in BENCHMARKS.md ("Scale: bench-1k").
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

from overcommit.stores.codec import encode, make_batch, page_offset, record_len  # noqa: E402
from overcommit.stores.launcher import RedisServer  # noqa: E402
from overcommit.stores.swap import SwapStoreOps, hset_command, swap_key  # noqa: E402
from overcommit.stores.tmem import (  # noqa: E402
    BUCKET_BITS,
    ScriptRunner,
    bucket_key,
    lua_source,
    pages_blob,
    run_sync,
)

GUEST = "vm-1"
PAGE_SIZE = 4096
BUCKET = 128


def info_memory(client) -> tuple[int, int]:
    m = client.info("memory")
    return int(m["used_memory"]), int(m["used_memory_rss"])


def fill(client, key: bytes, mode: str, pages: np.ndarray) -> None:
    width = record_len(GUEST, mode, PAGE_SIZE)
    off = page_offset(GUEST)
    for lo in range(0, len(pages), 4096):
        chunk = pages[lo : lo + 4096]
        rec = make_batch(GUEST, chunk, np.ones(len(chunk)), mode, PAGE_SIZE, 0.5)
        blob = encode(GUEST, rec, mode, PAGE_SIZE)
        conn = client.connection_pool.get_connection()
        try:
            conn.send_packed_command([hset_command(key, blob, width, off)])
            client.parse_response(conn, "HSET")
        finally:
            client.connection_pool.release(conn)


def fill_store(client, mode: str, pages: np.ndarray) -> None:
    """The pages written to disk `vm-1#0` through the store (posted writes of 4,096 pages)."""
    runner, ops = ScriptRunner(client), SwapStoreOps("bench")
    for lo in range(0, len(pages), 4096):
        chunk = pages[lo : lo + 4096]
        rec = make_batch(GUEST, chunk, np.ones(len(chunk)), mode, PAGE_SIZE, 0.5)
        run_sync(runner, ops.write("vm-1#0", GUEST, rec, mode, PAGE_SIZE))


def _stored(client, keys: list[bytes], n: int, u0: int, r0: int) -> dict:
    u1, r1 = info_memory(client)
    usage = sum(int(client.memory_usage(k, samples=0)) for k in keys)
    encoding = client.object("encoding", keys[0])
    return {
        "memory usage": usage / n,
        "used_memory": (u1 - u0) / n,
        "rss": (r1 - r0) / n,
        "encoding": encoding.decode() if isinstance(encoding, bytes) else str(encoding),
    }


def bytes_per_page(workdir: Path, mode: str, layout: str, n: int) -> dict:
    """Bytes per page of `n` pages in one layout, on a fresh server (RSS only grows)."""
    server = RedisServer.start(f"bpp-{mode}-{layout}", workdir)
    try:
        client = server.client()
        pages = np.arange(n, dtype=np.uint32)
        u0, r0 = info_memory(client)
        key = swap_key("bench", "vm-1#0").encode()
        if layout == "hash":
            fill(client, key, mode, pages)
            return _stored(client, [key], n, u0, r0)
        if layout == "store":
            fill_store(client, mode, pages)
            buckets = sorted({bucket_key(key.decode(), p).encode() for p in pages.tolist()})
            return _stored(client, [*buckets, key], n, u0, r0)
        width = record_len(GUEST, mode, PAGE_SIZE)
        keys = []
        for b in range(0, n, BUCKET):
            bk = key + b":%d" % (b // BUCKET)
            keys.append(bk)
            chunk = pages[b : b + BUCKET]
            rec = make_batch(GUEST, chunk, np.ones(len(chunk)), mode, PAGE_SIZE, 0.5)
            blob = encode(GUEST, rec, mode, PAGE_SIZE)
            fields = {
                bytes([p % BUCKET]): blob[i * width : (i + 1) * width]
                for i, p in enumerate(chunk.tolist())
            }
            client.hset(bk, mapping=fields)
        return _stored(client, keys, n, u0, r0)
    finally:
        server.stop()


def commandstats_usec(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items()}


def bench_reads(client, mode: str, n: int, reads: int, batches: int, repeat: int) -> dict:
    client.flushall()
    key = swap_key("bench", "vm-1#0")
    fill_store(client, mode, np.arange(n, dtype=np.uint32))
    rng = np.random.default_rng(1)
    sets = [np.sort(rng.choice(n, reads, replace=False)).astype(np.uint32) for _ in range(batches)]
    width, off = record_len(GUEST, mode, PAGE_SIZE), page_offset(GUEST)
    script = client.register_script(lua_source("swap_batch"))
    script(keys=(key,), args=("batch", b"", b"", b"", width, off))  # loaded
    sha = script.sha
    groups = []  # each batch's reads grouped by bucket: (bucket key, fields)
    for s in sets:  # sorted pages: their buckets come in ascending order
        by_bucket: dict[int, list[bytes]] = {}
        for p in s.tolist():
            by_bucket.setdefault(p >> BUCKET_BITS, []).append(p.to_bytes(4, "big"))
        groups.append([(f"{key}:{b}", fields) for b, fields in by_bucket.items()])

    def lua() -> list[bytes]:
        pipe = client.pipeline(transaction=False)
        for s in sets:
            pipe.evalsha(sha, 1, key, "batch", pages_blob(s), b"", b"", width, off)
        return [r[1] for r in pipe.execute()]

    def hmget() -> list[bytes]:  # reads are sorted: the buckets' replies are in read order
        pipe = client.pipeline(transaction=False)
        for g in groups:
            for bkey, f in g:
                pipe.hmget(bkey, f)
        replies = iter(pipe.execute())
        return [b"".join(v for _ in g for v in next(replies)) for g in groups]

    assert lua() == hmget(), "the two paths read different records"
    times = {"lua": [], "hmget": []}
    server = {"lua": [], "hmget": []}
    for rep in range(repeat):
        order = [("lua", lua), ("hmget", hmget)]
        for name, fn in order if rep % 2 == 0 else reversed(order):
            client.config_resetstat()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            st = commandstats_usec(client)
            server[name].append(st.get("evalsha", 0) if name == "lua" else st.get("hmget", 0))
    total = reads * batches
    client.flushall()
    return {
        name: (total / statistics.median(times[name]), statistics.median(server[name]) / total)
        for name in times
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--disk-pages", type=int, default=131072, help="pages on the disk")
    ap.add_argument("--reads", type=int, default=64, help="pages read per batch")
    ap.add_argument("--batches", type=int, default=2000, help="batches per measured pass")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="oc-bench-") as tmp:
        server = RedisServer.start("bench", Path(tmp))
        try:
            client = server.client()
            version = client.info("server")["redis_version"]
            alloc = client.info("memory")["mem_allocator"]
            print(f"command: python benchmarks/bench_store_pages.py {' '.join(sys.argv[1:])}")
            print(f"- redis-server {version} ({alloc}), {args.disk_pages} pages on the disk")
            print()
            print(
                "| mode (record) | layout | encoding | MEMORY USAGE B/page | used_memory B/page "
                "| RSS B/page |"
            )
            print("|---|---|---|---:|---:|---:|")
            for mode in ("digest", "full"):
                size = record_len(GUEST, mode, PAGE_SIZE)
                for layout in ("hash", "bucketed", "store"):
                    r = bytes_per_page(Path(tmp), mode, layout, args.disk_pages)
                    name = {
                        "hash": "one hash per disk",
                        "bucketed": f"{BUCKET} pages a hash, 1-byte field",
                        "store": "the store's (buckets of 128, 4-byte field, index)",
                    }[layout]
                    print(
                        f"| {mode} ({size} B) | {name} | {r['encoding']} "
                        f"| {r['memory usage']:.1f} | {r['used_memory']:.1f} | {r['rss']:.1f} |"
                    )
            print()
            print(
                f"Swap reads: {args.reads} pages a batch, {args.batches} batches pipelined, "
                f"median of {args.repeat}"
            )
            print()
            print("| mode | path | client pages/s | server µs/page | HMGET / Lua (client) |")
            print("|---|---|---:|---:|---:|")
            for mode in ("digest", "full"):
                r = bench_reads(
                    client, mode, args.disk_pages, args.reads, args.batches, args.repeat
                )
                for name in ("lua", "hmget"):
                    rate, us = r[name]
                    ratio = r["hmget"][0] / r["lua"][0]
                    print(
                        f"| {mode} | {'swap_batch.lua' if name == 'lua' else 'HMGET a bucket'} "
                        f"| {rate:,.0f} | {us:.3f} | {ratio:.2f}x |"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
