"""Hypervisor hosts and guest kernels, and the overcommit mechanisms between them.

`kernel` is the guest paging core (where each page is, LRU, watermarks, swap slots, faults,
OOM) and the hook protocol mechanisms plug into (`kernel.hooks.GuestMechanism`); `guest`
re-exports its names; `host` holds a hypervisor's RAM accounting and the frames backing each
guest; one module per mechanism (`none`, `frontswap`, `host_swap`, `balloon`, `selfballoon`,
`cached_disk`, `zswap`, `page_sharing`, `cleancache`, `ramdisk`) holds both its sides: the host's
`plan_window` and the guest's hooks, registered in `mechanism` (see docs/mechanisms.md).
"""

from overcommit.nodes.mechanism import MECHANISMS, Mechanism, build_mechanism

__all__ = ["MECHANISMS", "Mechanism", "build_mechanism"]
