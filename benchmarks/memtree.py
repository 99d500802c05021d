"""Peak resident memory of a process tree, sampled in a thread while something runs.

`TreeSampler(pid)` samples every `interval` seconds the RSS of the process `pid` and of all its
descendants (the driver, Ray's own processes and workers it starts, every `redis-server`), sums
them and keeps the peak of the sum, with the peak sum per kind of process (`driver`, `ray
worker`, `ray system`, `redis-server`, `other`) at that moment; it also keeps each process's
CPU time (user + system) as last seen, summed per kind in `cpu_seconds`. Summed RSS counts a
shared library's pages once per process that maps them (numba's LLVM, numpy, Ray's core
worker in every Ray worker); `peak_pss` is the peak of the summed proportional set size
(`/proc/PID/smaps_rollup`: a shared page split among the processes sharing it), the memory the
tree really takes. Reading it makes the kernel walk every mapped page (~25 ms of CPU per GiB
here), so it is read only when the summed RSS reaches a new high at least `pss_gap` seconds
after the last reading (memory grows through a run: the peak PSS comes with the peak RSS).

The sampling thread's own CPU (`own_cpu`) is measured apart: when the sampled tree's root is
this process, `cpu_seconds` books it as `sampler`, not as the `driver`'s. Used by
`benchmarks/bench_placements.py` and by the memory-estimate test.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter

import psutil


def kind(p: psutil.Process, root: int) -> str:
    """What a process of the tree is, from its command line."""
    if p.pid == root:
        return "driver"
    try:
        cmd = " ".join(p.cmdline()) or p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "other"
    if "redis" in cmd:  # redis-server, and its children (an append-only file rewrite)
        return "redis-server"
    if cmd.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):
        return "ray system"
    if "default_worker.py" in cmd or cmd.startswith("ray::"):
        return "ray worker"
    if any(s in cmd for s in ("gcs_server", "raylet", "ray/", "ray.", "log_monitor")):
        return "ray system"
    if "python" in cmd:  # a Ray worker starting, before it takes its ray:: title
        return "ray worker"
    return "other"


def pss(pid: int) -> int:
    """The process's proportional set size in bytes (0 if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler:
    """Samples the process tree of `pid` (default: this process) in a background thread."""

    def __init__(
        self, pid: int | None = None, interval: float = 0.25, pss_gap: float = 5.0
    ) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.pss_gap = pss_gap  # seconds between PSS readings at least (0: no PSS)
        self._pss_at = -float("inf")  # when PSS was last read
        self._pss_rss = 0  # the summed RSS then
        self.pss_reads = 0
        self.peak = 0
        self.peak_pss = 0
        self.peak_parts: dict[str, int] = {}
        self.peak_counts: dict[str, int] = {}
        self.samples = 0
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (kind, CPU seconds last seen)
        self._cpu0: dict[int, float] | None = None  # CPU seconds of the first sample's processes
        self.others: dict[int, str] = {}  # pid -> command line of processes of kind `other`
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.own_cpu = 0.0  # CPU seconds the sampling thread itself took (in this process)

    def sample(self) -> int:
        """One sample: the tree's summed RSS now (also updates the peak)."""
        parts: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            k = kind(p, self.root.pid)
            if k == "other" and p.pid in self._cpu:  # a dying process: its command line is gone
                k = self._cpu[p.pid][0]
            self._cpu[p.pid] = (k, t.user + t.system)
            if k == "other" and p.pid not in self.others:
                try:
                    self.others[p.pid] = " ".join(p.cmdline())[:120] or p.name()
                except psutil.Error:
                    self.others[p.pid] = "?"
            parts[k] += rss
            counts[k] += 1
        total = sum(parts.values())
        now = time.monotonic()
        if self.pss_gap and total > self._pss_rss and now - self._pss_at >= self.pss_gap:
            self.peak_pss = max(self.peak_pss, sum(pss(p.pid) for p in procs))
            self._pss_at, self._pss_rss = now, total
            self.pss_reads += 1
        if self._cpu0 is None:
            self._cpu0 = {pid: t for pid, (_, t) in self._cpu.items()}
        self.samples += 1
        if total > self.peak:
            self.peak = total
            self.peak_parts = dict(parts)
            self.peak_counts = dict(counts)
        return total

    @property
    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per kind of process since the first sample, each process as last
        sampled (a process's time after its last sample is missed; sample often)."""
        out: Counter[str] = Counter()
        first = self._cpu0 or {}
        for pid, (k, t) in self._cpu.items():
            out[k] += t - first.get(pid, 0.0)
        if self.root.pid == os.getpid() and "driver" in out:  # the sampling thread's share
            out["driver"] -= self.own_cpu
            out["sampler"] = self.own_cpu
        return dict(out)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.thread_time()
            self.sample()
            self.own_cpu += time.thread_time() - t
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def watch(
    cmd: list[str], interval: float = 0.25, **popen: object
) -> tuple[int, float, TreeSampler]:
    """Run `cmd` as a child process, sampling its tree; returns (exit code, wall s, sampler)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)  # noqa: S603
    sampler = TreeSampler(proc.pid, interval)
    with sampler:
        code = proc.wait()
    return code, time.perf_counter() - t0, sampler
