"""Checkers: emulator invariants that decide `valid`, each with evidence.

- `conservation`: host RAM and guest pages/frames/slots balance every epoch.
- `integrity`: every record read back from Redis (tmem pools, host caches and RAM disks, swap
  disks) carries the version the guest last wrote, with a matching checksum; nothing the guest
  owns is missing, nothing is held that the guest does not own. Reads during the run (gets,
  swap-ins) are checked too. The guest's file disk holds every file page that has left RAM at
  its current version (a dirty page in RAM may be newer); the ephemeral pool (cleancache) may
  have dropped any page but holds none the guest has in RAM, and none at an old version. During
  post-copy the source host's store of the pages left there holds exactly the pages still
  remote, each at the version the guest had at switch-over (`remote_pages`), and once the push
  is over it is gone.
- `frontswap`: pool counters in Redis equal what the guests hold; billing (RAM + tmem <= maxmem)
  never exceeded; no put succeeded while the client was frozen.
- `no_missing_pages`: no page a running guest expects in a store is missing: a swap-in, a
  frontswap get, a host-swap frame or a page-cache read during the run, and the pages counted
  `lost_pages` by the end. A host that dies takes its pages with it, but the guests that
  owned them crash and restart empty (failover counts those as `*_pages_lost`), so a running
  guest never legitimately misses one.

Outcomes (OOM kills, put failures, progress) are measured elsewhere and never decide validity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from overcommit.nodes.guest import FILE, FRONTSWAP, RAM, SWAP, GuestModel
from overcommit.stores.codec import RecordBatch

CHECKS = ("conservation", "integrity", "frontswap", "no_missing_pages")
MAX_EVIDENCE = 10


class CheckLog:
    """Violations per checker; keeps a count and the first few messages as evidence."""

    def __init__(self) -> None:
        self.count = {c: 0 for c in CHECKS}
        self.evidence: dict[str, list[str]] = {c: [] for c in CHECKS}

    def add(self, check: str, messages: list[str], where: str = "") -> None:
        if not messages:
            return
        self.count[check] += len(messages)
        room = MAX_EVIDENCE - len(self.evidence[check])
        for m in messages[: max(0, room)]:
            self.evidence[check].append(f"{where}{m}")

    @property
    def valid(self) -> bool:
        return not any(self.count.values())

    def to_json(self) -> dict:
        return {
            c: {"ok": self.count[c] == 0, "violations": self.count[c], "evidence": self.evidence[c]}
            for c in CHECKS
        }


def _compare(g: GuestModel, held: RecordBatch, expected: np.ndarray, where: str) -> list[str]:
    out = []
    pages = held.pages.astype(np.int64)
    top = max(int(expected.max()) if len(expected) else -1, int(pages.max()) if len(pages) else -1)
    if 0 <= top < 2 * max(g.N, 1) and (not len(expected) or int(expected.min()) >= 0):
        # page numbers are small: set differences by masks over them (sorted, distinct, as
        # setdiff1d gives them, without its sorts of the whole record set)
        want = np.zeros(top + 1, bool)
        want[expected] = True
        have = np.zeros(top + 1, bool)
        have[pages] = True
        missing = np.flatnonzero(want & ~have)
        extra = np.flatnonzero(have & ~want)
        known = want[pages]
    else:
        missing = np.setdiff1d(expected, pages)
        extra = np.setdiff1d(pages, expected)
        known = np.isin(pages, expected)
    if len(missing):
        out.append(
            f"{g.name}: {len(missing)} page(s) the guest holds in {where} are not there, "
            f"e.g. page {int(missing[0])}"
        )
    if len(extra):
        out.append(
            f"{g.name}: {where} holds {len(extra)} record(s) the guest does not own, "
            f"e.g. page {int(extra[0])}"
        )
    if len(held):
        p = pages[known]
        stale = held.versions[known] != g.version[p]
        bad = g.verify(held)[known]
        wrong = stale | bad
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            out.append(
                f"{g.name}: {int(wrong.sum())} stale or corrupt record(s) in {where}, e.g. page "
                f"{int(p[i])} holds version {int(held.versions[known][i])}, "
                f"last written {int(g.version[p[i]])}"
            )
    return out


def integrity(
    g: GuestModel, tmem: RecordBatch | None, swap: RecordBatch, back: Any = None
) -> list[str]:
    """Compare what Redis holds for one guest with what the guest believes it stored.

    With a host-cached disk, a page on the swap disk may be in the cache, on the disk or both:
    a dirty cached page need not have reached the disk yet, but every page must be in one of
    them with the version last written, and a clean cached page must also be on the disk (the
    cache never drops a page it has not written). A host RAM disk (`ramdisk`) is read back
    from its own keys the same way, and every page it holds must be marked dirty (it is the
    page's only copy: nothing behind it was ever written). Host swap must hold exactly the
    frames the host paged out, each with the content it wrote.
    """
    out = []
    if tmem is not None:
        out += _compare(g, tmem, np.flatnonzero(g.slot == FRONTSWAP), "its tmem pool")
        if getattr(g, "billing", None) is not None:
            out += _billing(g, tmem)
    expected = np.flatnonzero(g.slot == SWAP)
    cache = getattr(back, "cache", None)
    if cache is None:
        out += _compare(g, swap, expected, f"swap disk {g.disk}")
    else:
        cached, dirty = cache
        ramdisk = getattr(back, "cache_store", "dcache") == "ramdisk"
        where = f"the RAM disk of {g.name}" if ramdisk else f"the host cache of {g.disk}"
        cpages = cached.pages.astype(np.int64)
        on_disk_expected = np.setdiff1d(expected, dirty)  # everything not dirty in the cache
        out += _compare(g, swap, on_disk_expected, f"swap disk {g.disk}")
        out += _compare(g, cached, np.intersect1d(expected, cpages), where)
        extra = np.setdiff1d(cpages, expected)
        if len(extra):
            out.append(
                f"{g.name}: {where} holds {len(extra)} page(s) the guest does not own, "
                f"e.g. page {int(extra[0])}"
            )
        missing_dirty = np.setdiff1d(dirty, cpages)
        if len(missing_dirty):
            out.append(f"{g.name}: {len(missing_dirty)} dirty mark(s) without a cached page")
        clean = np.setdiff1d(cpages, dirty)
        if ramdisk and len(clean):  # nothing behind a RAM disk: a page there is the only copy
            out.append(
                f"{g.name}: {where} holds {len(clean)} page(s) marked written back, "
                f"e.g. page {int(clean[0])}"
            )
    hswap = getattr(back, "hswap", None)
    if hswap is not None:
        frames, recs = hswap
        fs = g.frames
        want = np.flatnonzero(fs.state == 2)
        if not np.array_equal(np.sort(frames), want):
            out.append(
                f"{g.name}: host swap holds {len(frames)} frame(s), the host paged out {len(want)}"
            )
        elif len(recs):
            bad = (recs.pages.astype(np.int64) != fs.rec_page[frames]) | (
                recs.versions != fs.rec_ver[frames]
            )
            bad |= g.verify(recs)
            if bad.any():
                out.append(
                    f"{g.name}: {int(bad.sum())} host swap record(s) differ from what the host "
                    "wrote"
                )
    files = getattr(back, "files", None)
    if files is not None:
        out += _file_disk(g, files)
    eph = getattr(back, "eph", None)
    if eph is not None:
        out += _ephemeral_pool(g, *eph)
    return out


def remote_pages(g: GuestModel, held: RecordBatch | None) -> list[str]:
    """A post-copy migration's source store (`overcommit.stores.postcopy`) must hold exactly
    the pages still remote, each at the version the guest had when it switched over."""
    m = g.migration
    if m is None or m.stash_pages is None or held is None:
        return []
    remote = m.remote if m.phase == "postcopy" and m.remote is not None else held.pages[:0]
    where = f"the post-copy pages at {m.source}"
    out = []
    pages = held.pages.astype(np.int64)
    top = max(g.N, int(pages.max()) + 1 if len(pages) else 0)
    want = np.zeros(top, bool)  # masks over page numbers: no sorts of the record set
    want[remote] = True
    have = np.zeros(top, bool)
    have[pages] = True
    missing = np.flatnonzero(want & ~have)
    extra = np.flatnonzero(have & ~want)
    if len(missing):
        out.append(
            f"{g.name}: {len(missing)} remote page(s) are not in {where}, e.g. page "
            f"{int(missing[0])}"
        )
    if len(extra):
        out.append(
            f"{g.name}: {where} hold {len(extra)} page(s) no longer remote, e.g. page "
            f"{int(extra[0])}"
        )
    known = want[pages]
    if known.any():
        p = pages[known]
        want = m.stash_versions[np.searchsorted(m.stash_pages, p)]
        wrong = (held.versions[known] != want) | g.verify(held)[known]
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            out.append(
                f"{g.name}: {int(wrong.sum())} stale or corrupt record(s) in {where}, e.g. page "
                f"{int(p[i])} holds version {int(held.versions[known][i])}, stashed "
                f"{int(want[i])}"
            )
    return out


def _billing(g: GuestModel, held: RecordBatch) -> list[str]:
    """A compressing or deduplicating pool bills each page what its content takes: in `full`
    payload mode the sizes and content keys are measured again on the records read back."""
    bl = g.billing
    if g.payload != "full" or not len(held):
        return []
    pages = held.pages.astype(np.int64)
    ok = pages < g.N
    pages, held = pages[ok], held.take(np.flatnonzero(ok))
    bad = bl.stored_sizes(held.payload, len(held)) != bl.size[pages]
    if bl.dedup:
        bad |= held.checksums.astype(np.uint64) != bl.key[pages]
    if bad.any():
        return [
            f"{g.name}: {int(bad.sum())} pool page(s) billed for other content than they hold, "
            f"e.g. page {int(pages[np.flatnonzero(bad)[0]])}"
        ]
    return []


def _file_disk(g: GuestModel, held: RecordBatch) -> list[str]:
    """The guest's file disk against its page cache: a file page out of RAM, or clean in RAM,
    is on the disk at its current version once it has ever been written (a never-written page
    is its file's original content, stored nowhere); a dirty page in RAM may be newer."""
    out = []
    where = f"the file disk {g.disk}/files"
    pages = held.pages.astype(np.int64)
    foreign = (pages < g.file_lo) | (pages >= g.N)
    if foreign.any():
        out.append(f"{g.name}: {where} holds {int(foreign.sum())} record(s) of no file page")
        held, pages = held.take(np.flatnonzero(~foreign)), pages[~foreign]
    f = np.arange(g.file_lo, g.N)
    must = f[((g.loc[f] == FILE) | ((g.loc[f] == RAM) & ~g.dirty[f])) & (g.version[f] > 0)]
    missing = np.setdiff1d(must, pages)
    if len(missing):
        out.append(
            f"{g.name}: {len(missing)} written file page(s) out of RAM or clean are not on "
            f"{where}, e.g. page {int(missing[0])}"
        )
    if len(held):
        cur = g.version[pages]
        may_lag = (g.loc[pages] == RAM) & g.dirty[pages]
        wrong = ((held.versions != cur) & ~may_lag) | (held.versions > cur) | g.verify(held)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            out.append(
                f"{g.name}: {int(wrong.sum())} stale or corrupt record(s) on {where}, e.g. page "
                f"{int(pages[i])} holds version {int(held.versions[i])}, last written "
                f"{int(cur[i])}"
            )
    return out


def _ephemeral_pool(g: GuestModel, held: RecordBatch, counted: int) -> list[str]:
    """The ephemeral pool may have dropped anything, but what it holds is a page the guest
    dropped from its page cache, at the version it last wrote; its counter is its size."""
    out = []
    where = "its ephemeral pool"
    if not len(held) == counted == g.eph_pages:
        out.append(
            f"{g.name}: {where} holds {len(held)} page(s), its counter says {counted}, the "
            f"guest was last told {g.eph_pages}"
        )
    if len(held):
        pages = held.pages.astype(np.int64)
        ok = pages < g.N
        dropped = np.zeros(len(pages), bool)
        dropped[ok] = g.loc[pages[ok]] == FILE
        if not dropped.all():
            i = int(np.flatnonzero(~dropped)[0])
            out.append(
                f"{g.name}: {where} holds {int((~dropped).sum())} page(s) not dropped from the "
                f"page cache, e.g. page {int(pages[i])}"
            )
        p = pages[dropped]
        sub = held.take(np.flatnonzero(dropped))
        wrong = (sub.versions != g.version[p]) | g.verify(sub)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            out.append(
                f"{g.name}: {int(wrong.sum())} stale or corrupt record(s) in {where}, e.g. page "
                f"{int(p[i])} holds version {int(sub.versions[i])}, last written "
                f"{int(g.version[p[i]])}"
            )
    return out


def pool_counters(host: str, used: int, counts: dict[str, int], guests: list[Any]) -> list[str]:
    """Redis pool counters against the guests' own view (`tmem_view`) of what they hold."""
    out = []
    total = 0
    for g in guests:
        view = g.tmem_view
        n = counts.get(g.name, 0)
        total += n
        if n != view:
            out.append(f"{host}: pool counter for {g.name} is {n}, the guest holds {view}")
    if used != total:
        out.append(f"{host}: pool 'used' counter {used} != sum of guest counters {total}")
    return out
