"""CPU cost of the guest paging core alone: ns per emulated page touch, µs per guest-epoch.

One guest of `configs/bench-4x8.yaml` (2 GiB RAM, Zipf working set 2.5 GiB at 20k touches/s,
30% writes, frontswap) runs its epochs in this process with no Redis and no Ray: an in-memory
tmem pool and swap disk (numpy arrays indexed by page, with the semantics and order of
`tmem_batch.lua` and `swap_batch.lua`: gets, flushes, puts under the quota; reads, frees,
writes) answer the requests its epochs yield. The guest fills its RAM, then reclaims into its
tmem quota (`--quota` pages) until it is full and to the swap disk after, and faults back, as
a bench-4x8 guest does.

- **core ns/touch**: process CPU time of the epochs, minus the time in the in-memory stores
  and the CPU time of the workload's touch generation (the same calls replayed on fresh
  streams afterwards), per touch; also reported with the touch generation in it.
- **cluster core ns/touch**: the same figure for `--guests` copies of that guest taken at
  epoch 3,000 (its RAM just full), each with its own stores, stepped epoch by epoch in turn
  for `--cluster-epochs` epochs, as a host steps its guests (bench-4x8 has 32): each epoch's
  page tables were pushed out of the CPU's caches by the other guests' since, as in a run,
  where a single guest's tables stay in the cache.
- **fixed µs/guest-epoch**: the same guest with its access rate cut to 10 touches/s (one
  touch an epoch): what an epoch costs whatever it does, through the core alone
  (`GuestModel.epoch`) and through the runner the runtimes use (`GuestRunner.window`, ten
  epochs a window: the per-epoch row of the time series and the window's state record).
- **steady bench-1k guest**: a guest of `configs/bench-1k.yaml` (512 MiB RAM, ~500 touches
  an epoch) from epoch 3,000, when it reclaims into its tmem quota (40,000 pages) every epoch,
  for `--steady-epochs` epochs: CPU µs per guest-epoch without the stores and the touch
  generation (replayed as above), and the generation's own. This is what a non-quiet epoch
  costs: at ~500 touches, mostly the epoch's Python steps rather than its page loops.

Each figure is measured twice in one run of the script, in two child processes: with the
compiled kernels (`overcommit/nodes/kernel/jit.py`) and with `OVERCOMMIT_JIT=0` (the numpy
path, the baseline); both must leave the same state (a digest of the page tables and counters
is compared). The first child run also reports numba's compilation when its cache was cold.

    python benchmarks/bench_model.py     # defaults: --epochs 6000 --quiet-epochs 20000
                                         #   --guests 32 --cluster-epochs 300
                                         #   --steady-epochs 1000
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class MemoryPool:
    """A guest's tmem pool as arrays indexed by page: gets, flushes, puts (quota = capacity)."""

    def __init__(self, n: int) -> None:
        self.has = np.zeros(n, bool)
        self.ver = np.zeros(n, np.uint32)
        self.chk = np.zeros(n, np.uint64)
        self.count = 0

    def batch(self, ops):
        from overcommit.stores.codec import RecordBatch
        from overcommit.stores.tmem import TmemBatchResult

        gets = ops.gets.astype(np.int64)
        found = self.has[gets]
        fr = gets[found]
        got = RecordBatch(fr.astype(np.uint32), self.ver[fr], self.chk[fr])
        if ops.exclusive_gets:
            self.has[fr] = False
            self.count -= len(fr)
        fl = ops.flushes.astype(np.int64)
        flushed = int(np.count_nonzero(self.has[fl]))
        self.has[fl] = False
        self.count -= flushed
        n = len(ops.puts) if ops.puts is not None else 0
        ok = np.zeros(n, bool)
        invalidated = 0
        for k in range(n):  # in order: a new page needs room under the quota
            p = int(ops.puts.pages[k])
            if self.has[p] or self.count + 1 <= min(ops.quota, ops.capacity):
                ok[k] = True
                if not self.has[p]:
                    self.count += 1
                self.has[p] = True
                self.ver[p] = ops.puts.versions[k]
                self.chk[p] = ops.puts.checksums[k]
            elif self.has[p]:  # (not reached: an existing page needs no room)
                self.has[p] = False
                self.count -= 1
                invalidated += 1
        return TmemBatchResult(found, got, ok, flushed, invalidated, self.count, self.count)


