"""Compiled page loops of the paging core (numba `@njit(cache=True)` over plain numpy arrays).

Each kernel does, in one pass over an epoch's pages, what a chain of numpy calls did before,
with the same result bit for bit (the same pages in the same order, the same counts, the same
state changes): the touch pass and the quiet epoch (`touch_pass`, `quiet_apply`), the
touched pages' LRU stamps, referenced bits and readahead hits (`touched`), the faults by
location (`split_faults`), whether disk faults are adjacent (`adjacent`), the swap-in
clusters (`swap_reads`), the slots an epoch frees (`slots_freed`), an epoch's page moves
(`apply_out` before the mechanisms' `evict` hooks, `apply_in` after), sorted set difference
(`sorted_diff`), pages per cluster (`cluster_counts`), an epoch's queued read latencies
(`read_latencies`), the latency histogram's bins (`hist_add`) and counts of flag pairs
(`pair_counts`). The loops over an epoch's touched pages ask the memory for the entries of
pages further on (`_prefetch`), which changes no value.

Kernels are compiled on first use and cached on disk next to this module (`__pycache__`), so
only the first run on a machine pays the compilation. `OVERCOMMIT_JIT=0` in the environment
turns them off: the core then runs its numpy path (the reference the kernels are measured and
tested against; `benchmarks/bench_model.py` runs both).
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from overcommit.nodes.kernel.types import page_records

#: kernels on (`OVERCOMMIT_JIT=0` runs the numpy path instead)
ENABLED = os.environ.get("OVERCOMMIT_JIT", "1") != "0"

_UNTOUCHED, _RAM, _FRONTSWAP, _SWAP, _ZPOOL, _FILE = 0, 1, 2, 3, 4, 5
_F_NONE, _F_RAM = 0, 1

#: how many pages ahead the page loops ask the memory for (`_prefetch`)
_AHEAD = 32


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Ask the memory for `arr[idx]`'s cache line ahead of its use (LLVM's prefetch: a hint,
    no fault, no effect on any value). The page loops prefetch the entries of pages
    `_AHEAD` ahead: their pages are scattered over tables of up to millions of entries, so
    each access misses the cache, and asking early overlaps the misses."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _sorted(a: np.ndarray, nbits: int) -> np.ndarray:
    """A sorted copy of `a` (values in [0, 2**nbits)): insertion sort when short, else an LSD
    radix sort (at most 11 bits a pass)."""
    n = len(a)
    out = a.copy()
    if n < 48:
        for i in range(1, n):
            v = out[i]
            j = i - 1
            while j >= 0 and out[j] > v:
                out[j + 1] = out[j]
                j -= 1
            out[j + 1] = v
        return out
    npass = max(1, (nbits + 10) // 11)
    d = (nbits + npass - 1) // npass
    mask = (1 << d) - 1
    tmp = np.empty(n, a.dtype)
    count = np.empty((1 << d) + 1, np.int64)
    src, dst = out, tmp
    for k in range(npass):
        shift = k * d
        count[:] = 0
        for i in range(n):
            count[((src[i] >> shift) & mask) + 1] += 1
        for i in range(1 << d):
            count[i + 1] += count[i]
        for i in range(n):
            v = src[i]
            b = (v >> shift) & mask
            dst[count[b]] = v
            count[b] += 1
        src, dst = dst, src
    return src


@njit(cache=True, nogil=True)
def _versions(wp: np.ndarray, wc: np.ndarray, version: np.ndarray, dirty: np.ndarray) -> None:
    """Written pages `wp` count their writes `wc` in their versions and are dirty."""
    m = len(wp)
    for i in range(m):
        if i + _AHEAD < m:
            _prefetch(version, wp[i + _AHEAD])
            _prefetch(dirty, wp[i + _AHEAD])
        p = wp[i]
        version[p] += np.uint32(wc[i])
        dirty[p] = True


@njit(cache=True, nogil=True)
def touch_pass(
    pages: np.ndarray,
    writes: np.ndarray,
    nbits: int,
    loc: np.ndarray,
    slot: np.ndarray,
    quiet: bool,
    free_top: int,
    wm_low: int,
    wm_high: int,
    wm_min: int,
    dirty: np.ndarray,
    version: np.ndarray,
    free_stack: np.ndarray,
    frame: np.ndarray,
    fpage: np.ndarray,
    state: np.ndarray,
    full: bool,
    last: np.ndarray,
    ref: np.ndarray,
    ra: np.ndarray,
    stamp: int,
    window_start: int,
    check_ra: bool,
    uniq: np.ndarray,
    loc_u: np.ndarray,
    wp: np.ndarray,
    wc: np.ndarray,
):
    """An epoch's touches (`pages`, `writes` flags): the distinct touched pages (sorted) and
    their locations into `uniq` and `loc_u`, the distinct written pages (sorted) and how often
    each was written into `wp` and `wc` (the caller's buffers, at least `len(pages)` long:
    a quiet epoch returns no array, which numba would have to box), the highest location
    touched and the number of untouched pages among them.

    With `quiet`, when the epoch is quiet (every touched page resident or untouched, no
    written page holding a swap slot, free frames enough for the first touches without
    reclaim: `GuestModel._quiet_epoch`), it also applies it: first touches get the frames on
    top of the free stack in page order (the host backs new ones unless `full`) and become
    resident and dirty, written pages count their writes and are dirty, touched pages are
    stamped (`last` = `stamp`, referenced) and read-ahead flags cleared.

    Returns (applied, distinct pages, distinct written pages, top, n_zero, newly backed, pages
    not touched since `window_start`, read-ahead hits).
    """
    # one sort of (page, write flag) keys: the distinct pages, and the written ones with
    # their counts, in one pass over the sorted keys
    n = len(pages)
    keys = np.empty(n, np.int64)
    for i in range(n):
        keys[i] = pages[i] * 2 + writes[i]
    s = _sorted(keys, nbits + 1)
    nu = m = top = n_zero = 0
    slotted = False
    for i in range(min(_AHEAD, n)):
        _prefetch(loc, s[i] >> 1)
    for i in range(n):
        if i + _AHEAD < n:
            q = s[i + _AHEAD]
            _prefetch(loc, q >> 1)
            if q & 1:
                _prefetch(slot, q >> 1)
        k = s[i]
        p = k >> 1
        if nu == 0 or uniq[nu - 1] != p:
            uniq[nu] = p
            v = loc[p]
            loc_u[nu] = v
            if v > top:
                top = v
            if v == _UNTOUCHED:
                n_zero += 1
            nu += 1
        if k & 1:
            if m and wp[m - 1] == p:
                wc[m - 1] += 1
            else:
                wp[m] = p
                wc[m] = 1
                m += 1
                if slot[p] != 0:
                    slotted = True
    uniq, loc_u, wp, wc = uniq[:nu], loc_u[:nu], wp[:m], wc[:m]
    new = fresh = hits = 0
    if not quiet or top > _RAM or slotted:
        return False, nu, m, top, n_zero, new, fresh, hits
    async_want = wm_high - free_top if free_top < wm_low else 0
    if async_want + max(0, wm_min + n_zero - free_top) > 0:
        return False, nu, m, top, n_zero, new, fresh, hits
    j = 0
    for i in range(nu):  # first touches: the frames on top of the free stack, in page order
        if i + _AHEAD < nu and loc_u[i + _AHEAD] == _UNTOUCHED:
            q = uniq[i + _AHEAD]
            _prefetch(frame, q)
            _prefetch(dirty, q)
        if loc_u[i] == _UNTOUCHED:
            p = uniq[i]
            f = free_stack[free_top - 1 - j]
            frame[p] = f
            fpage[f] = p
            if not full and state[f] == _F_NONE:
                state[f] = _F_RAM
                new += 1
            loc[p] = _RAM
            dirty[p] = True
            j += 1
    fresh, hits = touched(uniq, last, ref, ra, stamp, window_start, check_ra)
    _versions(wp, wc, version, dirty)
    return True, nu, m, top, n_zero, new, fresh, hits


def touch_buffers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`touch_pass`'s output buffers for up to `n` touches: (uniq, loc_u, wp, wc)."""
    return np.empty(n, np.int64), np.empty(n, np.int8), np.empty(n, np.int64), np.empty(n, np.int64)


