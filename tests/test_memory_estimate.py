"""The preflight memory estimate against the measured peak of a real run: bench-1k (1,024
guests packed into host actors, `hosts_per_actor: auto` spreading the 16 hosts over as many
processes as the CPUs, on a local Ray; 17 redis-servers) for 20 emulated seconds, its whole
process tree's summed RSS sampled in a thread while it runs.

25-60 s of wall time on the 2-core reference machine, by its load (2 actor processes of 8
hosts there), and about 5.5 GB of memory at the peak (about 9 GB with one host per actor).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from overcommit.cluster.engine import preflight
from overcommit.cluster.memory import actor_cpus
from overcommit.config import apply_overrides, load_scenario

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("memtree", ROOT / "benchmarks" / "memtree.py")
memtree = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memtree)

#: the host failure at 5 min brought inside the 20 s run, as the engine checks events are
SHORT = {"duration": "20s", "events.0.at": "10s"}


@pytest.mark.slow
def test_preflight_estimate_is_within_25_percent_of_the_measured_peak(tmp_path):
    sc = apply_overrides(load_scenario(ROOT / "configs" / "bench-1k.yaml"), SHORT)
    assert (sc.runtime.kind, sc.runtime.guests, len(sc.guest_specs())) == ("ray", "packed", 1024)
    estimate = preflight(sc)
    out = tmp_path / "run"
    sets = [a for k, v in SHORT.items() if k != "duration" for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "overcommit", "run", "configs/bench-1k.yaml"]
    cmd += ["--duration", SHORT["duration"], *sets, "--quiet", "--no-report", "--out", str(out)]
    code, wall, tree = memtree.watch(cmd, interval=0.25, cwd=ROOT)
    assert code == 0, f"exit {code}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["valid"]
    assert summary["emulated_seconds"] == pytest.approx(20.0)
    # the sampler saw the whole tree: the driver, the host actors' processes (`auto`: as
    # many as the CPUs), Ray's own processes and every redis-server (16 hosts and the shared
    # storage)
    # (no Ray in this process: `actor_cpus` is this machine's, as the run's own Ray has)
    assert summary["run"]["runtime"]["hosts_per_actor"] == sc.runtime.per_actor(16, actor_cpus())
    actors = -(-16 // summary["run"]["runtime"]["hosts_per_actor"])
    counts = tree.peak_counts
    assert counts.get("ray worker", 0) >= actors and counts.get("redis-server", 0) >= 16, counts
    assert counts.get("ray system", 0) >= 1 and counts.get("driver") == 1, counts
    peak = tree.peak
    ratio = estimate.total / peak
    detail = f"estimate {estimate.total / 2**30:.2f} GiB, measured peak {peak / 2**30:.2f} GiB "
    detail += f"({ {k: round(v / 2**30, 2) for k, v in tree.peak_parts.items()} }, {wall:.0f} s)"
    print(detail)
    assert 0.75 <= ratio <= 1.25, detail


def test_driver_series_estimate_matches_the_recorder():
    """The driver's series term counts what the recorder holds (guest counts as int32); the
    frames built from it are 64-bit, as docs/output.md documents them."""
    import numpy as np

    from overcommit.cluster import memory
    from overcommit.metrics import GUEST_COLUMNS, Recorder

    epochs, guests = 200, 64
    rec = Recorder([f"vm-{i}" for i in range(guests)], ["h"] * guests, ["h"], epochs, 0.1)
    rng = np.random.default_rng(3)
    for arr in rec.g.values():
        arr[:] = rng.integers(0, 2**31 - 1, arr.shape)
    rec.ghost[:] = 0
    held = sum(a.nbytes for a in rec.g.values()) + rec.ghost.nbytes
    assert held == epochs * guests * (memory.GUEST_ROW_RECORDED + 4)
    assert held < epochs * guests * (8 * len(GUEST_COLUMNS) + 4) * 0.6  # int32 counts
    frame = rec.guests_frame()
    for c in GUEST_COLUMNS:
        assert frame[c].dtype == (np.float64 if c.endswith("_s") else np.int64)
        assert np.array_equal(frame[c].to_numpy().reshape(epochs, guests), rec.g[c])


@pytest.mark.parametrize(
    ("config", "mechanism", "seconds", "shows"),
    [
        ("double-swapping.yaml", "none", 15, set()),
        ("double-swapping.yaml", "frontswap", 15, {"tmem_puts", "frontswap_pages"}),
        ("double-swapping.yaml", "host-swap", 15, {"hswap_frames"}),
        ("double-swapping.yaml", "selfballoon", 15, {"balloon_pages"}),
        ("double-swapping.yaml", "cached-disk", 15, {"cache_pages"}),
        ("double-swapping.yaml", "zram", 15, {"zpool_pages", "zpool_bytes"}),
        ("cleancache.yaml", "cleancache", 40, {"file_pages", "ephemeral_pages"}),
    ],
)
def test_run_records_non_zero_only_the_columns_the_estimate_counts(
    config: str, mechanism: str, seconds: int, shows: set[str]
) -> None:
    """The driver's series term counts, per guest, the columns its mechanisms and workload may
    make non-zero (`metrics.recorded_columns`): a run writes no other (each would be memory
    the estimate missed), and the mechanism's own columns do show (the table is not empty)."""
    from overcommit import api
    from overcommit.cluster import memory
    from overcommit.cluster.runtime import build_guest
    from overcommit.metrics import GUEST_COLUMNS, recorded_columns

    sc = apply_overrides(load_scenario(ROOT / "configs" / config), {"mechanism": mechanism})
    spec = sc.guest_specs()[0]
    g = build_guest(sc, spec, sc.host_names()[0])
    counted = recorded_columns(g.features, g.has_files)
    ts = api.run(sc, runtime="inline", duration=f"{seconds}s").timeseries
    written = {c for c in GUEST_COLUMNS if (ts[c] != 0).any()}
    assert written <= counted, sorted(written - counted)
    assert shows <= written, sorted(shows - written)
    row = memory.row_bytes(counted)
    assert row < memory.GUEST_ROW_RECORDED or counted == set(GUEST_COLUMNS)
    assert memory.row_bytes(frozenset(GUEST_COLUMNS)) == memory.GUEST_ROW_RECORDED


