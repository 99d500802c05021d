"""The pages a post-copy migration left at its source, in the SOURCE host's Redis.

Key ``{prefix}:postcopy:{guest}:{migration}``: hash, 4-byte big-endian page -> fixed-width
record (:mod:`overcommit.stores.codec`), one per migration. At switch-over the guest writes the
pages it has not sent yet (`stash`); each later epoch the pages it faults on or the background
push moves are read and deleted in one atomic call (`fetch`, ``lua/postcopy_batch.lua`` with
the same pages read, then freed); once the last page has moved the
hash is empty, and Redis removes an empty hash. When the source host dies its server dies with
the hash: the pages still in it are lost. Request plumbing is shared with
:mod:`overcommit.stores.tmem`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from overcommit.stores.codec import PayloadMode, RecordBatch, decode
from overcommit.stores.swap import SwapBatchResult, hset_command
from overcommit.stores.tmem import (
    Command,
    Eval,
    Op,
    Raw,
    found_mask,
    hash_records,
    pages_blob,
    records_args,
)


def remote_key(prefix: str, guest: str, migration: int) -> str:
    """Key of the pages a guest's post-copy migration left at its source."""
    return f"{prefix}:postcopy:{guest}:{migration}"


class RemoteStoreOps:
    """The post-copy source store's operations, each a generator of Redis requests."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, guest: str, migration: int) -> str:
        return remote_key(self.prefix, guest, migration)

    def stash(
        self, guest: str, migration: int, records: RecordBatch, mode: PayloadMode, page_size: int
    ) -> Op[int]:
        """Write the records (one HSET); returns the pages new to the hash."""
        blob, reclen, pageoff = records_args(guest, records, mode, page_size)
        key = self.key(guest, migration).encode()
        return int((yield Raw("HSET", hset_command(key, blob, reclen, pageoff))))

    def fetch(
        self,
        guest: str,
        migration: int,
        pages: np.ndarray | Sequence[int],
        mode: PayloadMode,
        page_size: int,
    ) -> Op[SwapBatchResult]:
        """Read `pages` and delete them, atomically (one round trip); `pages_after` is what
        the hash still holds."""
        _, reclen, pageoff = records_args(guest, None, mode, page_size)
        blob = pages_blob(pages)
        args = ("batch", blob, blob, b"", reclen, pageoff)
        flags, recs, freed, after = yield Eval(
            "postcopy_batch", (self.key(guest, migration),), args
        )
        return SwapBatchResult(
            found_mask(flags), decode(guest, recs, mode, page_size), int(freed), int(after)
        )

    def read_all(
        self, guest: str, migration: int, mode: PayloadMode, page_size: int
    ) -> Op[RecordBatch]:
        """Every record the hash holds, sorted by page."""
        return (yield from hash_records(self.key(guest, migration), guest, mode, page_size))

    def count(self, guest: str, migration: int) -> Op[int]:
        return int((yield Command(("HLEN", self.key(guest, migration)))))

    def drop(self, guest: str, migration: int) -> Op[int]:
        """Delete the hash; returns the pages it held."""
        return int((yield Eval("postcopy_batch", (self.key(guest, migration),), ("drop",))))
