"""CPU cost of a guest's conservation checks: the full audit and the per-epoch ledger check.

Two guests are built as the runtimes build them and filled in this process (no Redis, no
Ray: the in-memory tmem pool and swap disk of `bench_model.py` answer their epochs): one of
`configs/bench-4x8.yaml` (2 GiB RAM, 640k-page footprint) and one of `configs/bench-1k.yaml`
(512 MiB RAM, 160k pages), each at a high access rate until its RAM is full and it has
reclaimed into its tmem quota and faulted back. On each filled guest, in the same process:

- **full audit**: `GuestModel.conservation(full=True)`, what runs each audit interval (the
  ledgers, the recount of the page and frame tables and the frame audit), with the compiled
  kernels (`checks.table_audit`, `checks.frame_verdict`) and with the numpy path
  (`jit.ENABLED = False`, as `OVERCOMMIT_JIT=0` sets it); also the frame audit alone.
  Also the full audit with cold caches (64 MiB of other memory written before each call, as
  the epochs between two audits do).
- **per-epoch check**: `GuestModel.conservation()`, what runs every epoch (the ledgers and
  the mechanisms' light `audit` hooks), against `_conservation_before`, a copy of the check
  as it was before it was made cheaper (kept here as the baseline).

Each figure is the best of `--repeat` timings of process CPU time (the machine may be shared:
the best is the least disturbed); both paths must give the same verdict (here: none) or the
script fails. The last row of each guest, µs per guest-epoch, spreads the full audit over its
300-epoch audit interval.

    python benchmarks/bench_audit.py                # defaults: --repeat 15 --fill-epochs 60
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_model import MemoryDisk, MemoryPool, Timer, _device, _drive  # noqa: E402

#: (config, its guests' access rate as written there, the rate the fill uses, tmem quota)
GUESTS = (
    ("bench-4x8", "access_rate: 20k/s", "2M/s", 150_000),
    ("bench-1k", "access_rate: 5k/s", "1M/s", 40_000),
)
AUDIT_EPOCHS = 300  # the runners' audit interval (`cluster.runners.AUDIT_EPOCHS`)


def _filled(config: str, rate_text: str, rate: str, quota: int, epochs: int):
    """A guest of `config` after `epochs` epochs at `rate` with a tmem quota of `quota`."""
    from overcommit.cluster.runtime import build_guest
    from overcommit.config import load_scenario_text
    from overcommit.nodes.host import Directives

    text = (ROOT / "configs" / f"{config}.yaml").read_text()
    sc = load_scenario_text(text.replace(rate_text, f"access_rate: {rate}"), f"{config}.yaml")
    g = build_guest(sc, sc.guest_specs()[0], sc.host_names()[0])
    dt, dev = sc.epoch, _device(sc)
    stores = (MemoryPool(g.N), MemoryDisk(g.N), MemoryDisk(g.N))
    d = Directives(tmem_quota=quota, tmem_capacity=quota)
    for e in range(epochs):
        if e % 10 == 0:
            g.start_window(e, d)
        _drive(g.epoch(e, e * dt, dt, dev), stores, Timer())
    return g


def _frontswap_audit_before(g) -> list[str]:
    """`FrontswapGuest.audit(g, False)` as it was (the baseline)."""
    from overcommit.nodes.kernel.types import FRONTSWAP

    out = []
    fs_view = int(g.slot_census[FRONTSWAP])
    if fs_view != g.tmem_pages:
        out.append(
            f"{g.name}: guest holds {fs_view} frontswap pages, host pool reports {g.tmem_pages}"
        )
    if g.alloc_pages + g.tmem_billed > g.maxmem_pages and g.tmem_pages:
        out.append(
            f"{g.name}: RAM {g.alloc_pages} + tmem {g.tmem_billed} pages above "
            f"maxmem {g.maxmem_pages}"
        )
    return out


def _conservation_before(g) -> list[str]:
    """`GuestModel.conservation()` (not full) as it was (the baseline)."""
    from overcommit.nodes.frontswap import FrontswapGuest
    from overcommit.nodes.kernel.types import FRONTSWAP, RAM, SWAP, ZPOOL

    out = []
    bc = g.census
    counts = bc.tolist()
    if sum(counts) != g.N or min(counts) < 0:
        out.append(f"{g.name}: the page ledger does not partition the footprint: {bc}")
    resident = counts[RAM]
    held = g.free_top + g.balloon_n + g.zpool_frames
    if resident + held != g.nframes:
        out.append(
            f"{g.name}: resident {resident}, free frames {g.free_top}, balloon "
            f"{g.balloon_n}, pool {g.zpool_frames}, frames {g.nframes}"
        )
    sc = g.slot_census.tolist()
    zslots = sc[ZPOOL] if g.zram_slots else 0
    dslots = sc[FRONTSWAP] + sc[SWAP] + (0 if g.zram_slots else sc[ZPOOL])
    if (
        dslots != g.slots_used
        or dslots > g.swap_slots
        or zslots != g.zslots_used
        or zslots > max(g.zram_slots, 0)
    ):
        out.append(
            f"{g.name}: swap slots counted {g.slots_used}+{g.zslots_used}, held "
            f"{dslots}+{zslots}, devices have {g.swap_slots}+{g.zram_slots}"
        )
    for h in g.mechs:
        if type(h) is FrontswapGuest:
            out += _frontswap_audit_before(g)
        else:
            out += h.audit(g, False)
    return out


def _best(fn, repeat: int, number: int) -> float:
    """Best CPU seconds per call of `fn` over `repeat` timings of `number` calls (process CPU
    time: the time the process waits for a shared core does not count)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)) / number


