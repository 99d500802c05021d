"""overcommit: a multi-host cluster emulator for memory-overcommit mechanisms.

Hosts and guests are plain Python + numpy models; Redis holds tmem pools and swap stores;
the `inline` runtime drives everything in one process. See README.md and docs/.

The notebook API — `overcommit.run(config) -> Result`, `overcommit.compare(...)`,
`overcommit.sweep(...) -> DataFrame` — is imported on first use (overcommit/api.py), so
`import overcommit` stays fast. `overcommit.compare` is also the module of that name: calling
it runs the API function. `overcommit.register_mechanism(cls)` makes a mechanism defined
outside the package known (docs/mechanisms.md).
"""

from __future__ import annotations

from typing import Any

from overcommit.version import __version__ as __version__

_API = ("run", "sweep", "Result", "load")


def __getattr__(name: str) -> Any:
    if name in _API:
        from overcommit import api

        return getattr(api, name)
    if name == "register_mechanism":  # a mechanism defined outside the package
        from overcommit.nodes.mechanism import register

        return register
    if name == "compare":  # the module, made callable (see overcommit/compare.py)
        import importlib

        return importlib.import_module("overcommit.compare")
    raise AttributeError(f"module 'overcommit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "compare", "register_mechanism"])