class MemoryDisk:
    """A swap disk as arrays indexed by page: reads, then frees, then writes."""

    def __init__(self, n: int) -> None:
        self.has = np.zeros(n, bool)
        self.ver = np.zeros(n, np.uint32)
        self.chk = np.zeros(n, np.uint64)

    def batch(self, ops):
        from overcommit.stores.codec import RecordBatch
        from overcommit.stores.swap import SwapBatchResult

        reads = ops.reads.astype(np.int64)
        found = self.has[reads]
        fr = reads[found]
        got = RecordBatch(fr.astype(np.uint32), self.ver[fr], self.chk[fr])
        frees = ops.frees.astype(np.int64)
        freed = int(np.count_nonzero(self.has[frees]))
        self.has[frees] = False
        if ops.writes is not None and len(ops.writes):
            w = ops.writes.pages.astype(np.int64)
            self.has[w] = True
            self.ver[w] = ops.writes.versions
            self.chk[w] = ops.writes.checksums
        return SwapBatchResult(found, got, freed, 0)


def _guest(rate: str | None, config: str = "bench-4x8"):
    from overcommit.cluster.runtime import build_guest
    from overcommit.config import load_scenario_text

    text = (ROOT / "configs" / f"{config}.yaml").read_text()
    if rate is not None:
        text = text.replace("access_rate: 20k/s", f"access_rate: {rate}")
    sc = load_scenario_text(text, f"{config}.yaml")
    spec = sc.guest_specs()[0]
    return sc, build_guest(sc, spec, sc.host_names()[0])


def _device(sc):
    from overcommit.profiles import DeviceQueue, device_profiles

    return DeviceQueue(device_profiles(sc.devices)[sc.shared_storage.device], users=32)


class Timer:
    """Seconds spent in the in-memory stores (wall clock: reading a CPU clock costs several
    µs a call on some VMs, more than a small store call; the stores are pure CPU)."""

    def __init__(self) -> None:
        self.s = 0.0


def _record(workload):
    """Wrap `workload.touches` to record its arguments; returns the list they go to."""
    calls = []
    fn = workload.touches

    def recorded(streams, t, work):
        calls.append((t, work))
        return fn(streams, t, work)

    workload.touches = recorded
    return calls, fn


def _replay_cpu(g, calls, fn) -> float:
    """CPU seconds the workload takes to generate the same touches again (fresh streams of
    the same key, the same calls in order)."""
    from overcommit.workloads import TouchStreams

    streams = TouchStreams(*g.rng._key)
    c0 = time.process_time()
    for t, work in calls:
        fn(streams, t, work)
    return time.process_time() - c0


def _drive(gen, stores: tuple, store: Timer):
    from overcommit.nodes.kernel.types import Reply

    try:
        req = next(gen)
        while True:
            t0 = time.perf_counter()
            rep = Reply()
            pool, swap, files = stores
            if req.tmem is not None:
                rep.tmem = pool.batch(req.tmem)
            if req.swap is not None:
                rep.swap = swap.batch(req.swap)
            if req.files is not None:
                rep.files = files.batch(req.files)
            store.s += time.perf_counter() - t0
            req = gen.send(rep)
    except StopIteration as stop:
        return stop.value


#: the epoch the cluster figure's copies are taken at: the guest's RAM is just full
CLUSTER_FROM = 3000


def _digest(g) -> str:
    h = hashlib.blake2b(digest_size=8)
    for arr in (g.loc, g.slot, g.version, g.frame, g.last, g.ref, g.dirty, g.hist):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(g.counters, sort_keys=True).encode())
    h.update(repr((g.stall_seconds, g.work_seconds, g.free_top)).encode())
    return h.hexdigest()


def _stores(g) -> tuple:
    return MemoryPool(g.N), MemoryDisk(g.N), MemoryDisk(g.N)


def _cluster(g, stores, guests: int, e0: int, epochs: int, quota: int, dt, dev) -> dict:
    """`guests` copies of `g` (and of its stores) from epoch `e0`, stepped in turn for `epochs`
    epochs each: CPU, store time and touch generation's CPU (each copy's calls replayed on a
    copy of its streams as they were at `e0`), per touch."""
    from overcommit.nodes.host import Directives

    d = Directives(tmem_quota=quota, tmem_capacity=quota)
    fleet = [copy.deepcopy((g, stores)) for _ in range(guests)]
    starts = [copy.deepcopy(c.rng) for c, _ in fleet]
    for c, _ in fleet:  # the copies' own recording, not the guest's (`_record`'s wrapper)
        c.workload.__dict__.pop("touches", None)
    recorded = [_record(c.workload) for c, _ in fleet]
    store, n0 = Timer(), sum(c.counters["touches"] for c, _ in fleet)
    c0 = time.process_time()
    for e in range(e0, e0 + epochs):
        for c, st in fleet:
            if e % 10 == 0:
                c.start_window(e, d)
            _drive(c.epoch(e, e * dt, dt, dev), st, store)
    cpu = time.process_time() - c0
    touches = sum(c.counters["touches"] for c, _ in fleet) - n0
    g0 = time.process_time()
    for (calls, fn), streams in zip(recorded, starts, strict=True):
        for t, work in calls:
            fn(streams, t, work)
    gen_s = time.process_time() - g0
    return {
        "cluster_touches": touches,
        "cluster_core_ns_per_touch": (cpu - store.s - gen_s) / touches * 1e9,
        "cluster_digest": _digest(fleet[-1][0]),
    }


