"""`none`: no overcommit. Guests reclaim to their own swap disks; the host lends nothing.

This is the baseline every mechanism is compared against.

What it lets a user test: the baseline of every claim in the 2010 thread (how much faster is
frontswap "than a swap_ops based solution on workload YY", Pavel Machek asked): guests swap to
their own disks on shared storage and the host keeps all its free RAM. No guest hooks: the
paging core alone is this mechanism.
"""

from __future__ import annotations

from overcommit.nodes.mechanism import Mechanism


class NoOvercommit(Mechanism):
    name = "none"
    guest_features = frozenset()
