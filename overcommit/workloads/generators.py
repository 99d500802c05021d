"""Page-touch generators: zipf, phases, trace replay (phases from a CSV), a sequential
writer (`sweep`) and overload episodes (`bursts`).

A touch is (page index, is-write). The touch *sequence* comes from two streams of its own
(ranks and write flags) and the number of touches per epoch from a third, so a guest that
stalls more consumes the same sequence more slowly: every mechanism sees the same accesses in
the same order (common random numbers), only the pace differs. Popularity rank r maps to a
page through a fixed bijection of the footprint (multiply by a unit modulo N), so hot pages are
scattered across the address space as in a real heap rather than packed at its start. A
phase's working set is the first `ws` ranks, so a shrinking phase keeps its hottest pages.
Draws are vectorised, and the arithmetic after them is compiled (numba, `@njit(cache=True)`):
a call draws its uniforms from the streams' bit generators in a kernel (through their ctypes
`next_double`, the function `Generator.random` calls, so the same numbers in the same order)
and turns them into pages and write flags in the same pass (`_zipf_pages`, `_power_pages`).
The result is the numpy path's bit for bit; the transcendental step of the power law (`**`
or `exp`) stays a numpy call between two kernels, since numpy's SIMD implementation may differ
from libm's in the last place. `OVERCOMMIT_JIT=0` in the environment runs the numpy path
(`_draw_ranks`, `_ranks_to_pages`), the reference the kernels are tested and measured against
(`benchmarks/bench_touchgen.py`).

Popularity follows one of two laws over the `ws` ranks of a phase (`distribution`):

- `zipf` (the default): the exact discrete Zipf law, P(rank k) = k^-s / H(ws, s) for
  k = 1..ws with H(ws, s) = sum_{j=1..ws} j^-s, drawn by inversion of its cumulative table
  (one uniform per touch, like `power`, so the sequence does not depend on batch sizes).
- `power`: a bounded *continuous* power law with density proportional to x^-s on [1, ws + 1),
  truncated to integers. It gives the hottest ranks less than Zipf does (the top page gets
  5.7% of touches instead of 7.8% at s = 1 over 200k pages); scenarios written before `zipf`
  existed name it to keep their results.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from overcommit.rng import stream

#: compiled touch arithmetic on (`OVERCOMMIT_JIT=0` runs the numpy path instead)
JIT = os.environ.get("OVERCOMMIT_JIT", "1") != "0"

# how a phase turns uniforms into ranks (`Workload._plans`)
_NUMPY, _UNIFORM, _EXP, _POW, _ZIPF = 0, 1, 2, 3, 4
_NO_X = np.empty(0)


class TouchStreams:
    """The random streams one workload incarnation draws from.

    The number of touches per epoch comes from one stream; ranks and write flags come from a
    pair of streams per phase occurrence (phase index and cycle), so within each phase every
    mechanism sees the same access sequence, however fast it consumes it.
    """

    def __init__(self, seed: int, name: str, incarnation: int, purpose: str) -> None:
        self._key = (seed, name, incarnation, purpose)
        self.count = stream(seed, name, incarnation, f"{purpose}/count")
        self._pairs: dict[tuple[int, int], tuple[np.random.Generator, np.random.Generator]] = {}
        self.state: dict = {}  # a stateful generator's position (sweep, bursts)
        self._extra: dict[str, np.random.Generator] = {}

    def extra(self, label: str) -> np.random.Generator:
        """A further stream of this incarnation's, by label (the same one on every call)."""
        if label not in self._extra:
            seed, name, inc, purpose = self._key
            self._extra[label] = stream(seed, name, inc, f"{purpose}/{label}")
        return self._extra[label]

    def pair(self, phase: int, cycle: int) -> tuple[np.random.Generator, np.random.Generator]:
        key = (phase, cycle)
        if key not in self._pairs:
            seed, name, inc, purpose = self._key
            base = f"{purpose}/{phase}/{cycle}"
            self._pairs = {
                key: (
                    stream(seed, name, inc, f"{base}/rank"),
                    stream(seed, name, inc, f"{base}/write"),
                )
            }  # earlier phase occurrences never come back
        return self._pairs[key]


