"""`MigrationSettings`: the scenario's `migration:` section (live migration)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from overcommit.config.common import (
    Duration,
    Fraction,
    Int,
    PositiveBandwidth,
    PositiveDuration,
    Size,
    _Model,
)


class MigrationSettings(_Model):
    """Live migration (QEMU's defaults where it has them)."""

    mode: Literal["precopy", "postcopy"] = "precopy"
    postcopy_after: Int = Field(1, ge=1)
    downtime_limit: PositiveDuration = 0.3
    bandwidth: PositiveBandwidth = 128 * 2**20
    nic: PositiveBandwidth = 10e9 / 8
    max_rounds: Int = Field(30, ge=1)
    auto_converge: bool = True
    throttle_initial: Fraction = 0.2
    throttle_step: Fraction = 0.1
    throttle_max: Fraction = 0.99
    tmem: Literal["xen", "flush-to-swap"] = "xen"
    concurrency: Int = Field(2, ge=1)
    fault_latency: Duration = 200e-6
    zero_page_bytes: Size = 16
    deadline: PositiveDuration = 120.0
