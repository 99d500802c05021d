"""What the studies (compare, drill, capacity sweep) and the Python API share: a scenario
given as a path to a YAML file, YAML text or a `Scenario`, with overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from overcommit.config import Scenario, apply_overrides, load_scenario, load_scenario_text


def load(
    config: str | os.PathLike[str] | Scenario, overrides: dict[str, Any] | None = None
) -> Scenario:
    """A Scenario from a path, YAML text or a Scenario, with `overrides` (path -> value)."""
    if isinstance(config, Scenario):
        sc = config
    elif isinstance(config, os.PathLike):
        sc = load_scenario(config)
    elif isinstance(config, str):
        if "\n" in config or (not Path(config).exists() and ":" in config):
            sc = load_scenario_text(config, "<config text>")
        else:
            sc = load_scenario(config)
    else:
        raise TypeError(f"config must be a path, YAML text or a Scenario, not {type(config)}")
    return apply_overrides(sc, overrides, source="overrides") if overrides else sc
