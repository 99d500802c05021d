"""The guest paging core: a guest kernel's memory (pages, frames, swap slots, reclaim,
faults, OOM) that names no mechanism, and the hook protocol mechanisms plug into.

- `types`: page locations, counters, stall sources, store requests and replies, EpochStats
- `hooks`: `GuestMechanism` (the protocol) and `EpochContext` (one epoch's page sets)
- `model`: `GuestModel` (state, frames, victim choice, windows, the quiet epoch)
- `epoch`: one epoch's stages; `scan`: reclaim orders; `checks`: records and conservation;
  `lifecycle`: OOM, failover, migration, crash
- `jit`: the stages' page loops compiled with numba (`OVERCOMMIT_JIT=0`: the numpy path)
"""

from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.model import GuestModel

__all__ = ["EpochContext", "GuestMechanism", "GuestModel"]
