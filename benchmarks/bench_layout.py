"""Page records against separate arrays: the core's CPU per touch when a host's guests step in turn.

A guest's hot per-page fields (`last`, `version`, `loc`, `slot`, `dirty`, `ref`, `ra`) are
views of one 13-byte record per page (`overcommit.nodes.kernel.model.PAGE_RECORD`); with
`OVERCOMMIT_PAGE_RECORD=0` they are seven separate arrays, the layout before. The difference
shows only when the page tables do not fit in the caches, as on a host: here K guests of one
host step epoch by epoch in turn (guest 0's epoch e, guest 1's, ..., then e + 1), with no Redis
and no Ray (the in-memory stores of `bench_model.py` answer their requests).

Two cases, each a fixed cut of a shipped scale scenario:
- **filling**: 64 guests of `configs/bench-1k.yaml` (512 MiB RAM, 640 MiB Zipf working set at
  5k touches/s) for 400 epochs: quiet epochs, the touch pass and first touches;
- **reclaiming**: 16 guests of 256 MiB RAM with a 320 MiB working set at 20k touches/s (the
  bench-4x8 workload, scaled down) for 1,200 epochs: RAM full from epoch ~350, reclaim into a
  tmem quota of 12,000 pages each and to the swap disk beyond it, faults back.

Figure: **core ns/touch**, process CPU of the epochs minus the time in the in-memory stores,
per touch (touch generation included: it is the same in both layouts). Each case runs in child
processes alternating the two layouts (records, separate, records, separate, ...: `--rounds`
pairs), best round of each; both layouts must end in the same state (a digest of every guest's
page tables and counters), or the script fails.

    python benchmarks/bench_layout.py              # ~2 min here; --rounds 3 by default
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location(
    "bench_model", Path(__file__).with_name("bench_model.py")
)
bench_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_model)

CASES = {
    "filling": dict(
        guests=64, epochs=400, quota=0, memory="512MiB", maxmem="768MiB", ws="640MiB", rate="5k/s"
    ),
    "reclaiming": dict(
        guests=16, epochs=1200, quota=12_000, memory="256MiB", maxmem="384MiB", ws="320MiB",
        rate="20k/s",
    ),
}  # fmt: skip

SCENARIO = """
name: layout
seed: 1
duration: 10m
epoch: 100ms
page_size: 4KiB
payload: digest
mechanism: frontswap
runtime: {{kind: inline}}
hosts: {{count: 1, ram: 36GiB, reserve: 1GiB}}
shared_storage: {{device: san}}
guests:
  - name: vm
    count: {guests}
    memory: {memory}
    maxmem: {maxmem}
    workload: {{kind: zipf, distribution: power, working_set: {ws}, access_rate: {rate},
               write_fraction: 0.3}}
"""


def child(case: str) -> dict:
    """Runs in a child process (OVERCOMMIT_PAGE_RECORD set by the parent); one JSON line."""
    from overcommit.cluster.runtime import build_guest
    from overcommit.config import load_scenario_text
    from overcommit.nodes.host import Directives
    from overcommit.nodes.kernel import checks, jit, model
    from overcommit.profiles import DeviceQueue, device_profiles

    jit.warm()
    checks.warm_checks()
    c = CASES[case]
    sc = load_scenario_text(SCENARIO.format(**c), "layout.yaml")
    host = sc.host_names()[0]
    guests = [build_guest(sc, spec, host) for spec in sc.guest_specs()]
    dev = DeviceQueue(device_profiles(sc.devices)[sc.shared_storage.device], users=len(guests))
    stores = [bench_model._stores(g) for g in guests]
    store = bench_model.Timer()
    d = Directives(tmem_quota=c["quota"], tmem_capacity=c["quota"])
    dt = sc.epoch
    c0 = time.process_time()
    for e in range(c["epochs"]):
        for g, st in zip(guests, stores, strict=True):
            if e % 10 == 0:
                g.start_window(e, d)
            bench_model._drive(g.epoch(e, e * dt, dt, dev), st, store)
    cpu = time.process_time() - c0
    touches = sum(g.counters["touches"] for g in guests)
    h = hashlib.blake2b(digest_size=8)
    for g in guests:
        h.update(bench_model._digest(g).encode())
    return {
        "records": model.PAGE_RECORDS,
        "touches": touches,
        "cpu_s": cpu,
        "store_s": store.s,
        "ns_per_touch": (cpu - store.s) / touches * 1e9,
        "frontswap_gets": sum(g.counters["frontswap_gets"] for g in guests),
        "digest": h.hexdigest(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="pairs of child runs per case")
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="default: both")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child)))
        return
    print("| case | guests x epochs | touches | records ns/touch | separate ns/touch | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for case in a.case or list(CASES):
        best: dict[str, dict] = {}
        for _ in range(a.rounds):
            for mode in ("1", "0"):
                env = {**os.environ, "OVERCOMMIT_PAGE_RECORD": mode, "PYTHONPATH": str(ROOT)}
                cmd = [sys.executable, __file__, "--child", case]
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if p.returncode:
                    sys.exit(f"child ({case}, OVERCOMMIT_PAGE_RECORD={mode}) failed:\n{p.stderr}")
                r = json.loads(p.stdout.strip().splitlines()[-1])
                if mode not in best or r["ns_per_touch"] < best[mode]["ns_per_touch"]:
                    best[mode] = r
        rec, sep = best["1"], best["0"]
        if rec["digest"] != sep["digest"]:
            sys.exit(f"{case}: the two layouts ended in different states")
        c = CASES[case]
        print(
            f"| {case} | {c['guests']} x {c['epochs']} | {rec['touches']:,} "
            f"| {rec['ns_per_touch']:.1f} | {sep['ns_per_touch']:.1f} "
            f"| {sep['ns_per_touch'] / rec['ns_per_touch']:.2f}x |"
        )
    print(f"\nsame final state in both layouts: yes; nproc {os.cpu_count()}")


if __name__ == "__main__":
    main()