@njit(cache=True, nogil=True)
def map_in(
    pages: np.ndarray,
    free_stack: np.ndarray,
    free_top: int,
    frame: np.ndarray,
    fpage: np.ndarray,
    state: np.ndarray,
    full: bool,
) -> int:
    """Give `pages` the frames on top of the free stack (the top one to the first page);
    returns how many of those frames the host newly backed (none when `full`)."""
    new = 0
    for i in range(len(pages)):
        p = pages[i]
        f = free_stack[free_top - 1 - i]
        frame[p] = f
        fpage[f] = p
        if not full and state[f] == _F_NONE:
            state[f] = _F_RAM
            new += 1
    return new


@njit(cache=True, nogil=True)
def touched(
    uniq: np.ndarray,
    last: np.ndarray,
    ref: np.ndarray,
    ra: np.ndarray,
    stamp: int,
    window_start: int,
    check_ra: bool,
):
    """Stamp `uniq` touched (`last` = `stamp`, referenced); returns how many of them had
    not been touched since `window_start` and how many were read-ahead hits (flag cleared)."""
    fresh = 0
    hits = 0
    n = len(uniq)
    for i in range(min(_AHEAD, n)):
        _prefetch(last, uniq[i])
    for i in range(n):
        if i + _AHEAD < n:
            q = uniq[i + _AHEAD]
            _prefetch(last, q)
            _prefetch(ref, q)
            if check_ra:
                _prefetch(ra, q)
        p = uniq[i]
        if last[p] <= window_start:
            fresh += 1
        last[p] = stamp
        ref[p] = True
        if check_ra and ra[p]:
            ra[p] = False
            hits += 1
    return fresh, hits


