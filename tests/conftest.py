"""Shared pytest fixtures.

Sections are owned by the parts they serve; add new sections below rather than editing
another's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from overcommit.stores.launcher import RedisFleet

# =============================================================================================
# Redis (storage layer): real redis-server processes, shared per test module.
#
# - ``redis_fleet``: a started RedisFleet with hosts ``host-a`` and ``host-b`` (unix sockets,
#   no persistence) and ``shared`` (append-only), stopped when the module's tests are done.
# - ``redis_prefix``: a fresh key namespace per test, so tests sharing a server never see
#   each other's keys (pass it as ``prefix=`` to the stores).
# =============================================================================================

FLEET_HOSTS = ["host-a", "host-b"]
_prefix_counter = itertools.count()


@pytest.fixture(scope="module")
def redis_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFleet]:
    fleet = RedisFleet(FLEET_HOSTS, tmp_path_factory.mktemp("redis"))
    with fleet:
        yield fleet


@pytest.fixture
def redis_prefix() -> str:
    return f"t{next(_prefix_counter)}"
