"""Stable seeding: every random stream is derived from (run seed, entity name, incarnation).

Python's `hash()` is salted per process, so it never enters a seed; names are hashed with
blake2b instead. A stream is a numpy `Generator` over PCG64, whose state can be captured and
restored (a migrating guest carries its generator state with it).
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_hash(*parts: str | int) -> int:
    """A 64-bit hash of the parts that is the same in every process and on every machine."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little")


def stream(seed: int, name: str, incarnation: int = 0, purpose: str = "") -> np.random.Generator:
    """The generator for one entity incarnation (and optional purpose) of a run."""
    words = [
        seed & 0xFFFFFFFF,
        seed >> 32,
        *divmod(stable_hash(name, purpose), 1 << 32),
        incarnation,
    ]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))