def test_recorder_leaves_the_memory_of_columns_that_stay_zero_untouched():
    """Guest columns that only ever get zeros (the columns of mechanisms a run does not use)
    are never written, so `np.zeros`'s lazily mapped pages stay unused: the process's RSS grows
    by the written columns only. Their values, and a column that turns non-zero late, read
    back as recorded."""
    import numpy as np
    import psutil

    from overcommit.metrics import GUEST_COLUMNS, Recorder, guest_dtype

    guests, epochs = 512, 2000
    names = [f"vm-{i}" for i in range(guests)]
    cols = list(GUEST_COLUMNS)
    zero = set(cols[10:30])
    rss0 = psutil.Process().memory_info().rss
    rec = Recorder(names, ["h"] * guests, ["h"], epochs, 0.1)
    rows = {c: np.full((guests, 10), 0 if c in zero else 3, guest_dtype(c)) for c in GUEST_COLUMNS}
    late = cols[12]
    for e in range(0, epochs, 10):
        if e == 1500:
            rows[late] = np.full((guests, 10), 5, guest_dtype(late))
        rec.record_guests(e, e + 10, names, rows, "h")
    grown = psutil.Process().memory_info().rss - rss0
    full = sum(a.nbytes for a in rec.g.values())
    kept = sum(a.nbytes for c, a in rec.g.items() if c not in zero) + rec.ghost.nbytes
    assert grown < kept + 0.5 * (full - kept)  # the zero columns' pages were not touched
    assert (rec.g[late][:1500] == 0).all() and (rec.g[late][1500:] == 5).all()
    assert all((rec.g[c] == 3).all() for c in GUEST_COLUMNS if c not in zero)
    assert all((rec.g[c] == 0).all() for c in zero if c != late)


def test_run_directory_tables_written_in_chunks_equal_the_whole_frames(tmp_path):
    """guests/hosts files written chunk by chunk from the recorder (what a run does, so that
    a large run never holds its whole frame) hold exactly what the whole frame would write:
    the same CSV bytes and the same parquet table."""
    import numpy as np
    import pandas as pd

    from overcommit.metrics import Recorder
    from overcommit.output import write_table

    epochs, guests = 23, 5
    rec = Recorder(
        [f"vm-{i}" for i in range(guests)], ["a", "b"] * 2 + ["a"], ["a", "b"], epochs, 0.1
    )
    rng = np.random.default_rng(7)
    for arr in [*rec.g.values(), *rec.h.values()]:
        arr[:] = rng.integers(0, 10_000, arr.shape) / (7 if arr.dtype.kind == "f" else 1)
    rec.ghost[:] = rng.integers(0, 3, rec.ghost.shape)  # 2: down (no host)
    for stem, frame in (("guests", rec.guests_frame()), ("hosts", rec.hosts_frame())):
        whole, chunked = tmp_path / "whole", tmp_path / "chunked"
        write_table(whole, stem, frame)
        write_table(chunked, stem, lambda stem=stem: rec.chunks(stem, rows=7))
        assert len(list(rec.chunks(stem, rows=7))) > 3
        assert (whole / f"{stem}.csv").read_bytes() == (chunked / f"{stem}.csv").read_bytes()
        pd.testing.assert_frame_equal(
            pd.read_parquet(whole / f"{stem}.parquet"), pd.read_parquet(chunked / f"{stem}.parquet")
        )


def test_estimate_counts_one_worker_per_group_of_hosts():
    """With `runtime.hosts_per_actor` the estimate counts one Ray worker per group of hosts
    (16 hosts, 4 per actor: 4 workers) beside Ray's idle ones, and nothing else moves."""
    import os

    from overcommit.cluster.memory import RAY_WORKER

    sc = load_scenario(ROOT / "configs" / "bench-1k.yaml")
    assert sc.runtime.hosts_per_actor == "auto"  # the scenario names none: the default
    one = preflight(apply_overrides(sc, {"runtime.hosts_per_actor": 1}))
    four = preflight(apply_overrides(sc, {"runtime.hosts_per_actor": 4}))
    five = preflight(apply_overrides(sc, {"runtime.hosts_per_actor": 5}))  # 5, 5, 5, 1
    idle = os.cpu_count() or 1
    assert (one.processes, four.processes, five.processes) == (16 + idle, 4 + idle, 4 + idle)
    assert one.ray - four.ray == 12 * RAY_WORKER
    assert (one.model, one.driver, one.redis) == (four.model, four.driver, four.redis)
    # `auto`: as many worker processes as this machine's CPUs (a Ray started here has them)
    auto = preflight(sc)
    per = -(-16 // idle)
    assert auto.processes == -(-16 // per) + idle
    assert auto.processes - idle <= min(16, idle)
    # the console line says how the hosts are laid out
    assert f"({4 + idle} workers; 4 host actor processes, 4 hosts each)" in four.line()
    assert f"{16 + idle} workers; 16 host actor processes)" in one.line()
    assert (auto.host_processes, auto.hosts_per_actor) == (-(-16 // per), per)
