"""Two small parts of a reclaiming epoch, each against the code it replaced, in one process.

- **digest checksums** (`overcommit.stores.codec.checksums(..., "digest")`, computed for every
  record an epoch writes or reads back): the compiled loop (`codec.JIT`) against the numpy
  expressions (`OVERCOMMIT_JIT=0`'s path), for batches of 32, 300 and 2,000 records;
- **read latencies** (`overcommit.nodes.kernel.epoch.queued_latencies`, once per epoch that
  reads from a device): the service time and queueing wait of every read computed at once
  over the array of sizes (`DeviceProfile.op_time` of the array, `DeviceQueue.waits`); the
  baseline is the code of the second round, kept here (`np.unique` of the sizes, then one Python
  computation per distinct size), for reads of one size and of mixed sizes.

Interleaved rounds, best of each; the script fails if the two sides differ in any bit.

    python benchmarks/bench_epoch_parts.py        # ~15 s
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _best(fns: dict, repeat: int, rounds: int = 7) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(repeat):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / repeat)
    return best


def _old_queued_latencies(device, read_bytes, fixed, ahead=0.0):
    """`queued_latencies` before the one-size path."""
    if not len(read_bytes):
        return np.zeros(0), ahead
    dev = device.profile
    if len(read_bytes) > 4:
        sizes, at = np.unique(read_bytes, return_inverse=True)
        svc = np.array([dev.op_time(False, float(b)) for b in sizes])[at]
        wait = np.array([device.wait(float(b)) for b in sizes])[at]
    else:
        svc = np.array([dev.op_time(False, float(b)) for b in read_bytes])
        wait = np.array([device.wait(float(b)) for b in read_bytes])
    done = ahead + np.cumsum(svc)
    return fixed + wait + done, float(done[-1])


def main() -> None:
    from overcommit.config import load_scenario
    from overcommit.nodes.kernel.epoch import queued_latencies
    from overcommit.profiles import DeviceQueue, device_profiles
    from overcommit.stores import codec

    rng = np.random.default_rng(1)
    print("| part | case | before µs | now µs | ratio |")
    print("|---|---|---:|---:|---:|")
    for n in (32, 300, 2000):
        pages = rng.integers(0, 163_840, n).astype(np.int64)
        versions = rng.integers(0, 60, n).astype(np.uint32)
        codec.JIT = True
        now = codec.checksums(12345, pages, versions, "digest")
        codec.JIT = False
        before = codec.checksums(12345, pages, versions, "digest")
        if not np.array_equal(now, before):
            sys.exit("digest checksums differ")

        def run(jit: bool, pages=pages, versions=versions) -> None:
            codec.JIT = jit
            codec.checksums(12345, pages, versions, "digest")

        t = _best({"now": lambda: run(True), "before": lambda: run(False)}, 2000)
        print(
            f"| digest checksums | {n} records | {t['before'] * 1e6:.1f} | {t['now'] * 1e6:.1f} "
            f"| {t['before'] / t['now']:.1f}x |"
        )
    codec.JIT = True
    sc = load_scenario(ROOT / "configs" / "quickstart.yaml")
    dq = DeviceQueue(device_profiles(sc.devices)["san"], users=8)
    dq.util, dq.backlog = 0.4, 0.002
    rng = np.random.default_rng(1)
    cases = [(f"{n} one-page reads", np.full(n, 4096.0)) for n in (6, 40)]
    cases += [  # readahead clusters partly in RAM already: 1-8 pages each
        (f"{n} reads of 1-8 pages", rng.integers(1, 9, n).astype(np.float64) * 4096)
        for n in (3, 12, 40)
    ]
    for label, reads in cases:
        a, b = (
            queued_latencies(dq, reads, 1e-5, 0.001),
            _old_queued_latencies(dq, reads, 1e-5, 0.001),
        )
        if not (np.array_equal(a[0], b[0]) and a[1] == b[1]):
            sys.exit("read latencies differ")
        t = _best(
            {
                "now": lambda r=reads: queued_latencies(dq, r, 1e-5, 0.001),
                "before": lambda r=reads: _old_queued_latencies(dq, r, 1e-5, 0.001),
            },
            2000,
        )
        print(
            f"| read latencies | {label} | {t['before'] * 1e6:.1f} | "
            f"{t['now'] * 1e6:.1f} | {t['before'] / t['now']:.1f}x |"
        )
    print("\nsame results, bit for bit: yes")


if __name__ == "__main__":
    main()