@njit(cache=True, nogil=True)
def split_faults(uniq: np.ndarray, loc_u: np.ndarray, file_lo: int):
    """Touched pages by location: first touches (anonymous), frontswap, compressed pool, swap
    disk, first touches of page-cache pages, page-cache pages to read (each in page order)."""
    n = len(uniq)
    cnt = np.zeros(7, np.int64)  # by location; [6]: first touches of page-cache pages
    for i in range(n):
        v = loc_u[i]
        if v == _UNTOUCHED and uniq[i] >= file_lo:
            cnt[6] += 1
        else:
            cnt[v] += 1
    zero = np.empty(cnt[_UNTOUCHED], np.int64)
    fs = np.empty(cnt[_FRONTSWAP], np.int64)
    z = np.empty(cnt[_ZPOOL], np.int64)
    sw = np.empty(cnt[_SWAP], np.int64)
    fnew = np.empty(cnt[6], np.int64)
    ffile = np.empty(cnt[_FILE], np.int64)
    a = b = c = d = e = f = 0
    for i in range(n):
        v = loc_u[i]
        p = uniq[i]
        if v == _UNTOUCHED:
            if p >= file_lo:
                fnew[e] = p
                e += 1
            else:
                zero[a] = p
                a += 1
        elif v == _FRONTSWAP:
            fs[b] = p
            b += 1
        elif v == _ZPOOL:
            z[c] = p
            c += 1
        elif v == _SWAP:
            sw[d] = p
            d += 1
        elif v == _FILE:
            ffile[f] = p
            f += 1
    return zero, fs, z, sw, fnew, ffile


@njit(cache=True, nogil=True)
def swap_reads(f_sw: np.ndarray, ra: int, n: int, loc: np.ndarray):
    """The aligned clusters of `ra` pages around the disk faults `f_sw` (sorted), and the
    pages of those clusters still on the swap disk, in page order."""
    clusters = np.empty(len(f_sw), np.int64)
    nc = 0
    for i in range(len(f_sw)):
        c = f_sw[i] // ra
        if nc == 0 or clusters[nc - 1] != c:
            clusters[nc] = c
            nc += 1
    clusters = clusters[:nc]
    reads = np.empty(nc * ra, np.int64)
    nr = 0
    for i in range(nc):
        base = clusters[i] * ra
        for j in range(ra):
            p = base + j
            if p < n and loc[p] == _SWAP:
                reads[nr] = p
                nr += 1
    return clusters, reads[:nr]