@dataclass(frozen=True)
class Phase:
    """One setting of the workload: how many pages it touches, how fast, how skewed."""

    duration: float  # seconds; inf for a single zipf setting
    ws_pages: int
    rate: float  # page touches per second of work
    write_fraction: float
    skew: float
    pinned: float = 0.0  # share of the footprint mlocked during the phase
    distribution: str = "zipf"  # "zipf" (exact discrete) or "power" (continuous, truncated)


@lru_cache(maxsize=32)
def _zipf_cdf(ws: int, skew: float) -> np.ndarray:
    """The cumulative distribution of the discrete Zipf law over ranks 1..ws (shared, read
    only: one table per working set and exponent, 8 bytes a rank)."""
    w = np.arange(1, ws + 1, dtype=np.float64)
    np.power(w, -skew, out=w)
    np.cumsum(w, out=w)
    w /= w[-1]
    w.flags.writeable = False
    return w


@lru_cache(maxsize=32)
def _zipf_guide(ws: int, skew: float) -> np.ndarray:
    """An index into `_zipf_cdf(ws, skew)` by buckets of its values: with K + 1 entries
    (K a power of two, 2 ws to 4 ws, at most 2**22), entry j is how many of the table's values
    are <= j / K. A uniform u lies in bucket j = floor(u K) (exact, K being a power of two),
    so its rank is between entries j and j + 1: the binary search runs over that range only,
    a few ranks instead of the whole table (and mostly in cache)."""
    k = 1 << min(22, (2 * ws - 1).bit_length())
    cuts = np.arange(k + 1, dtype=np.float64) / k
    guide = np.searchsorted(_zipf_cdf(ws, skew), cuts, side="right").astype(np.int32)
    guide.flags.writeable = False
    return guide


def draw_zipf(rng: np.random.Generator, n: int, ws: int, skew: float) -> np.ndarray:
    """n ranks in [0, ws) from the exact discrete Zipf law with exponent `skew` >= 0.

    Inversion: one uniform draw per rank, looked up in the law's cumulative table, so the
    ranks drawn are a function of the stream alone and any split of a batch into smaller ones
    gives the same sequence (common random numbers, whatever the pace)."""
    if ws <= 1:
        return np.zeros(n, np.int64)
    u = rng.random(n)
    r = np.searchsorted(_zipf_cdf(ws, float(skew)), u, side="right").astype(np.int64)
    np.minimum(r, ws - 1, out=r)
    return r


def _draw_ranks(
    rng: np.random.Generator, n: int, ws: int, skew: float, distribution: str = "power"
) -> np.ndarray:
    """n ranks in [0, ws): exact Zipf (`zipf`) or a bounded continuous power law (`power`)
    with exponent `skew`."""
    if distribution == "zipf":
        return draw_zipf(rng, n, ws, skew)
    # in place, operation for operation the same arithmetic as `1.0 + u * c` etc.
    x = rng.random(n)
    if skew == 0.0:
        x *= ws
        x += 1.0
    elif abs(skew - 1.0) < 1e-9:
        x *= math.log(ws + 1.0)
        np.exp(x, out=x)
    else:
        a = 1.0 - skew
        x *= (ws + 1.0) ** a - 1.0
        x += 1.0
        x **= 1.0 / a
    r = x.astype(np.int64)
    r -= 1
    np.minimum(r, ws - 1, out=r)  # clip to [0, ws)
    np.maximum(r, 0, out=r)
    return r


@intrinsic
def _next_double(typingctx, fn, state):
    """One uniform in [0, 1) from a numpy bit generator: its `next_double(state)`, called
    through the addresses of its ctypes interface (`fn`, `state`), the very function
    `Generator.random` calls for each float64 it draws."""
    sig = types.float64(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        voidp = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.DoubleType(), [voidp])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(f, [builder.inttoptr(args[1], voidp)])

    return sig, codegen