_SWEEP = None


def _cold(fn, repeat: int) -> float:
    """Best CPU seconds of one call of `fn` made after 64 MiB of other memory was written
    (the audit runs once per interval, after epochs that filled the caches with other data)."""
    import numpy as np

    global _SWEEP
    if _SWEEP is None:
        _SWEEP = np.zeros(8 << 20, np.int64)
    best = float("inf")
    for _ in range(repeat):
        _SWEEP += 1
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _measure(g, repeat: int) -> dict[str, tuple[float, float]]:
    """Seconds per call, (kernels or now, numpy path or before), with the verdicts compared."""
    from overcommit.nodes.kernel import jit

    rows = {}
    for label, fn, number in (
        ("full audit", lambda: g.conservation(full=True), 5),
        ("frame audit alone", g.frame_audit, 5),
    ):
        got = {}
        secs = []
        for on in (True, False):
            jit.ENABLED = on
            got[on] = fn()
            secs.append(_best(fn, repeat, number))
        jit.ENABLED = True
        if got[True] != got[False]:
            sys.exit(f"{g.name}: {label}: kernels {got[True]} != numpy path {got[False]}")
        rows[label] = (secs[0], secs[1])
    cold = []
    for on in (True, False):
        jit.ENABLED = on
        cold.append(_cold(lambda: g.conservation(full=True), repeat))
    jit.ENABLED = True
    rows["full audit, caches cold"] = (cold[0], cold[1])
    now, before = g.conservation(), _conservation_before(g)
    if now != before:
        sys.exit(f"{g.name}: per-epoch check: now {now} != before {before}")
    rows["per-epoch check"] = (
        _best(g.conservation, repeat, 2000),
        _best(lambda: _conservation_before(g), repeat, 2000),
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15, help="timings per figure (best kept)")
    ap.add_argument("--fill-epochs", type=int, default=60, help="epochs filling each guest")
    a = ap.parse_args()
    from overcommit.nodes.kernel import checks, jit

    if not jit.ENABLED:
        sys.exit("run with the kernels on (OVERCOMMIT_JIT unset): both paths are timed here")
    jit.warm()
    checks.warm_checks()
    print(f"nproc {os.cpu_count()}, best of {a.repeat} timings per figure")
    print()
    print("| guest | figure | kernels / now | numpy path / before | ratio |")
    print("|---|---|---:|---:|---:|")
    for config, rate_text, rate, quota in GUESTS:
        t0 = time.perf_counter()
        g = _filled(config, rate_text, rate, quota, a.fill_epochs)
        fill_s = time.perf_counter() - t0
        where = (
            f"{config} ({g.N:,} pages, {g.nframes:,} frames; ram {int(g.census[1]):,}, "
            f"tmem {g.tmem_pages:,}; filled in {fill_s:.0f} s)"
        )
        rows = _measure(g, a.repeat)
        for label, (k, b) in rows.items():
            unit, scale = ("µs", 1e6) if label == "per-epoch check" else ("ms", 1e3)
            print(
                f"| {where} | {label} ({unit}) | {k * scale:.2f} | {b * scale:.2f} | {b / k:.1f}x |"
            )
            where = ""
        k = rows["per-epoch check"][0] + rows["full audit"][0] / AUDIT_EPOCHS
        b = rows["per-epoch check"][1] + rows["full audit"][1] / AUDIT_EPOCHS
        print(
            f"| | checks per guest-epoch, full audit spread over {AUDIT_EPOCHS} epochs (µs) | "
            f"{k * 1e6:.2f} | {b * 1e6:.2f} | {b / k:.1f}x |"
        )


if __name__ == "__main__":
    main()