@njit(cache=True, nogil=True)
def adjacent(a: np.ndarray) -> bool:
    """Whether two consecutive entries of `a` differ by exactly one (`(np.diff(a) == 1).any()`)."""
    for i in range(1, len(a)):  # noqa: SIM110 (a plain loop compiles; a generator may not)
        if a[i] - a[i - 1] == 1:
            return True
    return False


@njit(cache=True, nogil=True)
def sorted_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The values of `a` (distinct) not in `b` (sorted, distinct), in `a`'s order."""
    out = np.empty(len(a), a.dtype)
    n = 0
    nb = len(b)
    for i in range(len(a)):
        v = a[i]
        j = np.searchsorted(b, v) if nb else 0
        if j < nb and b[j] == v:
            continue
        out[n] = v
        n += 1
    return out[:n]


@njit(cache=True, nogil=True)
def cluster_counts(pages: np.ndarray, ra: int) -> np.ndarray:
    """Pages per cluster of `ra` pages among `pages` (distinct), in cluster order."""
    c = pages // ra
    for i in range(1, len(c)):
        if c[i] < c[i - 1]:
            c = np.sort(c)
            break
    out = np.empty(len(c), np.int64)
    n = 0
    for i in range(len(c)):
        if n and c[i] == c[i - 1]:
            out[n - 1] += 1
        else:
            out[n] = 1
            n += 1
    return out[:n]


@njit(cache=True, nogil=True)
def read_latencies(
    pages: np.ndarray,
    ra: int,
    ps: int,
    latency: float,
    bandwidth: float,
    min_occ: float,
    half_backlog: float,
    rho: float,
    fixed: float,
    ahead: float,
):
    """`epoch.queued_latencies` of the reads of the clusters of `ra` pages that `pages`
    (distinct) fall in, in cluster order, each read the bytes of its pages: the same
    arithmetic element by element (service `latency` + bytes / `bandwidth`; queueing
    `half_backlog` + max(`min_occ`, bytes / `bandwidth`) * `rho` / (1 - `rho`); the
    services summed from the first read, then `ahead` added). Returns (latencies, the
    service time queued after them)."""
    n = cluster_counts(pages, ra)
    lat = np.empty(len(n), np.float64)
    acc = 0.0
    for i in range(len(n)):
        size = np.float64(n[i]) * ps
        occ = size / bandwidth
        if min_occ > occ:
            occ = min_occ
        acc += latency + size / bandwidth
        lat[i] = (fixed + (half_backlog + occ * rho / (1.0 - rho))) + (ahead + acc)
    return lat, ahead + acc


@njit(cache=True, nogil=True)
def pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """How many positions of the flag arrays `a` and `b` (equal lengths) are (False, False),
    (False, True), (True, False) and (True, True)."""
    n = np.zeros(4, np.int64)
    for i in range(len(a)):
        n[2 * np.int64(a[i]) + np.int64(b[i])] += 1
    return n[0], n[1], n[2], n[3]


@njit(cache=True, nogil=True)
def hist_add(hist: np.ndarray, logs: np.ndarray, per_decade: int) -> None:
    """Add one count per value of `logs` (log10 of latency / the first bin's edge) to its
    histogram bin: floor(log * `per_decade`) + 1, clipped to the histogram (`_hist_bins`)."""
    top = len(hist) - 1
    for i in range(len(logs)):
        b = np.floor(logs[i] * per_decade) + 1.0
        if b < 0.0:
            b = 0.0
        elif b > top:
            b = top
        hist[int(b)] += 1


