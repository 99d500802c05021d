"""The paging core's records and checks: page records at a version (`_batch`, `verify`), reads
checked against the versions the guest wrote (`_check_read`), the fault-latency histogram, and
the conservation checks of pages, frames and slots (ledgers every epoch, a full recount and a
frame audit each audit interval); mechanisms add theirs through `GuestMechanism.audit`.

The full audit runs as two compiled kernels (`table_audit`, `frame_verdict`: numba, cached on
disk like `jit`'s, compiled ahead by `warm_checks`); with `OVERCOMMIT_JIT=0` it runs the numpy
methods (`_recount_numpy`, `_frame_audit_numpy`), the reference the kernels are tested against.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from overcommit.nodes.host import F_RAM
from overcommit.nodes.kernel import jit
from overcommit.nodes.kernel.hooks import GuestMechanism
from overcommit.nodes.kernel.jit import _AHEAD, _prefetch
from overcommit.nodes.kernel.types import (
    _HIST_BIN,
    FILE,
    FRONTSWAP,
    HIST_LO,
    HIST_PER_DECADE,
    NLOC,
    NO_SLOT,
    RAM,
    SWAP,
    UNTOUCHED,
    ZPOOL,
    _hist_bins,
    page_records,
)
from overcommit.stores.codec import RecordBatch, digest_stale, make_batch, verify


def _check_hooks(g: GuestChecks) -> tuple[tuple[GuestMechanism, ...], tuple[GuestMechanism, ...]]:
    """The guest's hooks that hold frames (`frames_held`) and that check anything (`audit`):
    the others' base methods return 0 and nothing. Found once per guest (its `mechs` are
    fixed when it is built) and kept on it."""
    cached = g.__dict__.get("_check_hooks")
    mechs = g.mechs
    if cached is None or cached[0] is not mechs:
        held = tuple(h for h in mechs if type(h).frames_held is not GuestMechanism.frames_held)
        audit = tuple(h for h in mechs if type(h).audit is not GuestMechanism.audit)
        cached = g._check_hooks = (mechs, held, audit)
    return cached[1], cached[2]


class GuestChecks:
    """`GuestModel`'s records and checks (a mixin)."""

    def _batch(self, pages: np.ndarray, versions: np.ndarray) -> RecordBatch:
        """Records of these pages at these versions, with the content they imply."""
        return make_batch(
            self.name,
            np.asarray(pages).astype(np.uint32),
            np.asarray(versions).astype(np.uint32),
            self.payload,
            self.page_size,
            self.workload.compressibility,
            self.workload.duplicates,
        )

    def verify(self, batch: RecordBatch) -> np.ndarray:
        """Mask of records whose checksum or content is not what their version implies."""
        return verify(
            self.name,
            batch,
            self.payload,
            self.page_size,
            self.workload.compressibility,
            self.workload.duplicates,
        )

    def _hist_add(self, latency: float, n: int) -> None:
        if n > 0:
            b = _HIST_BIN.get(latency)
            if b is None:  # the same few latencies recur: look each one's bin up once
                b = _HIST_BIN[latency] = int(_hist_bins(np.array([latency]))[0])
                if len(_HIST_BIN) > 4096:
                    _HIST_BIN.clear()
            self.hist[b] += n

    def _hist_add_each(self, latencies: np.ndarray) -> None:
        """Add one fault per latency (each its own value, e.g. its queue position's)."""
        if not len(latencies):
            return
        if jit.ENABLED:  # numpy's log10 (the bins' edges as `_hist_bins` finds them), then
            # one compiled pass
            logs = np.log10(np.maximum(latencies, HIST_LO * 0.5) / HIST_LO)
            jit.hist_add(self.hist, logs, HIST_PER_DECADE)
        else:
            self.hist += np.bincount(_hist_bins(latencies), minlength=len(self.hist))

    def _check_read(
        self,
        pages: np.ndarray,
        found: np.ndarray,
        got: RecordBatch,
        where: str,
        out: list[tuple[str, str]],
        expect_versions: np.ndarray | None = None,
    ) -> None:
        """Compare records read back from a store with the versions the guest last wrote (or
        with `expect_versions`, aligned with `pages`, for a read after this epoch's writes)."""
        found = np.asarray(found, bool)
        missing = pages[~found]
        if len(missing):
            self.counters["lost_pages"] += len(missing)
            out.append(
                (
                    "no_missing_pages",
                    f"{self.name}: {len(missing)} page(s) missing from {where}, e.g. page "
                    f"{int(missing[0])} version {int(self.version[missing[0]])}",
                )
            )
        if not len(got):
            return
        if jit.ENABLED and self.payload == "digest":  # one compiled pass over the records
            by_page = expect_versions is None
            table = self.version if by_page else np.asarray(expect_versions)[found]
            nbad, i = digest_stale(self.name, got, table, by_page)
            if not nbad:
                return
            p = int(got.pages[i])
            last = (int(table[p]) if p < len(table) else "never") if by_page else int(table[i])
        else:
            if expect_versions is None:
                expect = self.version[got.pages.astype(np.int64)]
            else:
                expect = np.asarray(expect_versions)[found]
            bad = (got.versions != expect) | self.verify(got)
            nbad = int(np.count_nonzero(bad))
            if not nbad:
                return
            i = int(np.flatnonzero(bad)[0])
            last = int(expect[i])
        self.counters["stale_reads"] += nbad
        out.append(
            (
                "integrity",
                f"{self.name}: {nbad} stale record(s) read from {where}, e.g. page "
                f"{int(got.pages[i])} has version {int(got.versions[i])}, "
                f"last written {last}",
            )
        )

    def location_counts(self) -> dict[str, int]:
        bc = np.bincount(self.loc, minlength=NLOC)
        return {
            "untouched": int(bc[UNTOUCHED]),
            "ram": int(bc[RAM]),
            "frontswap": int(bc[FRONTSWAP]),
            "swap": int(bc[SWAP]),
            "zpool": int(bc[ZPOOL]),
            "file": int(bc[FILE]),
        }

    def conservation(self, full: bool = False) -> list[str]:
        """Violations of the guest's page, frame and slot conservation (empty when it holds).

        Every epoch the check runs on the ledgers (`census`, `slot_census`, frame and slot
        counters), which every move of a page updates; `full` also recounts everything from
        the page and frame tables and compares the ledgers with them (each audit interval).
        Plain integer sums first: a message is built only when a sum is off.
        """
        out = []
        counts = self.census.tolist()  # six numbers: plain Python is cheaper than numpy calls
        resident = counts[RAM]
        if sum(counts) != self.N or min(counts) < 0:
            out.append(
                f"{self.name}: the page ledger does not partition the footprint: {self.census}"
            )
        held_by, audited = _check_hooks(self)
        pool = 0
        for h in held_by:  # `zpool_frames`, without the hooks that hold none
            pool += h.frames_held(self)
        free_top, balloon_n = self.free_top, self.balloon_n
        if resident + free_top + balloon_n + pool != self.nframes:
            out.append(
                f"{self.name}: resident {resident}, free frames {free_top}, balloon "
                f"{balloon_n}, pool {pool}, frames {self.nframes}"
            )
        sc = self.slot_census.tolist()
        zram = self.zram_slots
        if zram:
            zslots = sc[ZPOOL]
            dslots = sc[FRONTSWAP] + sc[SWAP]
        else:
            zslots = 0
            dslots = sc[FRONTSWAP] + sc[SWAP] + sc[ZPOOL]
        if (
            dslots != self.slots_used
            or dslots > self.swap_slots
            or zslots != self.zslots_used
            or zslots > max(zram, 0)
        ):
            out.append(
                f"{self.name}: swap slots counted {self.slots_used}+{self.zslots_used}, held "
                f"{dslots}+{zslots}, devices have {self.swap_slots}+{zram}"
            )
        for h in audited:
            found = h.audit(self, False)
            if found:
                out += found
        if full:
            out += self._recount()
        return out

    def _recount(self) -> list[str]:
        """The O(footprint) part of the conservation check: ledgers against the tables (the
        compiled kernels' counts, or with `OVERCOMMIT_JIT=0` the numpy reference's)."""
        if jit.ENABLED and self.file_lo >= 0 and self.pinned_n >= 0:
            return self._recount_jit()
        return self._recount_numpy()

    def _recount_jit(self) -> list[str]:
        """`_recount_numpy`'s checks, messages and order from `table_audit`'s counts."""
        out = []
        fs = self.frames
        real, real_slots, flags = table_audit(
            self.loc,
            self.slot,
            self.frame,
            fs.state,
            fs.mkey,
            self.file_lo,
            self.pinned_n,
        )
        mapped, merged, merged_out, backed, hswapped, wrong_slot, mixed, pinned_out = flags.tolist()
        if np.any(real != self.census):
            out.append(f"{self.name}: page ledger {self.census} != page table {real}")
        if np.any(real_slots != self.slot_census):
            out.append(f"{self.name}: slot ledger {self.slot_census} != slot table {real_slots}")
        if mapped != int(real[RAM]):
            out.append(f"{self.name}: {mapped} pages have a frame, {int(real[RAM])} are resident")
        if fs.merged_count != merged:
            out.append(f"{self.name}: merged frame counter disagrees with the frames")
        elif fs.merged_count and merged_out:
            out.append(f"{self.name}: a merged frame is not resident")
        if fs.backed_count != backed or fs.hswapped_count != hswapped:
            out.append(f"{self.name}: host frame counters disagree with the frames' states")
        if wrong_slot:
            out.append(f"{self.name}: a swapped page holds no slot of its kind")
        if mixed:
            out.append(f"{self.name}: an anonymous page was dropped, or a file page swapped")
        if self.pinned_n and pinned_out:
            out.append(f"{self.name}: a pinned page left RAM")
        for h in self.mechs:
            out += h.audit(self, True)
        return out + self._frame_audit_jit(mapped)

    def _recount_numpy(self) -> list[str]:
        """`_recount` with numpy passes over the tables (the reference)."""
        out = []
        loc, slot = self.loc, self.slot
        real = np.array([np.count_nonzero(loc == k) for k in range(NLOC)], np.int64)
        if np.any(real != self.census):
            out.append(f"{self.name}: page ledger {self.census} != page table {real}")
        real_slots = np.array([np.count_nonzero(slot == k) for k in range(NLOC)], np.int64)
        if np.any(real_slots != self.slot_census):
            out.append(f"{self.name}: slot ledger {self.slot_census} != slot table {real_slots}")
        mapped = int(np.count_nonzero(self.frame >= 0))
        if mapped != int(real[RAM]):
            out.append(f"{self.name}: {mapped} pages have a frame, {int(real[RAM])} are resident")
        fs = self.frames
        if fs.merged_count != int(np.count_nonzero(fs.mkey)):
            out.append(f"{self.name}: merged frame counter disagrees with the frames")
        elif fs.merged_count and np.any(fs.state[fs.mkey != 0] != F_RAM):
            out.append(f"{self.name}: a merged frame is not resident")
        backed = int(np.count_nonzero(fs.state == 1))
        hswapped = int(np.count_nonzero(fs.state == 2))
        if fs.backed_count != backed or fs.hswapped_count != hswapped:
            out.append(f"{self.name}: host frame counters disagree with the frames' states")
        if np.count_nonzero((loc >= FRONTSWAP) & (loc <= ZPOOL) & (slot != loc)):
            out.append(f"{self.name}: a swapped page holds no slot of its kind")
        if np.count_nonzero(loc[: self.file_lo] == FILE) or np.count_nonzero(
            slot[self.file_lo :] != NO_SLOT
        ):
            out.append(f"{self.name}: an anonymous page was dropped, or a file page swapped")
        if self.pinned_n and np.count_nonzero(loc[: self.pinned_n] != RAM):
            out.append(f"{self.name}: a pinned page left RAM")
        for h in self.mechs:
            out += h.audit(self, True)
        return out + self._frame_audit_numpy()

    def frame_audit(self) -> list[str]:
        """Frames: every resident page has one, no frame is used twice or also free."""
        if jit.ENABLED:
            return self._frame_audit_jit()
        return self._frame_audit_numpy()

    def _frame_audit_jit(self, n_mapped: int = -1) -> list[str]:
        """`frame_audit` from `frame_verdict` (a frame number outside the table: the numpy
        path, which fails on it as it always did)."""
        v = frame_verdict(
            self.frame,
            self.fpage,
            self.nframes,
            self.free_stack,
            self.free_top,
            self.balloon_stack,
            self.balloon_n,
            self.zp_stack,
            self.zpool_frames,
            n_mapped,
        )
        if v == 0:
            return []
        if v == 1:
            return [f"{self.name}: a frame is used twice, or both used and free"]
        if v == 2:
            return [f"{self.name}: the frame-to-page map disagrees with the page table"]
        return self._frame_audit_numpy()

    def _frame_audit_numpy(self) -> list[str]:
        """`frame_audit` with numpy passes (the reference)."""
        if self._frames_consistent():
            return []
        mapped = self.frame >= 0
        used = self.frame[mapped]
        free = self.free_stack[: self.free_top]
        parts = [
            used,
            free,
            self.balloon_stack[: self.balloon_n],
            self.zp_stack[: self.zpool_frames],
        ]
        both = np.concatenate(parts)
        seen = np.zeros(self.nframes, bool)
        seen[both] = True
        if len(both) != self.nframes or not seen.all():  # n frames, all seen: no repeats
            return [f"{self.name}: a frame is used twice, or both used and free"]
        if np.any(self.fpage[used] != np.flatnonzero(mapped)):
            return [f"{self.name}: the frame-to-page map disagrees with the page table"]
        return []

    def _frames_consistent(self) -> bool:
        """`frame_audit`'s verdict when it finds nothing, proven more cheaply (False: maybe not).

        If every frame that maps a page is that page's frame (so those pages hold distinct
        frames), as many frames map a page as pages have a frame (so those frames are exactly
        the used ones, and each used frame maps its page back), and the free, balloon and pool
        stacks hold distinct frames mapping no page, as many as the used ones leave, then
        every frame is used or held exactly once. Dense passes over the frame table, no
        index lists: cheaper than `frame_audit`'s own.
        """
        fp, fr = self.fpage, self.frame
        valid = fp >= 0
        n_used = int(np.count_nonzero(valid))
        if n_used != int(np.count_nonzero(fr >= 0)):
            return False
        if n_used:
            if int(fp.max()) >= len(fr):
                return False
            invalid = ~valid
            idx = fp.astype(np.int32)
            idx[invalid] = 0
            ok = fr[idx] == np.arange(len(fp), dtype=np.int32)  # maps back to this frame
            ok |= invalid
            if not ok.all():
                return False
        others = np.concatenate(
            [
                self.free_stack[: self.free_top],
                self.balloon_stack[: self.balloon_n],
                self.zp_stack[: self.zpool_frames],
            ]
        )
        if n_used + len(others) != self.nframes or (fp[others] >= 0).any():
            return False
        seen = np.zeros(self.nframes, bool)
        seen[others] = True
        return int(np.count_nonzero(seen)) == len(others)


