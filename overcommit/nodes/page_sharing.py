"""`page-sharing` (KSM / VMware TPS): the host merges identical guest frames, copy-on-write.

Content: every page a guest writes is its own; a page never written since boot may hold the
guest image's content, the same in every guest (`workload.duplicates`, a share of the page
numbers), and with `compressibility: 1` every page is the zero page. In `full` payload mode the
content is really generated that way and pages are matched by a hash of their bytes; in
`digest` mode by the same rule without generating bytes.

Guest side (in `GuestModel`, state in `nodes.host.GuestFrames`): each epoch the host's scanner
visits `scan_pages` of the guest's frames round-robin (`page_sharing.scan_rate`, KSM's default
100 pages per 20 ms, split among the host's guests). A resident frame whose page was not written
this window and whose content is in the host's stable tree is merged: it now maps the one shared
host frame and its own is freed. Other content keys it saw are reported to the host as
candidates. A write into a merged frame, or a new page mapped into one, breaks the sharing
(copy-on-write: a fault, a page copy and a host frame allocation, `cow_break` stall).

Host side (`PageSharing.plan_window`): contents seen at least twice among the candidates (in
one guest or across several) join the stable tree, as far as free RAM has a frame for each;
contents no guest maps any more leave it. Host RAM holds one frame per stable content
(`shared_pages`). The host also computes its VMware-style free-memory state from free RAM
against `min_free` (vSphere's minFree: 899 MB for the first 28 GB of RAM plus 1% of the rest):
`high` (at or above minFree), `clear` (below 100%: page sharing), `soft` (below 64%:
ballooning), `hard` (below 32%: compression and host swapping), `low` (below 16%). In a
combination with page sharing, the balloon policy asks for memory only from `soft` down and
zswap/zram compress only from `hard` down; host swapping pages out only when RAM is short in
any state. (VMware's blocking of allocations in `low` is not modelled.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from overcommit.nodes.mechanism import Mechanism

if TYPE_CHECKING:
    from overcommit.nodes.host import HostModel

STATES = ("high", "clear", "soft", "hard", "low")
MB = 10**6
GB = 10**9


def vmware_min_free(ram_bytes: int) -> int:
    """vSphere's minFree: 899 MB for the first 28 GB of host RAM plus 1% of the rest."""
    return 899 * MB + max(0, ram_bytes - 28 * GB) // 100


def memory_state(free_pages: int, min_free_pages: int) -> str:
    """The VMware free-memory state for this much free RAM."""
    r = free_pages / max(1, min_free_pages)
    if r >= 1.0:
        return "high"
    if r >= 0.64:
        return "clear"
    if r >= 0.32:
        return "soft"
    if r >= 0.16:
        return "hard"
    return "low"


class PageSharing(Mechanism):
    """Host policy: the stable tree of shared contents, the scan split, the memory state."""

    name = "page-sharing"
    guest_features = frozenset({"page_sharing"})
    plan_order = 0

    def plan_window(self, host: HostModel) -> None:
        guests = host.guests
        cfg = getattr(host.settings, "page_sharing", None)
        ps = host.page_size
        min_free = cfg.min_free if cfg is not None and cfg.min_free is not None else None
        if min_free is None:
            min_free = vmware_min_free(host.ram_pages * ps)
        host.state = memory_state(host.free_pages(), min_free // ps)
        if not guests:
            return
        refs = [g.merged_keys for g in guests if g.merged_keys is not None]
        used = np.unique(np.concatenate(refs)) if refs else np.zeros(0, np.uint64)
        rate = float(cfg.scan_rate) if cfg is not None else 5000.0
        scan = math.ceil(rate * host.epoch_seconds / max(1, len(guests)))
        # one full pass of the scanner over the largest guest, in windows
        per_window = scan * max(1.0, host.settings.sync_window / host.epoch_seconds)
        npass = math.ceil(max(g.nframes for g in guests) / max(1.0, per_window)) + 1
        new = _unstable_tree(host, guests, used, npass)
        # a new shared content needs a host frame until the private copies are merged away
        room = max(0, host.free_pages() - math.ceil(0.01 * host.ram_pages))
        new = new[:room]
        stable = np.union1d(used, new).astype(np.uint64)
        host.shared_pages = len(stable)
        for g in guests:
            g.plan.stable = stable
            g.plan.scan_pages = scan
            g.plan.host_state = host.state
            g.plan.compress = host.state in ("hard", "low")


def _unstable_tree(host: HostModel, guests: list, used: np.ndarray, npass: int) -> np.ndarray:
    """KSM's unstable tree, kept by the host across windows: contents seen once, by whom and
    when. A content reported by a second guest (or seen in two guests in one window) is
    returned to join the stable tree; entries older than a full scan pass are forgotten."""
    memo = host.memo.setdefault(
        "_ksm",
        {"keys": np.zeros(0, np.uint64), "owner": np.zeros(0, np.int64), "seen": np.zeros(0)},
    )
    host.window_count = getattr(host, "window_count", 0) + 1
    now = host.window_count
    ks, os_ = [], []
    for i, g in enumerate(guests):
        if g.candidates is not None and len(g.candidates):
            c = np.unique(g.candidates)
            ks.append(c)
            os_.append(np.full(len(c), i, np.int64))
    if not ks:
        return np.zeros(0, np.uint64)
    k, o = np.concatenate(ks), np.concatenate(os_)
    k_used = np.isin(k, used)
    k, o = k[~k_used], o[~k_used]
    order = np.lexsort((o, k))
    k, o = k[order], o[order]
    uk, first, counts = np.unique(k, return_index=True, return_counts=True)
    promote = uk[counts >= 2]  # two guests reported it in this window
    # ... or one did now and another earlier (still in the unstable tree)
    names = [g.name for g in guests]
    owner_now = np.array([_owner_id(names[i]) for i in o[first]], np.int64)
    mk, mo, ms = memo["keys"], memo["owner"], memo["seen"]
    pos = np.searchsorted(mk, uk)
    inside = pos < len(mk)
    inside[inside] = mk[pos[inside]] == uk[inside]
    other = np.zeros(len(uk), bool)
    other[inside] = mo[pos[inside]] != owner_now[inside]
    promote = np.union1d(promote, uk[other])
    # the rest stays (or enters) the unstable tree; stale entries leave it
    stay = ~np.isin(uk, promote) & ~inside
    keep = (ms > now - npass) & ~np.isin(mk, promote)
    keys = np.concatenate([mk[keep], uk[stay]])
    order = np.argsort(keys, kind="stable")
    memo["keys"] = keys[order]
    memo["owner"] = np.concatenate([mo[keep], owner_now[stay]])[order]
    memo["seen"] = np.concatenate([ms[keep], np.full(int(stay.sum()), now)])[order]
    return promote.astype(np.uint64)


def _owner_id(name: str) -> int:
    from overcommit.rng import stable_hash

    return stable_hash(name) & 0x7FFFFFFFFFFFFFFF