@njit(cache=True, nogil=True)
def apply_out(
    free_slot: np.ndarray,
    taken: np.ndarray,
    victims: np.ndarray,
    clean: np.ndarray,
    file_lo: int,
    loc: np.ndarray,
    slot: np.ndarray,
    census: np.ndarray,
    slot_census: np.ndarray,
    dirty: np.ndarray,
    ra: np.ndarray,
    check_ra: bool,
    frame: np.ndarray,
    fpage: np.ndarray,
    free_stack: np.ndarray,
    free_top: int,
):
    """An epoch's slots freed and victims out (`epoch._apply`, up to the `evict` hooks): the
    freed slots and the taken pages' slots go (taken pages are dirty), read-ahead flags of
    victims clear, victims' frames go back on the free stack in victim order, page-cache
    victims (at or above `file_lo`) leave for their file and clean ones for the slot they
    hold; the ledgers follow. Returns the freed slots that were the compressed pool's and the
    read-ahead misses."""
    nz = 0
    for i in range(len(free_slot)):
        p = free_slot[i]
        k = slot[p]
        if k == _ZPOOL:
            nz += 1
        slot_census[k] -= 1
        slot_census[0] += 1
        slot[p] = 0
    for i in range(len(taken)):
        p = taken[i]
        slot_census[slot[p]] -= 1
        slot_census[0] += 1
        slot[p] = 0
        dirty[p] = True
    misses = 0
    if check_ra:
        for i in range(len(victims)):
            p = victims[i]
            if ra[p]:
                ra[p] = False
                misses += 1
    for i in range(len(victims)):
        p = victims[i]
        f = frame[p]
        free_stack[free_top + i] = f
        fpage[f] = -1
        frame[p] = -1
    for i in range(len(victims)):  # page-cache victims first, then the clean ones (ledger)
        p = victims[i]
        if p >= file_lo:
            census[loc[p]] -= 1
            census[_FILE] += 1
            loc[p] = _FILE
    for i in range(len(victims)):
        p = victims[i]
        if clean[i] and p < file_lo:
            v = slot[p]
            census[loc[p]] -= 1
            census[v] += 1
            loc[p] = v
    return nz, misses


@njit(cache=True, nogil=True)
def apply_in(
    to_disk: np.ndarray,
    victims: np.ndarray,
    incoming: np.ndarray,
    extra: np.ndarray,
    f_zero: np.ndarray,
    pull_in: np.ndarray,
    wp: np.ndarray,
    wc: np.ndarray,
    uniq: np.ndarray,
    loc: np.ndarray,
    slot: np.ndarray,
    census: np.ndarray,
    slot_census: np.ndarray,
    dirty: np.ndarray,
    version: np.ndarray,
    free_stack: np.ndarray,
    free_top: int,
    frame: np.ndarray,
    fpage: np.ndarray,
    state: np.ndarray,
    full: bool,
    ra: np.ndarray,
    ra_n: int,
    last: np.ndarray,
    ref: np.ndarray,
    stamp: int,
    window_start: int,
    do_touch: bool,
):
    """The rest of `epoch._apply` after the `evict` hooks: dirty victims refused by every
    store go to the swap disk, victims are clean, `incoming` pages get frames (as `map_in`)
    and are resident, `extra` (read ahead, not faulted) are flagged, first touches and pages
    pulled in are dirty (pulled ones lose their slot), written pages count their writes and
    are dirty; with `do_touch`, the touches are stamped (`touched`) and victims lose their
    referenced bit. Returns the frames newly backed and, with `do_touch`, the pages not
    touched since `window_start` and the read-ahead hits."""
    for i in range(len(to_disk)):
        p = to_disk[i]
        census[loc[p]] -= 1
        census[_SWAP] += 1
        loc[p] = _SWAP
        slot_census[slot[p]] -= 1
        slot_census[_SWAP] += 1
        slot[p] = _SWAP
    for i in range(len(victims)):
        dirty[victims[i]] = False
    new = map_in(incoming, free_stack, free_top, frame, fpage, state, full)
    for i in range(len(incoming)):
        p = incoming[i]
        census[loc[p]] -= 1
        census[_RAM] += 1
        loc[p] = _RAM
    for i in range(len(extra)):
        ra[extra[i]] = True
    for i in range(len(f_zero)):
        dirty[f_zero[i]] = True
    for i in range(len(pull_in)):
        p = pull_in[i]
        dirty[p] = True
        slot_census[slot[p]] -= 1
        slot_census[0] += 1
        slot[p] = 0
    _versions(wp, wc, version, dirty)
    for i in range(len(victims)):
        dirty[victims[i]] = False
    fresh = hits = 0
    if do_touch:
        fresh, hits = touched(uniq, last, ref, ra, stamp, window_start, ra_n + len(extra) != 0)
        for i in range(len(victims)):
            ref[victims[i]] = False
    return new, fresh, hits