# -- the full audit's compiled kernels (numba; the numpy methods above are the reference) --


@njit(cache=True, nogil=True)
def _tally(loc, slot, frame, p0: int, p1: int, anon: bool, banks: np.ndarray):
    """`table_audit`'s pass over pages [p0, p1): locations and slot kinds counted into `banks`
    (four banks by page, as an increment of the same counter page after page waits for the one
    before it, and four banks overlap them; indexed by the raw byte, so any value counts
    somewhere); returns (pages holding a frame, any swapped page without a slot of its kind,
    any `anon` page dropped (loc FILE) or other page holding a slot)."""
    mapped = 0
    wrong_slot = mixed = False
    for p in range(p0, p1):
        v = loc[p]
        s = slot[p]
        k = p & 3
        banks[0, k, np.uint8(v)] += 1
        banks[1, k, np.uint8(s)] += 1
        mapped += frame[p] >= 0
        wrong_slot |= (v >= FRONTSWAP) & (v <= ZPOOL) & (s != v)
        mixed |= (v == FILE) if anon else (s != 0)
    return mapped, wrong_slot, mixed


@njit(cache=True, nogil=True)
def table_audit(
    loc: np.ndarray,
    slot: np.ndarray,
    frame: np.ndarray,
    state: np.ndarray,
    mkey: np.ndarray,
    file_lo: int,
    pinned_n: int,
):
    """`GuestChecks._recount`'s counts from the page and frame tables (short branch-free loops).

    Returns (pages per location, pages per slot kind, flags). Flags, in order: pages holding a
    frame, merged frames, any merged frame not resident, frames resident in host RAM,
    host-swapped frames, any swapped page without a slot of its kind, any anonymous page
    dropped or file page holding a slot, any pinned page out of RAM.
    """
    # loc and slot are fields of the page records (strided): one pass reads both, in two
    # loops split at `file_lo` (`_tally`). The pinned pages (a prefix) get a loop of their own.
    n = len(loc)
    lo = min(max(file_lo, 0), n)
    pin = min(max(pinned_n, 0), n)
    banks = np.zeros((2, 4, 256), np.int64)
    mapped, wrong_slot, mixed = _tally(loc, slot, frame, 0, lo, True, banks)
    m2, w2, x2 = _tally(loc, slot, frame, lo, n, False, banks)
    mapped += m2
    wrong_slot |= w2
    mixed |= x2
    pinned_out = False
    for p in range(pin):
        pinned_out |= loc[p] != RAM
    real = np.zeros(6, np.int64)
    real_slots = np.zeros(6, np.int64)
    for v in range(6):
        for k in range(4):
            real[v] += banks[0, k, v]
            real_slots[v] += banks[1, k, v]
    merged = 0
    merged_out = False
    backed = 0
    hswapped = 0
    if len(mkey) == len(state):  # merge keys exist only for a page-sharing guest
        for f in range(len(state)):
            st = state[f]
            backed += st == 1
            hswapped += st == 2
            m = mkey[f] != 0
            merged += m
            merged_out |= m & (st != F_RAM)
    else:
        for f in range(len(state)):
            st = state[f]
            backed += st == 1
            hswapped += st == 2
    flags = np.array(
        [mapped, merged, merged_out, backed, hswapped, wrong_slot, mixed, pinned_out], np.int64
    )
    return real, real_slots, flags