#: the steady figure's bench-1k guest: epochs before the measured ones (its RAM full, reclaiming
#: into its tmem quota since about epoch 1,900), and that quota (pages)
STEADY_FROM, STEADY_QUOTA = 3000, 40_000


def _steady(epochs: int, dev_of) -> dict:
    """A bench-1k guest's epochs once it reclaims every epoch: CPU µs per guest-epoch without
    the in-memory stores and the touch generation (replayed afterwards, as in `child`)."""
    from overcommit.nodes.host import Directives

    sc, g = _guest(None, "bench-1k")
    dt, dev = sc.epoch, dev_of(sc)
    stores, store = _stores(g), Timer()
    d = Directives(tmem_quota=STEADY_QUOTA, tmem_capacity=STEADY_QUOTA)
    for e in range(STEADY_FROM):
        if e % 10 == 0:
            g.start_window(e, d)
        _drive(g.epoch(e, e * dt, dt, dev), stores, store)
    start = copy.deepcopy(g.rng)
    calls, fn = _record(g.workload)
    n0, store.s = g.counters["touches"], 0.0
    c0 = time.process_time()
    for e in range(STEADY_FROM, STEADY_FROM + epochs):
        if e % 10 == 0:
            g.start_window(e, d)
        _drive(g.epoch(e, e * dt, dt, dev), stores, store)
    cpu = time.process_time() - c0
    g.workload.__dict__.pop("touches", None)
    g0 = time.process_time()
    for t, work in calls:  # the same draws again, from the streams as they were at the start
        fn(start, t, work)
    gen_s = time.process_time() - g0
    return {
        "steady_touches_per_epoch": (g.counters["touches"] - n0) / epochs,
        "steady_us_per_epoch": (cpu - store.s - gen_s) / epochs * 1e6,
        "steady_gen_us_per_epoch": gen_s / epochs * 1e6,
        "steady_digest": _digest(g),
    }


