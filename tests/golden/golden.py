"""Golden results: the sha256 of every shipped scenario's outputs, to guard against changes.

Each case is a shipped config run inline with a fixed seed, a short duration and, where the
config's interesting event lies beyond it, overrides that bring the event forward (the point is
coverage of code paths, not the scenario's full story). A case's digest is the sha256 of
`summary.json` without its `run` section (wall time, versions), of `guests.csv`, `hosts.csv` and
`events.jsonl`. `tests/test_golden.py` recomputes them and compares with `golden.json`.

A change that moves a result regenerates the file in the same commit and says in the commit
message which figures moved and why:

    python tests/golden/golden.py            # rewrite tests/golden/golden.json
    python tests/golden/golden.py --check    # compare only, print what differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden.json")
SEED = 11

#: Every mechanism and combination `overcommit compare` runs by default.
MECHANISMS = (
    "none",
    "frontswap",
    "host-swap",
    "balloon",
    "selfballoon",
    "cached-disk",
    "zswap",
    "zram",
    "page-sharing",
    "cleancache",
    "ramdisk",
    "balloon+host-swap",
    "frontswap+selfballoon",
    "frontswap+cleancache",
    "page-sharing+balloon+zswap+host-swap",
)

#: config -> (duration, overrides): the shortened form of each shipped scenario.
SHORT: dict[str, tuple[str, dict]] = {
    "bench-4x8.yaml": ("2s", {}),
    "capacity.yaml": ("8s", {"events.0.at": "2s", "ha.detection": "1s"}),
    "chaos-drill.yaml": (
        "20s",
        {"chaos.mtbf": "6s", "chaos.mttr": "3s", "ha.detection": "1s", "chaos.start": "1s"},
    ),
    "cleancache.yaml": ("5s", {}),
    "double-swapping.yaml": ("6s", {}),
    "evacuate.yaml": ("8s", {"page_size": "64KiB", "events.0.at": "3s"}),
    "frontswap-vs-none.yaml": ("4s", {}),
    "migrate-under-pressure.yaml": ("8s", {"page_size": "64KiB", "events.0.at": "3s"}),
    "node-death.yaml": (
        "12s",
        {"page_size": "64KiB", "events.0.at": "5s", "ha.detection": "1s"},
    ),
    "peaks-and-valleys.yaml": (
        "9s",
        {
            "page_size": "64KiB",
            "guests.0.workload.phases.0.duration": "3s",
            "guests.0.workload.phases.1.duration": "6s",
            "guests.1.workload.phases.0.duration": "3s",
            "guests.1.workload.phases.1.duration": "3s",
            "guests.1.workload.phases.2.duration": "3s",
            "guests.2.workload.phases.0.duration": "6s",
            "guests.2.workload.phases.1.duration": "3s",
        },
    ),
    "pinned-memory.yaml": (
        "8s",
        {
            "guests.0.workload.phases.0.duration": "3s",
            "guests.0.workload.phases.1.duration": "5s",
            "events.0.at": "5s",
        },
    ),
    "quickstart.yaml": ("5s", {}),
    "trace-replay.yaml": ("5s", {}),
}

#: Shipped configs left out: too large for a golden case even shortened (bench-1k builds
#: 1,024 guests and their stores before its first epoch); tests/test_memory_estimate.py runs it.
EXCLUDED = ("bench-1k.yaml",)

#: Configs run under every mechanism; the others run under their own.
ALL_MECHANISMS = (
    "peaks-and-valleys.yaml",
    "node-death.yaml",
    "evacuate.yaml",
    "migrate-under-pressure.yaml",
)


#: Variants for code paths the shipped defaults leave idle: tag -> (config, mechanism, overrides).
VARIANTS: dict[str, tuple[str, str, dict]] = {
    "tmem-compress-dedup": (
        "peaks-and-valleys.yaml",
        "frontswap",
        {"hosts.tmem.compress": True, "hosts.tmem.dedup": True},
    ),
    "full-payload": ("peaks-and-valleys.yaml", "zswap", {"payload": "full"}),
    "postcopy": ("migrate-under-pressure.yaml", "frontswap", {"migration.mode": "postcopy"}),
    "postcopy-hswap": ("migrate-under-pressure.yaml", "host-swap", {"migration.mode": "postcopy"}),
    "uncooperative": ("node-death.yaml", "frontswap", {"guests.0.cooperative": False}),
    "exact-lru": ("quickstart.yaml", "frontswap", {"guests.0.lru": "lru", "page_size": "64KiB"}),
}

Case = tuple[str, "str | None", str]


def cases() -> list[Case]:
    """(config file name, mechanism or None for the config's own, variant tag or ""), in a
    fixed order."""
    shipped = sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if p.name not in EXCLUDED)
    out: list[Case] = []
    for name in shipped:
        if name in ALL_MECHANISMS:
            out += [(name, m, "") for m in MECHANISMS]
        else:
            out.append((name, None, ""))
    out += [(cfg, mech, tag) for tag, (cfg, mech, _) in VARIANTS.items()]
    return out


def case_id(config: str, mechanism: str | None, variant: str = "") -> str:
    tail = f"/{variant}" if variant else ""
    return f"{config.removesuffix('.yaml')}:{mechanism or 'own'}{tail}"


def digest(run_dir: Path) -> dict[str, str]:
    """sha256 of each guarded output of one run directory."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("run", None)
    out = {"summary.json": json.dumps(summary, sort_keys=True).encode()}
    for name in ("guests.csv", "hosts.csv", "events.jsonl"):
        out[name] = (run_dir / name).read_bytes()
    return {k: hashlib.sha256(v).hexdigest() for k, v in out.items()}


def run_case(config: str, mechanism: str | None, variant: str, out_dir: Path) -> dict[str, str]:
    """Run one case inline into `out_dir` and return its digests."""
    from overcommit.api import run

    if config not in SHORT:
        raise KeyError(f"{config}: no short form in tests/golden/golden.py SHORT")
    duration, overrides = SHORT[config]
    if variant:
        overrides = {**overrides, **VARIANTS[variant][2]}
    run(
        ROOT / "configs" / config,
        seed=SEED,
        mechanism=mechanism,
        runtime="inline",
        duration=duration,
        out_dir=out_dir,
        overrides=overrides,
    )
    return digest(out_dir)


def compute(selected: list[Case] | None = None) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="overcommit-golden-") as tmp:
        for i, case in enumerate(selected or cases()):
            t0 = time.perf_counter()
            result[case_id(*case)] = run_case(*case, Path(tmp) / str(i))
            print(f"{case_id(*case):60s} {time.perf_counter() - t0:5.2f}s", file=sys.stderr)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with golden.json, write nothing")
    args = ap.parse_args()
    got = compute()
    if args.check:
        want = json.loads(GOLDEN.read_text())
        moved = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        for k in moved:
            files = [f for f in (got.get(k) or {}) if (want.get(k) or {}).get(f) != got[k][f]]
            print(f"moved: {k} {' '.join(files)}")
        return 1 if moved else 0
    GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(got)} cases)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
