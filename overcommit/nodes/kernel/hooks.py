"""The guest-side hook protocol: how a mechanism plugs into the paging core.

The core (`kernel.model.GuestModel`, `kernel.epoch`) knows pages, frames, swap slots, reclaim,
faults, the page cache and OOM; it names no mechanism. A mechanism's guest side is a
`GuestMechanism` subclass in the mechanism's own module, next to its host-side `plan_window`;
the class docstring below lists the hooks and when the core calls them. `EpochContext` carries
one epoch's page sets from stage to stage; `GUEST_ATTRS` lists the attributes every guest has
(other code reads them), which a mechanism's `init` sets when it owns them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from overcommit.nodes.kernel.types import _EI, EpochStats, Reply, Request

if TYPE_CHECKING:
    from overcommit.nodes.host import Directives
    from overcommit.nodes.kernel.model import GuestModel
    from overcommit.profiles import DeviceQueue

#: Attributes every guest has, whatever its mechanisms (the runtimes, the host's reports and
#: the checkers read them); a mechanism's `init` sets the ones it owns.
GUEST_ATTRS: dict[str, Any] = {
    "uses_tmem": False,  # swap-outs are put to host tmem first (frontswap)
    "tmem_pages": 0,  # the guest's persistent pool size as the host's Redis reported it
    "billing": None,  # a compressing or deduplicating pool's bill (frontswap.PoolBilling)
    "tm_factor": 1.0,  # puts and gets cost this many times theirs (a compressing pool)
    "eph_pages": 0,  # the guest's ephemeral pool size (cleancache)
    "eph_demand": 0,  # cleancache puts in the current window
    "cleancache": False,
    "cache": None,  # the host cache of the swap disk (cached_disk.DiskCache)
    "pool": None,  # the compressed pool (zswap.CompressedPool)
    "zram_slots": 0,  # slots of a second swap device inside the guest (zram)
    "balloon": None,  # balloon.BalloonDriver
    "selfballoon": None,  # selfballoon.SelfballoonWorker
    "initial_balloon": 0,  # frames the balloon holds at boot
    "host_swap": False,
    "sharing": False,  # the host merges identical frames (page_sharing)
    "ksm_candidates": [],
}


class EpochContext:
    """One epoch's page sets, passed from stage to stage (all page arrays are int64, sorted
    and distinct unless said otherwise).

    Set by the core: `epoch`, `t`, `dt`, `device`, `d` (directives), `work`, `pages`/`writes`
    (the touches), `uniq`/`loc_u` (touched pages, their locations), `wp`/`wc` (written pages,
    write counts), the faults by location (`f_zero` first touches, `f_fs` frontswap, `f_z`
    compressed pool, `f_sw` swap disk, `f_fnew`/`f_file` page cache), `reads` (swap-in with
    readahead), `clusters`, `need0`, `free`, `pressure`, the slots freed (`free_slot`, by kind
    `fs_flush`/`sw_free`/`z_free`), the victims (`victims`, `is_async`, `clean`), the dirty
    anonymous ones (`dirty`, `dirty_async`, `vers`, `batch`: their records), page-cache
    victims (`fvict`, `f_wb` written back), `disk_mask`/`disk_batch`/`disk_pages`/`disk_sync`
    (dirty victims for the swap disk), `through_batch` and `disk_reads_dev` (what reaches the
    device: a disk cache narrows them), `f_rd1` (file reads in phase 1), `to_disk`,
    `incoming`/`in_frames` (pages faulted in, their frames when `tracks_frames`), `violations`,
    `async_budget` (the guest's background write budget this epoch, `_async_budget`).

    Set by mechanisms (defaults in brackets): `free_extra` [[]], `pull_in`/`pull_flush` [empty],
    `taken` [empty], `to_pool` [all False], `pool_growth` [0], `stored` [empty], `p1_wb`
    [empty], `puts_first` [False], `p2_through`/`p2_wb` [None], `f_out` [`f_wb`], `f_miss`
    [`f_file`], `f_rd2`/`f_rd2_ver` [empty/None], `pool_new` [empty], `discard` [empty],
    `hs_in`/`hs_out`/`n_double` [0], `n_put`/`n_fail` [0], `host_oom` [False],
    `sync_disk`/`sync_cached`.
    """

    def __init__(self, epoch: int, t: float, dt: float, device: DeviceQueue, d: Directives):
        self.epoch, self.t, self.dt, self.device, self.d = epoch, t, dt, device, d
        self.free_extra: list[np.ndarray] = []
        self.pull_in = self.pull_flush = self.taken = _EI
        self.pool_growth = 0
        self.stored = self.p1_wb = _EI
        self.puts_first = False
        self.p2_through = self.p2_wb = None
        self.f_rd2, self.f_rd2_ver = _EI, None
        self.pool_new = self.discard = _EI
        self.hs_in = self.hs_out = self.n_double = 0
        self.n_put = self.n_fail = 0
        self.host_oom = False
        self.violations: list[tuple[str, str]] = []


class GuestMechanism:
    """A mechanism's guest side: hooks the paging core calls, each a no-op by default.

    `features` are the guest features the class implements (`Mechanism.guest_features`); the
    core calls its hooks at fixed points, so a mechanism overrides only the few where it acts.
    Hooks receive the `GuestModel` (`g`) and, inside an epoch, the `EpochContext` (`ep`) that
    carries the epoch's page sets from stage to stage; a hook reads and sets its fields and
    may keep its own state on itself or on `g` (attributes other code reads, such as
    `g.tmem_pages`, are listed in `GUEST_ATTRS`).

    Combinations compose hook objects: a guest holds one object per hook class its features
    select, sorted by `order`, and every stage calls them in that order (the one exception:
    `leave`, which unwinds in reverse order). The orders are fixed so that a combination's
    floating-point sums and store operations happen in one order however its name is spelled.

    Lifecycle (no epoch):
      `init(g)`          build state (construction, and again after a crash: a new incarnation)
      `boot(g)`          the guest (re)boots: frames held at boot, drivers at their boot state
      `reset(g)`         fresh workload memory (boot, and a workload restart after an OOM kill)
      `start_window(g, e0, d)`  take the host's `Directives` for the window starting at `e0`

    One epoch, in call order (`kernel.epoch.run`):
      `quiet_ok(g)`      may the core take the quiet fast path (no reclaim, no store)? Default
                         False: a mechanism with per-epoch work of its own says no.
      `begin(g, ep)`     faults are classified: act at the epoch's start (a worker's tick), add
                         slots this epoch frees (`ep.free_extra`), pages brought back
                         (`ep.pull_in`, `ep.pull_flush`), pages whose remote copy a get removes
                         (`ep.taken`)
      `kswapd_goal(g, ep, want) -> int`  frames kswapd should free in the background
      `reclaim_plan(g, ep)`  adjust how much reclaim scans (`ep.want`) and kswapd's write budget
                         (`ep.budget`, -1: unbounded)
      `take_dirty(g, ep)`    victims are chosen: take dirty victims before the disk (a compressed
                         pool: `ep.to_pool`, `ep.pool_growth`; a remote store tried first:
                         `ep.puts_first`), schedule write-backs (`ep.p1_wb`)
      `request(g, ep, req, phase)`  add this mechanism's ops to the phase's `Request`
      `reply(g, ep, req, reply, phase)`  check and take in the phase's `Reply`
      `replied(g, ep)`   after phase 1's replies, before any page moves
      `evict(g, ep)`     the core has moved the victims out: place the pages this mechanism took
      `settle(g, ep)`    the epoch's changes are applied: move frames (balloon, pool frames, page
                         merging, host swap-ins and swap-outs); may set `ep.host_oom`
      `stall(g, ep, s)`  add this mechanism's stall (seconds) to `s` by source, set the disk
                         writes reclaim waited for (`ep.sync_disk`, `ep.sync_cached`), count

    Failover, faults and migration:
      `release(g, req, whole)`   add drops of this mechanism's stores (OOM kill; `whole`: the
                         guest is gone from the host)
      `released(g, reply, out)`  after those drops: check, forget what the stores held
      `store_lost(g)`    the host's store died and the guest survives: forget its copies
      `lost(g) -> dict`  what only the host's stores hold (a backend loss crashes the guest)
      `drain(g)`, `shrink(g, device, dt)`  generators: give the host back what it lends when asked
      `stop_cooperating(g)`  the guest ignores the host's requests from now on
      `leave(g, src, flush, out)`, `arrive(g, dest, records, out)`  generators: a migration moves
                         what the source host's stores hold
      `frames_held(g) -> int`, `billed(g) -> int`  frames this mechanism holds inside the guest,
                         pages billed to the guest outside its RAM
      `audit(g, full) -> list[str]`  conservation checks (`full`: the recount, each audit interval)
    """

    #: guest features (`Mechanism.guest_features`) this hook class implements
    features: ClassVar[frozenset[str]] = frozenset()
    #: the position among a combination's hooks (smaller first)
    order: ClassVar[int] = 100
    #: the guest sees (and boots with) maxmem of guest-physical frames, not its memory
    sees_maxmem: ClassVar[bool] = False
    #: the mechanism needs the frames this epoch's faults map (`ep.in_frames`)
    tracks_frames: ClassVar[bool] = False
    #: the guest's frame stacks this mechanism keeps frames on (`balloon_stack`, `zp_stack`);
    #: a guest whose mechanisms name none gets them empty (a frame-sized array each, saved)
    frame_stacks: ClassVar[tuple[str, ...]] = ()

    def init(self, g: GuestModel) -> None:
        """Build this mechanism's guest state (and again after a crash)."""

    def boot(self, g: GuestModel) -> None:
        """The guest (re)boots."""

    def reset(self, g: GuestModel) -> None:
        """The workload's memory starts fresh."""

    def start_window(self, g: GuestModel, e0: int, d: Directives) -> None:
        """Take the window's directives."""

    def quiet_ok(self, g: GuestModel) -> bool:
        """Whether an epoch may skip this mechanism when nothing leaves RAM."""
        return False

    def begin(self, g: GuestModel, ep: EpochContext) -> None:
        """The epoch's faults are known."""

    def kswapd_goal(self, g: GuestModel, ep: EpochContext, want: int) -> int:
        """Frames kswapd frees in the background (`want`: toward the high watermark)."""
        return want

    def reclaim_plan(self, g: GuestModel, ep: EpochContext) -> None:
        """Adjust `ep.want` and `ep.budget`."""

    def take_dirty(self, g: GuestModel, ep: EpochContext) -> None:
        """Dirty victims are known: take some before the swap disk."""

    def request(self, g: GuestModel, ep: EpochContext, req: Request, phase: int) -> None:
        """Add this mechanism's ops to phase `phase`'s request."""

    def reply(
        self, g: GuestModel, ep: EpochContext, req: Request, reply: Reply, phase: int
    ) -> None:
        """Take in phase `phase`'s reply (`req` as sent)."""

    def replied(self, g: GuestModel, ep: EpochContext) -> None:
        """Phase 1 is answered; nothing has moved yet."""

    def evict(self, g: GuestModel, ep: EpochContext) -> None:
        """The victims have left RAM: place the pages this mechanism took."""

    def settle(self, g: GuestModel, ep: EpochContext) -> None:
        """The epoch's page moves are applied: move frames."""

    def stall(self, g: GuestModel, ep: EpochContext, s: dict[str, float]) -> None:
        """Add stall seconds by source to `s`; count this mechanism's counters."""

    def release(self, g: GuestModel, req: Request, whole: bool) -> None:
        """Add drops of this mechanism's stores to `req`."""

    def released(self, g: GuestModel, reply: Reply, out: list[tuple[str, str]]) -> None:
        """The drops are done."""

    def store_lost(self, g: GuestModel) -> None:
        """The host's store died; the guest lives on without its copies."""

    def lost(self, g: GuestModel) -> dict[str, int]:
        """Pages whose only copy is in the host's stores, by kind."""
        return {}

    def drain(self, g: GuestModel) -> Generator[Request, Reply, tuple[int, EpochStats] | None]:
        """Give back everything the host lends (None: nothing to do)."""
        return None
        yield  # a generator

    def shrink(
        self, g: GuestModel, device: DeviceQueue, dt: float
    ) -> Generator[Request, Reply, EpochStats | None]:
        """One epoch of giving back what the host asked for (None: nothing to do)."""
        return None
        yield  # a generator

    def stop_cooperating(self, g: GuestModel) -> None:
        """Ignore the host's requests from now on."""

    def leave(
        self, g: GuestModel, src: str, flush: bool, out: dict[str, Any]
    ) -> Generator[Request, Reply, None]:
        """Migration: move this mechanism's pages out of the source host's stores."""
        return
        yield  # a generator

    def arrive(
        self, g: GuestModel, dest: str, records: Any, out: dict[str, Any]
    ) -> Generator[Request, Reply, None]:
        """Migration: put what `leave` carried into the destination's stores."""
        return
        yield  # a generator

    def frames_held(self, g: GuestModel) -> int:
        """Guest frames this mechanism holds (not free, not holding a page)."""
        return 0

    def billed(self, g: GuestModel) -> int:
        """Pages of host memory billed to the guest outside its RAM."""
        return 0

    def audit(self, g: GuestModel, full: bool) -> list[str]:
        """Conservation violations of this mechanism's state."""
        return []
