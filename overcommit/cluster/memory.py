"""Preflight memory: the Redis stores' upper bound and the run's expected peak memory.

`estimate_store_bytes` bounds what the Redis stores may ever hold (every guest's swap disk
full, every pool at its largest); `limits.store_memory` refuses a run above it.
`estimate_peak_memory` predicts the peak resident memory of the whole process tree a run
starts, summed over processes (RSS), by part:

- **model**: each guest's per-page and per-frame numpy arrays, read from a guest model built
  for the first guest of each group (so a change of dtype in the model shows here at once),
  counted as the kernel makes them resident: an array written when the guest boots is resident
  whole; a zero-filled one only where the run writes it, which for page-indexed arrays is
  everywhere once the workload has touched a few percent of its pages (ranks scatter over the
  footprint) and for frame-indexed arrays the frames the guest has filled (frames are handed
  out in order); the pages a guest touches by the end of the run are counted by drawing its
  workload's own touches;
- **driver**: the process running the run (its base and the per-epoch time series it records:
  for each guest the columns its mechanisms and workload may make non-zero, the others never
  touched; the output files are written from them in chunks once the runtime and the stores
  are gone);
- **ray**: Ray's own processes and one worker process per host actor (packed; one per group of
  `runtime.hosts_per_actor` hosts, `auto` resolved with `actor_cpus`) or per host and guest
  actor (actors), plus the idle workers Ray keeps (one per CPU, `actor_cpus`);
- **redis**: one server per host and the shared-storage server, and the page records the run is
  expected to store: about 1.3 per touched page that does not fit in a guest's RAM, at the
  resident bytes a record costs a server (record, hash entry, fragmentation).

The per-process constants were measured on the reference machine (Python 3.11, Ray 2.60,
redis-server 6.2, numpy 2.4; see BENCHMARKS.md, "Scale: bench-1k"); the estimate was within a
few percent of the measured peak of `bench-1k` run for 20 s.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from overcommit.metrics import GUEST_COLUMNS, HOST_COLUMNS, guest_dtype, recorded_columns
from overcommit.stores.codec import record_len

#: Bytes per hash field beyond the record (dict entry, SDS headers, bucket pointer) in a Redis
#: hash that is a hashtable (measured with MEMORY USAGE: 96 B on redis-server 6.2, libc malloc).
REDIS_ENTRY_OVERHEAD = 96

#: What a stored page costs the server's resident memory beyond its record, once a run has
#: put, overwritten and deleted pages for a while: tmem pools and swap disks keep their
#: records in 128-page hashes that Redis stores compactly (listpack entry headers, the
#: buckets' keys and index, malloc fragmentation). Calibrated on bench-1k's whole run
#: (1.06 GiB of redis-servers at the peak against ~29.8M records expected, of 26 bytes).
#: With one hashtable per pool or disk it was 143 B.
REDIS_RECORD_RSS = 12
#: Records stored per touched page that does not fit in guest RAM, in the same run: pools keep
#: clean copies of pages read back, and swap slots their records while the page is in RAM.
RECORDS_PER_PAGE_OUT = 1.3

MiB = 1 << 20
#: An idle redis-server (measured RSS).
REDIS_BASE = 4.5 * MiB
#: The driver process: Python, numpy, pandas, redis-py, the CLI; with Ray's driver on top.
DRIVER_BASE = 150 * MiB
DRIVER_RAY = 60 * MiB
#: Ray's own processes on a local Ray the run starts (gcs_server, raylet, log monitor, agents).
RAY_SYSTEM = 325 * MiB
#: One Ray worker process with overcommit, numpy, redis-py and numba imported and the compiled
#: kernels loaded (a bench-1k host actor's worker at 60 s: 277 MB beyond its guests' arrays;
#: ~220 MB of it before Ray's core worker).
RAY_WORKER = 260 * MiB
#: Python objects of one guest beyond its arrays (model, hooks, streams, connections).
GUEST_OBJECTS = 64 * 1024


#: A guest-epoch's row as the driver records it during the run, every column written (int32
#: counts; see `overcommit.metrics.Recorder`); a guest's own is `row_bytes` of the columns its
#: features may make non-zero (`metrics.recorded_columns`), the others never touched.
def row_bytes(columns: frozenset[str]) -> int:
    """Bytes a guest-epoch's row takes in the driver's `Recorder` for these columns."""
    return sum(np.dtype(guest_dtype(c)).itemsize for c in GUEST_COLUMNS if c in columns)


GUEST_ROW_RECORDED = row_bytes(frozenset(GUEST_COLUMNS))

#: The driver's own per-guest objects (specs, plan, the last window's reports).
DRIVER_PER_GUEST = 64 * 1024
#: A zero-filled page-indexed array counts as resident once the workload has touched this
#: share of its pages (ranks are scattered over the footprint, so every memory page of the
#: array holds a touched entry long before).
_SCATTERED = 0.02
#: At most this many touches are drawn per guest group to count the pages a guest touches.
_MAX_DRAWS = 10_000_000


def estimate_store_bytes(scenario: Any) -> tuple[int, int]:
    """Upper bound of (bytes, pages) the run's Redis stores may hold."""
    ps = scenario.page_size
    parts = scenario.mechanism.split("+")
    uses_tmem = "frontswap" in parts
    specs = scenario.guest_specs()
    pages = 0
    nbytes = 0
    if "host-swap" in parts:  # every host's swap area, full (records of this size)
        per = record_len(specs[0].name, scenario.payload, ps) + REDIS_ENTRY_OVERHEAD
        n = scenario.hosts.swap.size // ps * len(scenario.host_names())
        pages += n
        nbytes += n * per
    for g in specs:
        footprint = scenario.footprint(g.workload) // ps
        swap_pages = min(g.swap // ps, footprint)
        per = record_len(g.name, scenario.payload, ps) + REDIS_ENTRY_OVERHEAD
        pages += swap_pages
        nbytes += swap_pages * per
        if "cached-disk" in parts:  # the host cache may hold a copy of every slot
            pages += swap_pages
            nbytes += swap_pages * (per + REDIS_ENTRY_OVERHEAD)
        if "ramdisk" in parts:  # the RAM disk holds at most maxmem - memory of them
            rd = min(max(0, g.maxmem - g.memory) // ps, swap_pages)
            pages += rd
            nbytes += rd * (per + REDIS_ENTRY_OVERHEAD)
        files = int(round(g.workload.file_cache * footprint))
        copies = 2 if "cleancache" in parts else 1  # the file disk, and the ephemeral pool
        pages += files * copies
        nbytes += files * copies * (per + REDIS_ENTRY_OVERHEAD)
        if uses_tmem:
            lend = min(max(0, g.maxmem - g.memory) // ps, swap_pages)
            if scenario.hosts.tmem.max is not None:
                lend = min(lend, scenario.hosts.tmem.max // ps)
            lend = min(lend, scenario.hosts.ram // ps)
            pages += lend
            nbytes += lend * per
    return nbytes, pages


@dataclass
class MemoryEstimate:
    """A run's expected peak memory (bytes, summed RSS of its processes) by part."""

    model: int
    driver: int
    ray: int
    redis: int
    guests: int
    processes: int  # Ray workers (0 inline)
    records: int  # page records expected in Redis at the end
    record_bytes: int  # bytes one costs there
    model_bytes_per_page: float  # array bytes a guest allocates per footprint page
    store_bound: int  # estimate_store_bytes: what the stores may hold at most
    details: dict[str, int] = field(default_factory=dict)
    host_processes: int = 0  # actor processes running hosts (packed: one per group of hosts)
    hosts_per_actor: int = 0  # hosts each runs (0 inline)

    @property
    def total(self) -> int:
        return self.model + self.driver + self.ray + self.redis

    def line(self) -> str:
        """One console line: the total and its parts."""
        ray = ""
        if self.ray:
            hp, k = self.host_processes, self.hosts_per_actor
            ray = f", Ray {_gib(self.ray)} ({self.processes} workers; {hp} host actor "
            ray += "process" if hp == 1 else "processes"
            ray += f", {k} hosts each)" if k > 1 else ")"
        return (
            f"expected peak memory {_gib(self.total)}: model {_gib(self.model)} "
            f"({self.guests} guests, {self.model_bytes_per_page:.0f} B of arrays per page), "
            f"driver {_gib(self.driver)}{ray}, Redis {_gib(self.redis)} "
            f"({self.records:,} records of {self.record_bytes} B)"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _guest_arrays(guest: Any) -> list[tuple[np.ndarray, str]]:
    """Every numpy array a guest model holds (its own, its frames', its hooks'), once each,
    with the owner's attribute path."""
    seen: dict[int, tuple[np.ndarray, str]] = {}

    def walk(obj: Any, path: str, depth: int) -> None:
        for k, v in vars(obj).items():
            if isinstance(v, np.ndarray):
                seen.setdefault(id(v), (v, f"{path}.{k}"))
            elif (
                depth < 2 and type(v).__module__.startswith("overcommit") and hasattr(v, "__dict__")
            ):
                walk(v, f"{path}.{k}", depth + 1)
            elif depth < 2 and isinstance(v, list | tuple):
                for i, x in enumerate(v):
                    if type(x).__module__.startswith("overcommit") and hasattr(x, "__dict__"):
                        walk(x, f"{path}.{k}[{i}]", depth + 1)

    walk(guest, "guest", 0)
    # a view of an array held too (the page tables: fields of the page records) is not
    # memory of its own
    return [(a, path) for a, path in seen.values() if id(a.base) not in seen]


def touched_pages(workload: Any, streams: Any, seconds: float, step: float = 1.0) -> int:
    """Distinct pages `workload` touches in `seconds` of work (its own random streams)."""
    seen = np.zeros(workload.footprint, bool)
    t, drawn = 0.0, 0
    while t < seconds and drawn < _MAX_DRAWS:
        dt = min(step, seconds - t)
        pages, _ = workload.touches(streams, t, dt)
        seen[pages] = True
        drawn += len(pages)
        t += dt
        if drawn > workload.footprint and seen.all():
            return workload.footprint
    if t < seconds:  # stopped early: the rest of the run would touch the rest
        return workload.footprint
    return int(seen.sum())


_TOUCHED: dict[tuple[str, int, float], int] = {}


def _touched(spec: str, page_size: int, seconds: float, workload: Any) -> int:
    """`touched_pages` of a workload spec over a run, drawn once per process (a sweep's runs
    share it: the count hardly depends on the seed, so a fixed one is used)."""
    from overcommit.workloads import TouchStreams

    key = (spec, page_size, seconds)
    if key not in _TOUCHED:
        streams = TouchStreams(0, "memory-estimate", 0, "workload/0")
        _TOUCHED[key] = touched_pages(workload, streams, seconds)
    return _TOUCHED[key]


def _guest_model_bytes(scenario: Any, spec: Any, seconds: float) -> tuple[int, int, int, int]:
    """(resident array bytes at the end, allocated array bytes, pages touched, bytes of its
    recorded row: the columns it may make non-zero) of one guest."""
    from overcommit.cluster.runtime import build_guest

    g = build_guest(scenario, spec, scenario.host_names()[0])
    n, nframes = g.N, g.nframes
    touched = _touched(repr(spec.workload), scenario.page_size, seconds, g.workload)
    frames_used = min(nframes, touched)
    resident = allocated = 0
    for a, _ in _guest_arrays(g):
        allocated += a.nbytes
        written = any(a[k].any() for k in a.dtype.names) if a.dtype.names else a.any()
        if a.nbytes < 4096 or written:  # written at boot: resident whole
            resident += a.nbytes
        elif a.shape[:1] == (n,):
            resident += a.nbytes if touched >= _SCATTERED * n else a.nbytes * touched // n
        elif a.shape[:1] == (nframes,):
            resident += a.nbytes * frames_used // nframes
        else:
            resident += a.nbytes
    row = row_bytes(recorded_columns(g.features, g.has_files))
    return resident + GUEST_OBJECTS, allocated, touched, row


def actor_cpus() -> int:
    """The CPUs `runtime.hosts_per_actor: auto` spreads host actors over: the Ray cluster's
    when this process is connected to one, else this machine's (a Ray the run starts here
    gets them all)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return os.cpu_count() or 1


def estimate_peak_memory(scenario: Any) -> MemoryEstimate:
    """The run's expected peak memory, summed over the processes it starts, by part."""
    sc = scenario
    ps = sc.page_size
    specs = sc.guest_specs()
    hosts = len(sc.host_names())
    model = records = 0
    per_group: dict[int, tuple[int, int, int, int]] = {}
    rows = 0  # bytes of one epoch's rows of every guest (the columns each may record)
    alloc_pages = 0
    allocated_total = 0
    record_bytes = 0
    for spec in specs:
        if spec.group not in per_group:
            per_group[spec.group] = _guest_model_bytes(sc, spec, sc.duration)
        resident, allocated, touched, row = per_group[spec.group]
        rows += row + 4  # and the host it ran on (`Recorder.ghost`)
        model += resident
        allocated_total += allocated
        alloc_pages += sc.footprint(spec.workload) // ps
        ram_pages = spec.memory // ps
        records += int(RECORDS_PER_PAGE_OUT * max(0, touched - ram_pages))
        record_bytes = record_len(spec.name, sc.payload, ps) + REDIS_RECORD_RSS
    epochs = int(round(sc.duration / sc.epoch))
    # the frames the output files are written from come one chunk at a time, after the
    # runtime and the stores have stopped: the recorded series is the driver's part of the peak
    series = epochs * (rows + hosts * 8 * len(HOST_COLUMNS))
    ray_run = sc.runtime.kind == "ray"
    driver = DRIVER_BASE + (DRIVER_RAY if ray_run else 0) + series
    driver += DRIVER_PER_GUEST * len(specs)
    ray = processes = host_processes = per_actor = 0
    if ray_run:
        cpus = actor_cpus()  # what `auto` spreads hosts over, and Ray's idle workers (one each)
        per_actor = sc.runtime.per_actor(hosts, cpus)
        host_processes = -(-hosts // per_actor)
        processes = host_processes + (len(specs) if sc.runtime.guests == "actors" else 0)
        processes += cpus
        ray = processes * RAY_WORKER + (RAY_SYSTEM if sc.runtime.address is None else 0)
    servers = (0 if sc.redis.hosts else hosts) + (0 if sc.redis.shared else 1)
    redis = int(servers * REDIS_BASE) + records * record_bytes
    bound, _ = estimate_store_bytes(sc)
    return MemoryEstimate(
        model=int(model),
        driver=int(driver),
        ray=int(ray),
        redis=int(redis),
        guests=len(specs),
        processes=processes,
        records=records,
        record_bytes=record_bytes,
        model_bytes_per_page=allocated_total / max(1, alloc_pages),
        store_bound=bound,
        details={"series": series},
        host_processes=host_processes,
        hosts_per_actor=per_actor,
    )
