"""What guests do to memory: page-touch generators built from a scenario's `workload:`.

`zipf` draws touches from a bounded power law over the working set (skew 0 is uniform);
`phases` switches between such settings over time, for peaks and valleys. See `generators`.
"""

from overcommit.workloads.generators import Phase, TouchStreams, Workload, make_workload

__all__ = ["Phase", "TouchStreams", "Workload", "make_workload"]