@njit(cache=True, nogil=True)
def _uniforms(fn: int, state: int, n: int, scale: float, shift: float) -> np.ndarray:
    """`Generator.random(n)` of the generator at `state`, then `x * scale + shift` (the two
    roundings of `x *= scale; x += shift`)."""
    x = np.empty(n)
    for i in range(n):
        v = _next_double(fn, state) * scale
        x[i] = v + shift
    return x


@njit(cache=True, nogil=True)
def _scatter(r: int, mult: int, offset: int, footprint: int, inv: float) -> int:
    """`(r * mult + offset) % footprint` for 0 <= r, mult, offset < footprint: with `inv` =
    1 / footprint (footprint < 2**26), the quotient through a float multiply, corrected to the
    exact remainder (no division); with `inv` 0, `%`."""
    v = r * mult + offset
    if inv == 0.0:
        return v % footprint
    m = v - np.int64(v * inv) * footprint
    while m < 0:
        m += footprint
    while m >= footprint:
        m -= footprint
    return m


def _inverse(footprint: int) -> float:
    """`_scatter`'s `inv` for this footprint."""
    return 1.0 / footprint if footprint < (1 << 26) else 0.0


@njit(cache=True, nogil=True)
def _write_flags(fn: int, wstate: int, n: int, wf: float) -> np.ndarray:
    """n write flags: `u < wf` for the write stream's (`wstate`) next uniforms u."""
    writes = np.empty(n, np.bool_)
    for i in range(n):
        writes[i] = _next_double(fn, wstate) < wf
    return writes


@njit(cache=True, nogil=True)
def _power_pages(
    x: np.ndarray,
    scale: float,
    fn: int,
    rstate: int,
    n: int,
    wstate: int,
    wf: float,
    ws: int,
    mult: int,
    offset: int,
    footprint: int,
    inv: float,
) -> tuple[np.ndarray, np.ndarray]:
    """n pages and write flags from power-law variates `x`: the rank `int(x) - 1` clipped to
    [0, ws), scattered to `(r * mult + offset) % footprint`; the write flag `u < wf` for the
    next uniform u of the write stream (`wstate`). With `scale` > 0 the variates are the rank
    stream's (`rstate`) next uniforms times `scale` plus one, drawn here (the uniform law,
    skew 0). The numpy path's operations, one by one, in one pass."""
    pages = np.empty(n, np.int64)
    top = ws - 1
    for i in range(n):
        if scale > 0.0:
            v = _next_double(fn, rstate) * scale
            v = v + 1.0
        else:
            v = x[i]
        r = np.int64(v) - 1
        if r > top:
            r = top
        if r < 0:
            r = 0
        pages[i] = _scatter(r, mult, offset, footprint, inv)
    return pages, _write_flags(fn, wstate, n, wf)


@njit(cache=True, nogil=True)
def _zipf_pages(
    cdf: np.ndarray,
    guide: np.ndarray,
    fn: int,
    rstate: int,
    n: int,
    wstate: int,
    wf: float,
    mult: int,
    offset: int,
    footprint: int,
    inv: float,
) -> tuple[np.ndarray, np.ndarray]:
    """n pages and write flags under the exact Zipf law: for each uniform of the rank stream
    (`rstate`), the rank `searchsorted(cdf, u, side="right")` clipped to the table (searched
    between the entries of `guide` for u's bucket, see `_zipf_guide`), scattered as in
    `_power_pages`; the write flags as there."""
    pages = np.empty(n, np.int64)
    top = len(cdf) - 1
    k = float(len(guide) - 1)
    for i in range(n):
        v = _next_double(fn, rstate)
        j = np.int64(v * k)
        lo, hi = np.int64(guide[j]), np.int64(guide[j + 1])
        while lo < hi:  # numpy's binary search for side="right"
            mid = (lo + hi) >> 1
            if v < cdf[mid]:
                hi = mid
            else:
                lo = mid + 1
        r = lo if lo < top else top
        pages[i] = _scatter(r, mult, offset, footprint, inv)
    return pages, _write_flags(fn, wstate, n, wf)


_NEXT_DOUBLE: dict[type, int] = {}