@njit(cache=True, nogil=True)
def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted union of sorted, distinct `a` and `b`."""
    out = np.empty(len(a) + len(b), np.int64)
    i = j = n = 0
    while i < len(a) or j < len(b):
        if j == len(b) or (i < len(a) and a[i] < b[j]):
            v = a[i]
            i += 1
        elif i == len(a) or b[j] < a[i]:
            v = b[j]
            j += 1
        else:
            v = a[i]
            i += 1
            j += 1
        out[n] = v
        n += 1
    return out[:n]


@njit(cache=True, nogil=True)
def slots_freed(
    wp: np.ndarray,
    slot: np.ndarray,
    swap_full: bool,
    f_fs: np.ndarray,
    f_sw: np.ndarray,
    f_z: np.ndarray,
    extra: np.ndarray,
    taken: np.ndarray,
):
    """The slots an epoch frees (`epoch._faults`): written pages holding one, the faulted
    pages when swap is full, `extra`, less the `taken` ones (all sorted and distinct); and
    those of them in frontswap, on the swap disk and in the compressed pool."""
    held = np.empty(len(wp), np.int64)
    n = 0
    for i in range(len(wp)):
        if slot[wp[i]] != 0:
            held[n] = wp[i]
            n += 1
    free = held[:n]
    if swap_full:
        free = _union(free, _union(_union(f_fs, f_sw), f_z))
    if len(extra):
        free = _union(free, extra)
    if len(taken) and len(free):
        keep = np.empty(len(free), np.int64)
        m = 0
        for i in range(len(free)):
            v = free[i]
            j = np.searchsorted(taken, v)
            if j < len(taken) and taken[j] == v:
                continue
            keep[m] = v
            m += 1
        free = keep[:m]
    cnt = np.zeros(6, np.int64)
    for i in range(len(free)):
        cnt[slot[free[i]]] += 1
    fs = np.empty(cnt[_FRONTSWAP], np.int64)
    sw = np.empty(cnt[_SWAP], np.int64)
    z = np.empty(cnt[_ZPOOL], np.int64)
    a = b = c = 0
    for i in range(len(free)):
        p = free[i]
        k = slot[p]
        if k == _FRONTSWAP:
            fs[a] = p
            a += 1
        elif k == _SWAP:
            sw[b] = p
            b += 1
        elif k == _ZPOOL:
            z[c] = p
            c += 1
    return free, fs, sw, z


def warm() -> None:
    """Compile every kernel for the core's array types (or load them from the cache): the
    page tables are fields of page records (strided views), as a guest's are."""
    p = np.arange(4, dtype=np.int64)
    rec = page_records(8)
    loc, slot, last, ver = rec["loc"], rec["slot"], rec["last"], rec["version"]
    frame, ref, ra = np.full(8, -1, np.int32), rec["ref"], rec["ra"]
    dirty = np.zeros(8, bool)
    stack = np.arange(8, dtype=np.int32)
    fpage = np.full(8, -1, np.int32)
    state = np.zeros(8, np.int8)
    census = np.zeros(6, np.int64)
    tp = (p, dirty[:4], 3, loc, slot, True, 4, 1, 2, 1, dirty, ver, stack, frame, fpage, state)
    touch_pass(*tp, False, last, ref, ra, 1, 0, True, *touch_buffers(4))
    map_in(p + 4, stack, 4, frame, fpage, state, False)
    touched(p, last, ref, ra, 1, 0, True)
    split_faults(p, np.zeros(4, np.int8), 8)
    swap_reads(p, 2, 8, loc)
    sorted_diff(p, p[:2])
    adjacent(p)
    cluster_counts(p, 2)
    read_latencies(p, 2, 4096, 1e-4, 1e9, 1e-5, 0.0, 0.5, 1e-6, 0.0)
    hist_add(np.zeros(4, np.int64), np.zeros(2), 100)
    pair_counts(dirty, dirty)
    slots_freed(p, slot, True, p, p[:1], p[:0], p[:0], p[:2])
    tables = (loc, slot, census, census.copy(), dirty)
    apply_out(p, p[:0], p, dirty[:4], 8, *tables, ra, True, frame, fpage, stack, 0)
    moves = (p, p, p, p[:0], p, p[:0], p, p, p)
    frames = (ver, stack, 8, frame, fpage, state, False)
    apply_in(*moves, *tables, *frames, ra, 0, last, ref, 1, 0, True)