def child(
    epochs: int,
    quiet_epochs: int,
    quota: int,
    guests: int,
    cluster_epochs: int,
    steady_epochs: int,
) -> dict:
    """Runs in a child process (OVERCOMMIT_JIT set by the parent); prints one JSON line."""
    from overcommit.cluster.runners import GuestRunner
    from overcommit.nodes.host import Directives
    from overcommit.nodes.kernel import checks, jit

    t0 = time.process_time()
    jit.warm()  # compile (or load from the cache) before timing
    checks.warm_checks()
    out: dict = {"jit": jit.ENABLED, "warm_cpu_s": time.process_time() - t0}

    # core ns/touch: the bench-4x8 guest over `epochs` epochs
    sc, g = _guest(None)
    dt, dev = sc.epoch, _device(sc)
    stores, store = _stores(g), Timer()
    calls, gen_fn = _record(g.workload)
    stored = 0
    d = Directives(tmem_quota=quota, tmem_capacity=quota)
    c0 = time.process_time()
    cluster: dict = {}
    for e in range(epochs):
        if e % 10 == 0:
            g.start_window(e, d)
        if e == CLUSTER_FROM and guests:  # (its time is taken out of the guest's own)
            t0 = time.process_time()
            cluster = _cluster(g, stores, guests, e, cluster_epochs, quota, dt, dev)
            c0 += time.process_time() - t0
        before = store.s
        _drive(g.epoch(e, e * dt, dt, dev), stores, store)
        stored += store.s != before
    cpu = time.process_time() - c0
    touches = g.counters["touches"]
    gen_s = _replay_cpu(g, calls, gen_fn)
    out.update(
        touches=touches,
        epochs=epochs,
        store_epochs=stored,
        cpu_s=cpu,
        store_s=store.s,
        touchgen_s=gen_s,
        core_ns_per_touch=(cpu - store.s - gen_s) / touches * 1e9,
        with_touchgen_ns_per_touch=(cpu - store.s) / touches * 1e9,
        touchgen_ns_per_touch=gen_s / touches * 1e9,
        digest=_digest(g),
        **cluster,
    )

    # fixed cost: the same guest at 10 touches/s, through the core and through the runner
    sc, g = _guest("10/s")
    dev = _device(sc)
    stores, store = _stores(g), Timer()
    c0 = time.process_time()
    for e in range(quiet_epochs):
        if e % 10 == 0:
            g.start_window(e, Directives())
        _drive(g.epoch(e, e * dt, dt, dev), stores, store)
    out["core_us_per_epoch"] = (time.process_time() - c0) / quiet_epochs * 1e6
    sc, g = _guest("10/s")
    runner = GuestRunner(g)
    c0 = time.process_time()
    for e0 in range(0, quiet_epochs, 10):
        _drive(runner.window(e0, e0 + 10, dt, dev, Directives()), stores, store)
    out["runner_us_per_epoch"] = (time.process_time() - c0) / quiet_epochs * 1e6
    if steady_epochs:
        out.update(_steady(steady_epochs, _device))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=6000, help="epochs of the bench-4x8 guest")
    ap.add_argument("--quiet-epochs", type=int, default=20000, help="epochs at 10 touches/s")
    ap.add_argument("--quota", type=int, default=150_000, help="tmem pages the guest may hold")
    ap.add_argument("--guests", type=int, default=32, help="guests of the cluster figure")
    ap.add_argument(
        "--cluster-epochs", type=int, default=300, help="epochs each cluster guest runs"
    )
    ap.add_argument(
        "--steady-epochs",
        type=int,
        default=1000,
        help="epochs of the steady figure's bench-1k guest (0: no steady figure)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.guests < 0 or a.cluster_epochs < 1 or a.steady_epochs < 0:
        ap.error("--guests and --steady-epochs must be 0 or more, --cluster-epochs 1 or more")
    if a.guests and a.epochs <= CLUSTER_FROM:
        ap.error(f"--epochs must be above {CLUSTER_FROM} for the cluster figure (or --guests 0)")
    if a.child:
        print(
            json.dumps(
                child(
                    a.epochs, a.quiet_epochs, a.quota, a.guests, a.cluster_epochs, a.steady_epochs
                )
            )
        )
        return
    res = {}
    for mode in ("1", "0"):
        env = {**os.environ, "OVERCOMMIT_JIT": mode, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, __file__, "--child", f"--epochs={a.epochs}"]
        cmd += [f"--quiet-epochs={a.quiet_epochs}", f"--quota={a.quota}"]
        cmd += [f"--guests={a.guests}", f"--cluster-epochs={a.cluster_epochs}"]
        cmd += [f"--steady-epochs={a.steady_epochs}"]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if p.returncode:
            sys.exit(f"child (OVERCOMMIT_JIT={mode}) failed:\n{p.stderr}")
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    k, b = res["1"], res["0"]
    print(
        f"bench-4x8 guest (frontswap, quota {a.quota} pages), {k['epochs']} epochs, "
        f"{k['touches']:,} touches ({k['store_epochs']} epochs asked the store); "
        f"nproc {os.cpu_count()}"
    )
    print(f"kernel load/compile before timing: {k['warm_cpu_s']:.2f} CPU-s")
    print()
    print("| figure | kernels | numpy path | numpy / kernels |")
    print("|---|---:|---:|---:|")
    rows = [
        ("core ns/touch (no touch generation, no store)", "core_ns_per_touch"),
        (f"core ns/touch, {a.guests} guests in turn (cluster)", "cluster_core_ns_per_touch"),
        ("touch generation ns/touch", "touchgen_ns_per_touch"),
        ("core + touch generation ns/touch", "with_touchgen_ns_per_touch"),
        ("fixed µs/guest-epoch, core (`GuestModel.epoch`)", "core_us_per_epoch"),
        ("fixed µs/guest-epoch, runner (`GuestRunner.window`)", "runner_us_per_epoch"),
        ("steady bench-1k guest: µs/guest-epoch (no touch generation)", "steady_us_per_epoch"),
        ("steady bench-1k guest: touch generation µs/guest-epoch", "steady_gen_us_per_epoch"),
    ]
    for label, key in rows:
        if key in k:
            print(f"| {label} | {k[key]:.1f} | {b[key]:.1f} | {b[key] / k[key]:.2f}x |")
    print()
    print(f"in-memory store: {k['store_s']:.2f} s (kernels), {b['store_s']:.2f} s (numpy)")
    if "steady_touches_per_epoch" in k:
        print(f"steady bench-1k guest: {k['steady_touches_per_epoch']:.0f} touches an epoch")
    same = all(k.get(d) == b.get(d) for d in ("digest", "cluster_digest", "steady_digest"))
    print(f"same final state (page tables, counters, times): {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