def _address(rng: np.random.Generator) -> tuple[int, int]:
    """(address of `next_double`, address of the state) of a generator's bit generator."""
    bg = rng.bit_generator
    c = bg.ctypes
    fn = _NEXT_DOUBLE.get(type(bg))
    if fn is None:
        fn = _NEXT_DOUBLE[type(bg)] = ctypes.cast(c.next_double, ctypes.c_void_p).value
    return fn, c.state_address


def _plan(ph: Phase, footprint: int) -> tuple:
    """What `Workload.touches` needs of a phase, derived once: (rate, ws, law, k1, k2, write
    fraction); `law` says how uniforms become ranks, k1 and k2 are its constants, computed
    as `_draw_ranks` computes them."""
    ws = max(1, min(ph.ws_pages, footprint))
    law, k1, k2 = _NUMPY, 0.0, 0.0
    skew = ph.skew
    if ph.distribution == "zipf":
        if ws > 1:
            law, k1 = _ZIPF, float(skew)
    elif skew == 0.0:
        law, k1 = _UNIFORM, float(ws)
    elif abs(skew - 1.0) < 1e-9:
        law, k1 = _EXP, math.log(ws + 1.0)
    else:
        a = 1.0 - skew
        law, k1, k2 = _POW, (ws + 1.0) ** a - 1.0, 1.0 / a
    return ph.rate, ws, law, k1, k2, ph.write_fraction


def _unit_multiplier(n: int) -> int:
    """A multiplier coprime to n, about n times the golden ratio, for a scattering bijection."""
    if n <= 2:
        return 1
    m = int(n * 0.6180339887498949) | 1
    while math.gcd(m, n) != 1:
        m += 2
    return m % n or 1


