"""Hypervisor hosts and guest kernels, and the overcommit mechanisms between them.

`guest` holds a guest kernel's memory state (where each page is, LRU, watermarks, swap slots,
OOM); `host` holds a hypervisor's RAM accounting and the frames backing each guest; one module
per mechanism (`none`, `frontswap`, `host_swap`, `balloon`, `selfballoon`,
`cached_disk`, `zswap`, `page_sharing`, `cleancache`) plugs into both through `mechanism.Mechanism`.
"""

from overcommit.nodes.mechanism import MECHANISMS, Mechanism, build_mechanism

__all__ = ["MECHANISMS", "Mechanism", "build_mechanism"]