@njit(cache=True, nogil=True)
def _frames_proven(frame, fpage, nframes, n_mapped, stacks, tops) -> bool:
    """`GuestChecks._frames_consistent`: every frame that maps a page is that page's frame, as
    many frames map a page as pages have one, and the stacks hold distinct frames mapping no
    page, as many as the used ones leave (False: maybe not)."""
    n = len(frame)
    if len(fpage) != nframes:
        return False
    n_used = 0
    for f in range(nframes):
        if f + _AHEAD < nframes:  # the page table entry a frame further on maps back to
            q = fpage[f + _AHEAD]
            if 0 <= q < n:
                _prefetch(frame, q)
        p = fpage[f]
        if p >= 0:
            if p >= n or frame[p] != f:
                return False
            n_used += 1
    if n_used != n_mapped:
        return False
    count = n_used
    for k in range(3):
        count += tops[k]
    if count != nframes:
        return False
    seen = np.zeros(nframes, np.bool_)
    for k in range(3):
        stack = stacks[k]
        if tops[k] > len(stack):
            return False
        for i in range(tops[k]):
            f = stack[i]
            if f < 0 or f >= nframes or seen[f] or fpage[f] >= 0:
                return False
            seen[f] = True
    return True


@njit(cache=True, nogil=True)
def _frames_exact(frame, fpage, nframes, stacks, tops) -> int:
    """`GuestChecks._frame_audit_numpy`'s verdict step by step (see `frame_verdict`)."""
    seen = np.zeros(nframes, np.bool_)
    count = 0
    distinct = 0
    disagree = False
    for p in range(len(frame)):
        f = frame[p]
        if f >= 0:
            if f >= nframes or f >= len(fpage):
                return -1
            count += 1
            if not seen[f]:
                seen[f] = True
                distinct += 1
            if fpage[f] != p:
                disagree = True
    for k in range(3):
        stack = stacks[k]
        for i in range(min(tops[k], len(stack))):
            f = stack[i]
            if f < 0:
                f += nframes  # numpy's negative index
            if f < 0 or f >= nframes:
                return -1
            count += 1
            if not seen[f]:
                seen[f] = True
                distinct += 1
    if count != nframes or distinct != nframes:
        return 1
    return 2 if disagree else 0


