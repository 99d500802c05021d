"""CPU cost of one Ray actor call of the size a guest window makes, on each side of the call.

The `actors` placement makes one call per guest per window (plus one per host): 19,200 guest
calls in the 10 emulated minutes of configs/bench-4x8.yaml. This script measures what one such
call costs in CPU time, in the caller and in the actor, for a sync actor and an async one, with
a reply shaped like a guest window's (about 8 KiB pickled: 30 per-epoch columns of 10 epochs,
a state record, a histogram). The baseline, measured in the same run, is the in-process cost of
pickling and unpickling the same reply. Prints a Markdown table.

    python benchmarks/bench_actor_calls.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import time

import numpy as np
import ray


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def window_reply(epochs: int = 10) -> dict:
    """A stand-in for one guest window's reply, of the same shape and pickled size."""
    rows = {f"col_{i}": np.zeros(epochs, np.float64 if i % 3 else np.int64) for i in range(30)}
    state = {f"field_{i}": i for i in range(25)}
    carry = {"counters": {f"counter_{i}": i for i in range(60)}, "hist": np.zeros(400, np.int64)}
    return {"rows": rows, "backed": np.zeros(epochs, np.int64), "state": state, "carry": carry}


class SyncActor:
    def __init__(self, reply: dict) -> None:
        self.reply = reply

    def window(self, e0: int, e1: int, directives: dict) -> dict:
        return self.reply

    def cpu(self) -> float:
        return _cpu()


class AsyncActor:
    def __init__(self, reply: dict) -> None:
        self.reply = reply

    async def window(self, e0: int, e1: int, directives: dict) -> dict:
        return self.reply

    def cpu(self) -> float:
        return _cpu()


def measure_actor(cls: type, reply: dict, calls: int) -> tuple[float, float, float]:
    """(wall ms, caller CPU ms, actor CPU ms) per call; the reply is stored in the actor and
    each call sends a small argument, as a window's directives are."""
    actor = ray.remote(num_cpus=0)(cls).remote(reply)
    directives = {"quota": 1000, "grant": 0.5, "frozen": False}
    for i in range(100):  # warm-up
        ray.get(actor.window.remote(i, i + 10, directives))
    a0, c0, t0 = ray.get(actor.cpu.remote()), _cpu(), time.perf_counter()
    for i in range(calls):
        ray.get(actor.window.remote(i, i + 10, directives))
    wall, caller, a1 = time.perf_counter() - t0, _cpu() - c0, ray.get(actor.cpu.remote())
    ray.kill(actor)
    return 1e3 * wall / calls, 1e3 * caller / calls, 1e3 * (a1 - a0) / calls


def measure_pickle(reply: dict, calls: int) -> float:
    """CPU ms to pickle and unpickle the reply once, in this process."""
    c0 = _cpu()
    for _ in range(calls):
        pickle.loads(pickle.dumps(reply, protocol=5))
    return 1e3 * (_cpu() - c0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    reply = window_reply()
    size = len(pickle.dumps(reply, protocol=5))
    from overcommit.cluster.ray_runtime import quiet_ray

    quiet_ray()  # no raylet warnings on the console
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, num_cpus=2)
    base = measure_pickle(reply, args.calls)
    cpu = platform.processor() or platform.machine()
    print(f"nproc {os.cpu_count()}, {cpu}, ray {ray.__version__}")
    print(f"reply: {size} bytes pickled; baseline (pickle + unpickle in process): {base:.3f} ms")
    print()
    print("| actor | wall ms/call | caller CPU ms/call | actor CPU ms/call | both / baseline |")
    print("|---|---:|---:|---:|---:|")
    for cls in (SyncActor, AsyncActor):
        wall, caller, actor = measure_actor(cls, reply, args.calls)
        print(
            f"| {cls.__name__} | {wall:.3f} | {caller:.3f} | {actor:.3f} "
            f"| {(caller + actor) / base:.1f}x |"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
