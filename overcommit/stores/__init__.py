"""Storage layer: real Redis servers, page-record codec, host tmem pools and guest swap disks.

- :mod:`.launcher`: start/stop the per-host and shared-storage ``redis-server`` processes
  (or wrap external URLs), with cleanup on exit, SIGTERM and parent death.
- :mod:`.codec`: fixed-width msgpack page records, deterministic content and checksums.
- :mod:`.tmem`: a host's persistent tmem (frontswap) pools, one atomic Lua batch per guest
  and epoch; sync and async.
- :mod:`.swap`: guest swap disks on shared storage; sync and async.

The names below are imported on first use (PEP 562), so importing one submodule (the models
import :mod:`.codec`) does not load the Redis client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overcommit.stores.codec import (
        PAYLOAD_MODES,
        PayloadMode,
        RecordBatch,
        checksums,
        decode,
        encode,
        encode_pages,
        guest_key,
        make_batch,
        make_payload,
        page_offset,
        record_len,
        verify,
    )
    from overcommit.stores.launcher import (
        ExternalRedis,
        RedisFleet,
        RedisServer,
        RedisUnavailable,
        find_redis_server,
        install_signal_handlers,
        live_servers,
        stop_all_servers,
    )
    from overcommit.stores.swap import AsyncSwapStore, SwapBatchResult, SwapStore, swap_key
    from overcommit.stores.tmem import (
        DEFAULT_PREFIX,
        AsyncTmemPool,
        TmemBatchResult,
        TmemPool,
        meta_key,
        page_field,
        tmem_key,
    )

__all__ = [
    "DEFAULT_PREFIX",
    "PAYLOAD_MODES",
    "AsyncSwapStore",
    "AsyncTmemPool",
    "ExternalRedis",
    "PayloadMode",
    "RecordBatch",
    "RedisFleet",
    "RedisServer",
    "RedisUnavailable",
    "SwapBatchResult",
    "SwapStore",
    "TmemBatchResult",
    "TmemPool",
    "checksums",
    "decode",
    "encode",
    "encode_pages",
    "find_redis_server",
    "guest_key",
    "install_signal_handlers",
    "live_servers",
    "make_batch",
    "make_payload",
    "meta_key",
    "page_field",
    "page_offset",
    "record_len",
    "stop_all_servers",
    "swap_key",
    "tmem_key",
    "verify",
]


_HOME = {
    name: module
    for module, names in (
        ("codec", (
            "PAYLOAD_MODES", "PayloadMode", "RecordBatch", "checksums", "decode", "encode",
            "encode_pages", "guest_key", "make_batch", "make_payload", "page_offset",
            "record_len", "verify",
        )),
        ("launcher", (
            "ExternalRedis", "RedisFleet", "RedisServer", "RedisUnavailable",
            "find_redis_server", "install_signal_handlers", "live_servers", "stop_all_servers",
        )),
        ("swap", ("AsyncSwapStore", "SwapBatchResult", "SwapStore", "swap_key")),
        ("tmem", (
            "DEFAULT_PREFIX", "AsyncTmemPool", "TmemBatchResult", "TmemPool", "meta_key",
            "page_field", "tmem_key",
        )),
    )
    for name in names
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'overcommit.stores' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"overcommit.stores.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
