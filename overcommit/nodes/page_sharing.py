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

The 2010 thread: the hypervisor-side alternative nobody in it measured: the host finds
identical frames and maps them once, with no guest cooperation; a write breaks the sharing.
Compare `page-sharing` (alone or `+balloon+zswap+host-swap`, vSphere's stack) with `frontswap`.

Guest hooks (`PageSharingGuest`): after the epoch's page moves (`settle`) writes to merged
frames break copy-on-write (the vCPU waits: `cow_break`) and the scanner merges what the
host's stable tree holds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from overcommit.nodes.host import F_RAM
from overcommit.nodes.kernel.hooks import EpochContext, GuestMechanism
from overcommit.nodes.kernel.types import ZERO_PAGE_KEY
from overcommit.nodes.mechanism import Mechanism
from overcommit.stores.codec import is_common

if TYPE_CHECKING:
    from overcommit.nodes.host import Directives, HostModel
    from overcommit.nodes.kernel.model import GuestModel

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
    guest_hooks = ("PageSharingGuest",)
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


class PageSharingGuest(GuestMechanism):
    """Guest side (the host's scanner acting on the guest's frames): writes to merged frames
    break copy-on-write (the vCPU waits), the scanner reports candidates and merges frames
    whose content the host's stable tree holds."""

    features = frozenset({"page_sharing"})
    order = 60
    tracks_frames = True

    def init(self, g: GuestModel) -> None:
        g.sharing = True
        g.ksm_hand = 0
        g.ksm_candidates = []
        g.ksm_key = np.zeros(g.nframes, np.uint64)  # key each frame was last reported with
        g.win_version = np.zeros(g.N, np.uint32)

    def start_window(self, g: GuestModel, e0: int, d: Directives) -> None:
        _merge_reported(g, d)
        g.ksm_candidates = []
        g.win_version = g.version.copy()

    def settle(self, g: GuestModel, ep: EpochContext) -> None:
        self.cow = _ksm_step(g, ep.epoch, ep.d, ep.wp, ep.in_frames)

    def stall(self, g: GuestModel, ep: EpochContext, s: dict[str, float]) -> None:
        costs = g.costs
        s["cow_break"] = self.cow * (
            costs.minor_fault + costs.copy(g.page_size) + costs.host_page_alloc
        )


def _content_keys(g: GuestModel, pages: np.ndarray) -> np.ndarray:
    """Content keys of these pages (0: content no other page can have). `full` payload:
    a hash of the generated bytes; `digest`: the same rule without the bytes."""
    v = g.version[pages]
    if g.payload == "full":
        return g._batch(pages, v).checksums.astype(np.uint64)
    keys = np.zeros(len(pages), np.uint64)
    if g.workload.compressibility >= 1.0:  # every page is the zero page
        keys[:] = ZERO_PAGE_KEY
        return keys
    common = (v == 0) & is_common(pages, g.workload.duplicates)
    keys[common] = (pages[common].astype(np.uint64) << np.uint64(1)) | np.uint64(1)
    return keys


def _ksm_step(
    g: GuestModel, epoch: int, d: Directives, written: np.ndarray, in_frames: np.ndarray
) -> int:
    """Copy-on-write breaks and this epoch's scan; returns the breaks the guest waited for."""
    fs = g.frames
    wf = g.frame[written]
    wf = wf[wf >= 0].astype(np.int64)
    breaks = np.union1d(wf[fs.mkey[wf] != 0], in_frames[fs.mkey[in_frames] != 0])
    n = fs.unmerge(breaks)
    g.counters["cow_breaks"] += n
    k = min(d.scan_pages, g.nframes)
    if k and d.stable is not None:
        idx = (g.ksm_hand + np.arange(k)) % g.nframes
        g.ksm_hand = int((g.ksm_hand + k) % g.nframes)
        pg = g.fpage[idx].astype(np.int64)
        ok = (pg >= 0) & (fs.mkey[idx] == 0) & (fs.state[idx] == F_RAM)
        pgs = pg[ok]
        ok_p = g.version[pgs] == g.win_version[pgs]  # not written this window
        frames, pgs = idx[ok][ok_p], pgs[ok_p]
        keys = _content_keys(g, pgs)
        nz = keys != 0
        frames, keys = frames[nz], keys[nz]
        hit = np.isin(keys, d.stable)
        fs.merge(frames[hit], keys[hit])
        g.counters["pages_merged"] += int(np.count_nonzero(hit))
        if (~hit).any():
            g.ksm_candidates.append(keys[~hit])
            g.ksm_key[frames[~hit]] = keys[~hit]
    return n


def _merge_reported(g: GuestModel, d: Directives) -> None:
    """The pages the scanner reported whose content has just become shared merge now
    (KSM merges the pair it finds), if they still hold that content."""
    if d.stable is None:
        return
    fs = g.frames
    frames = np.flatnonzero(g.ksm_key)
    if len(frames) == 0:
        return
    keys = g.ksm_key[frames]
    promoted = np.isin(keys, d.stable)
    frames, keys = frames[promoted], keys[promoted]
    g.ksm_key[frames] = 0
    pg = g.fpage[frames].astype(np.int64)
    ok = (pg >= 0) & (fs.mkey[frames] == 0) & (fs.state[frames] == F_RAM)
    frames, keys, pg = frames[ok], keys[ok], pg[ok]
    if len(frames):
        same = _content_keys(g, pg) == keys  # unchanged since it was scanned
        fs.merge(frames[same], keys[same])
        g.counters["pages_merged"] += int(np.count_nonzero(same))
