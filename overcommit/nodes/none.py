"""`none`: no overcommit. Guests reclaim to their own swap disks; the host lends nothing.

This is the baseline every mechanism is compared against.
"""

from __future__ import annotations

from overcommit.nodes.mechanism import Mechanism


class NoOvercommit(Mechanism):
    name = "none"
    guest_features = frozenset()