@njit(cache=True, nogil=True)
def frame_verdict(
    frame: np.ndarray,
    fpage: np.ndarray,
    nframes: int,
    free_stack: np.ndarray,
    free_top: int,
    balloon_stack: np.ndarray,
    balloon_n: int,
    zp_stack: np.ndarray,
    zp_n: int,
    n_mapped: int,
) -> int:
    """`GuestChecks.frame_audit`'s verdict: 0 every frame is used (by the page it maps back to)
    or held exactly once, 1 a frame is used twice or both used and free (or one is missing),
    2 the frame-to-page map disagrees with the page table, -1 a frame number outside the
    table or a negative stack size (the numpy path decides). `n_mapped`: pages holding a
    frame (`table_audit`'s), or -1 to count them here.

    First the cheap proof of `_frames_consistent` (one pass over the frame table, the stacks
    marked); only when it fails, the exact verdict (a pass over the pages, every frame
    marked).
    """
    tops = np.array([free_top, balloon_n, zp_n], np.int64)
    if free_top < 0 or balloon_n < 0 or zp_n < 0:
        return -1
    stacks = (free_stack, balloon_stack, zp_stack)
    if n_mapped < 0:
        n_mapped = 0
        for p in range(len(frame)):
            n_mapped += frame[p] >= 0
    if _frames_proven(frame, fpage, nframes, n_mapped, stacks, tops):
        return 0
    return _frames_exact(frame, fpage, nframes, stacks, tops)


def warm_checks() -> None:
    """Compile the audit kernels (or load them from the cache)."""
    rec = page_records(8)  # the page tables are fields of page records, as a guest's are
    loc, frame = rec["loc"], np.full(8, -1, np.int32)
    fpage = np.full(8, -1, np.int32)
    stack = np.arange(8, dtype=np.int32)
    table_audit(loc, rec["slot"], frame, np.zeros(8, np.int8), np.zeros(8, np.uint64), 8, 0)
    frame_verdict(frame, fpage, 8, stack, 8, stack.copy(), 0, stack.copy(), 0, -1)
    batch = make_batch("g", np.arange(2), np.zeros(2), "digest", 4096, 0.5)
    digest_stale("g", batch, np.zeros(8, np.uint32), True)