class Workload:
    """Generates the page touches of one guest's workload, epoch by epoch."""

    def __init__(
        self,
        footprint_pages: int,
        phases: list[Phase],
        repeat: bool,
        compressibility: float,
        duplicates: float = 0.0,
        file_cache: float = 0.0,
    ):
        if footprint_pages <= 0:
            raise ValueError("workload footprint must be at least one page")
        self.footprint = footprint_pages
        self.phases = phases
        self.repeat = repeat
        self.compressibility = compressibility
        self.duplicates = duplicates  # share of pages whose unwritten content is the image's
        # file-backed page cache: the last `file_pages` pages of the footprint (popularity
        # ranks map onto pages by a scattering bijection, so they are spread over the ranks)
        self.file_pages = min(footprint_pages, int(round(file_cache * footprint_pages)))
        self._mult = _unit_multiplier(footprint_pages)
        self._offset = footprint_pages // 3
        self._inv = _inverse(footprint_pages)  # the compiled scatter's (see `_scatter`)
        self._cycle = sum(p.duration for p in phases)
        self._plans = [_plan(p, footprint_pages) for p in phases]

    def phase_at(self, t: float) -> tuple[int, int]:
        """(phase index, cycle) in force `t` seconds after the workload (re)started."""
        if len(self.phases) == 1:
            return 0, 0
        cycle = 0
        if self.repeat and self._cycle > 0:
            cycle = int(t // self._cycle)
            t -= cycle * self._cycle
        acc = 0.0
        for i, ph in enumerate(self.phases):
            acc += ph.duration
            if t < acc - 1e-9:
                return i, cycle
        return len(self.phases) - 1, cycle

    def pinned_at(self, t: float) -> float:
        """Share of the footprint the phase in force at `t` keeps mlocked."""
        return self.phases[self.phase_at(t)[0]].pinned

    def rank_to_page(self, ranks: np.ndarray) -> np.ndarray:
        return (ranks * self._mult + self._offset) % self.footprint

    def _ranks_to_pages(self, ranks: np.ndarray) -> np.ndarray:
        """`rank_to_page`, overwriting `ranks` (a fresh array of the caller's)."""
        ranks *= self._mult
        ranks += self._offset
        ranks %= self.footprint
        return ranks

    def _phase(self, streams: TouchStreams, t: float) -> tuple[int, int]:
        """(phase index, cycle) the touches at workload time `t` come from."""
        return self.phase_at(t)

    def touches(
        self, streams: TouchStreams, t: float, work_seconds: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Touches issued during `work_seconds` of work starting at workload time `t`."""
        index, cycle = self._phase(streams, t)
        rate, ws, law, k1, k2, wf = self._plans[index]
        lam = rate * work_seconds
        n = int(streams.count.poisson(lam)) if lam > 0 else 0
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, bool)
        rank_rng, write_rng = streams.pair(index, cycle)
        if not JIT or law == _NUMPY:
            ph = self.phases[index]
            pages = self._ranks_to_pages(_draw_ranks(rank_rng, n, ws, ph.skew, ph.distribution))
            writes = write_rng.random(n) < wf
            return pages, writes
        fn, rstate = _address(rank_rng)
        wstate = _address(write_rng)[1]
        mult, offset, fp, inv = self._mult, self._offset, self.footprint, self._inv
        if law == _ZIPF:
            cdf, guide = _zipf_cdf(ws, k1), _zipf_guide(ws, k1)
            return _zipf_pages(cdf, guide, fn, rstate, n, wstate, wf, mult, offset, fp, inv)
        if law == _UNIFORM:
            x, scale = _NO_X, k1
        else:
            scale = 0.0
            if law == _POW:  # numpy's `**` (its SIMD pow may differ from libm's in the last place)
                x = _uniforms(fn, rstate, n, k1, 1.0)
                x **= k2
            else:  # numpy's `exp`, likewise
                x = _uniforms(fn, rstate, n, k1, 0.0)
                np.exp(x, out=x)
        return _power_pages(x, scale, fn, rstate, n, wstate, wf, ws, mult, offset, fp, inv)


def make_workload(spec, page_size: int) -> Workload:
    """Build a generator from a scenario workload (`zipf`, `phases`, `trace`, `sweep` or
    `bursts`).

    A trace is a phased workload: each row holds from its time until the next row's, the last
    one until the end of the run."""
    law = getattr(spec, "distribution", "zipf")
    if spec.kind == "trace":
        pts = spec.points
        phases = [
            Phase(
                (pts[i + 1].time - p.time) if i + 1 < len(pts) else math.inf,
                max(1, p.working_set // page_size),
                p.touch_rate,
                p.write_fraction,
                spec.skew,
                distribution=law,
            )
            for i, p in enumerate(pts)
        ]
        footprint = max(p.ws_pages for p in phases)
        return Workload(
            footprint, phases, False, spec.compressibility, spec.duplicates, spec.file_cache
        )
    extra = (spec.compressibility, spec.duplicates, spec.file_cache)
    if spec.kind == "sweep":
        start = spec.start // page_size
        return SweepWorkload(start, max(1, spec.region // page_size), spec.rate, *extra)
    if spec.kind == "bursts":
        b = spec.burst
        base = Phase(
            math.inf,
            max(1, spec.working_set // page_size),
            spec.access_rate,
            spec.write_fraction,
            spec.skew,
            distribution=law,
        )
        wf = spec.write_fraction if b.write_fraction is None else b.write_fraction
        burst = Phase(
            math.inf,
            max(1, b.working_set // page_size),
            b.access_rate,
            wf,
            spec.skew,
            distribution=law,
        )
        return BurstsWorkload(base, burst, b.gap.as_dict(), b.duration.as_dict(), *extra)
    if spec.kind == "zipf":
        ws = max(1, spec.working_set // page_size)
        ph = Phase(math.inf, ws, spec.access_rate, spec.write_fraction, spec.skew, distribution=law)
        return Workload(ws, [ph], False, spec.compressibility, spec.duplicates, spec.file_cache)
    phases = [
        Phase(
            p.duration,
            max(1, p.working_set // page_size),
            p.access_rate,
            p.write_fraction,
            p.skew,
            p.pinned,
            law,
        )
        for p in spec.phases
    ]
    footprint = max(p.ws_pages for p in phases)
    return Workload(
        footprint, phases, spec.repeat, spec.compressibility, spec.duplicates, spec.file_cache
    )


class SweepWorkload(Workload):
    """A sequential writer: writes `region` pages in order from page `start`, looping, at
    `rate` pages per second of work (the classic dirtying pattern of migration studies).

    The count per epoch is exact (rate x work, the fraction carried to the next epoch) and
    the position lives in the incarnation's `TouchStreams`, so a restarted guest begins again
    at the region's first page and a stalled one writes the same pages, later."""

    def __init__(
        self,
        start_page: int,
        region_pages: int,
        rate: float,
        compressibility: float,
        duplicates: float = 0.0,
        file_cache: float = 0.0,
    ) -> None:
        if region_pages <= 0:
            raise ValueError("sweep region must be at least one page")
        ph = Phase(math.inf, region_pages, rate, 1.0, 0.0)
        super().__init__(
            start_page + region_pages, [ph], False, compressibility, duplicates, file_cache
        )
        self.start_page = start_page
        self.region_pages = region_pages
        self.rate = rate

    def touches(
        self, streams: TouchStreams, t: float, work_seconds: float
    ) -> tuple[np.ndarray, np.ndarray]:
        due = self.rate * max(0.0, work_seconds) + streams.state.get("carry", 0.0)
        n = int(due)
        streams.state["carry"] = due - n
        pos = streams.state.get("pos", 0)
        streams.state["pos"] = (pos + n) % self.region_pages
        pages = (pos + np.arange(n, dtype=np.int64)) % self.region_pages + self.start_page
        return pages, np.ones(n, bool)


def draw_duration(rng: np.random.Generator, dist: dict) -> float:
    """One draw (seconds, > 0) from `{dist: fixed|exponential|uniform, ...}` (values already
    in seconds: `value`, `mean`, or `min` and `max`)."""
    kind = dist["dist"]
    if kind == "fixed":
        return float(dist["value"])
    if kind == "exponential":
        return max(1e-3, float(rng.exponential(dist["mean"])))
    if kind == "uniform":
        return float(rng.uniform(dist["min"], dist["max"]))
    raise ValueError(f"unknown distribution {kind!r}")


class BurstsWorkload(Workload):
    """Overload episodes: a base Zipf setting, and bursts of a larger working set and rate.

    The episode boundaries (a gap, then a burst, then a gap, ...) are drawn from the
    incarnation's own `bursts` stream, lazily and in order, so they depend on the seed, the
    guest and its incarnation only: every mechanism sees the same episodes at the same
    workload times. Gap k draws its touches from phase 0 cycle k, burst k from phase 1 cycle k
    (see `TouchStreams.pair`)."""

    def __init__(
        self,
        base: Phase,
        burst: Phase,
        gap_dist: dict,
        burst_dist: dict,
        compressibility: float,
        duplicates: float = 0.0,
        file_cache: float = 0.0,
    ) -> None:
        footprint = max(base.ws_pages, burst.ws_pages)
        super().__init__(footprint, [base, burst], False, compressibility, duplicates, file_cache)
        self.gap_dist = gap_dist
        self.burst_dist = burst_dist

    def episodes(self, streams: TouchStreams, until: float) -> list[tuple[float, float]]:
        """The bursts (start, end) in workload time, drawn up to at least `until`."""
        eps: list[tuple[float, float]] = streams.state.setdefault("bursts", [])
        rng = streams.extra("bursts")
        end = eps[-1][1] if eps else 0.0
        while end <= until:
            start = end + draw_duration(rng, self.gap_dist)
            end = start + draw_duration(rng, self.burst_dist)
            eps.append((start, end))
        return eps

    def episode_at(self, streams: TouchStreams, t: float) -> tuple[int, int]:
        """(phase, cycle) at workload time t: (1, k) inside burst k, else (0, k) in the gap
        before burst k."""
        for k, (start, end) in enumerate(self.episodes(streams, t)):
            if t < start:
                return 0, k
            if t < end:
                return 1, k
        raise AssertionError("episodes() draws past t")

    def pinned_at(self, t: float) -> float:
        return 0.0

    def _phase(self, streams: TouchStreams, t: float) -> tuple[int, int]:
        return self.episode_at(streams, t)
