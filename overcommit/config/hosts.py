"""The host side of a scenario: `Runtime`, `Hosts` (with `HostSwap` and `Tmem`),
`SharedStorage`, `DeviceOverride` and `BUILTIN_DEVICES`, `Costs`, `RedisConfig` and `Limits`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from overcommit.config.common import (
    _EMPTY_IS_DEFAULT,
    MAX_HOSTS,
    Duration,
    Float,
    Int,
    Name,
    PositiveBandwidth,
    PositiveDuration,
    PositiveRate,
    PositiveSize,
    RedisUrl,
    Size,
    _default,
    _first_duplicate,
    _Model,
)
from overcommit.units import format_size

#: Device profiles every scenario may name without defining them under ``devices``.
BUILTIN_DEVICES: tuple[str, ...] = ("nvme", "ssd", "hdd", "san")


class Runtime(_Model):
    """Where the emulation runs: `ray` (hosts as Ray actors; guests as actors of their own or
    packed inside their host's actor) or `inline` (one process)."""

    kind: Literal["inline", "ray"] = "ray"
    guests: Literal["actors", "packed"] = "actors"
    address: str | None = None
    pin: Literal["spread", "resource"] = "spread"
    hosts_per_actor: int | Literal["auto"] = "auto"

    @field_validator("hosts_per_actor", mode="before")
    @classmethod
    def _check_hosts_per_actor(cls, k: Any, info: ValidationInfo) -> int | str:
        if k == "auto":
            return k
        if isinstance(k, str) and k.strip().isdigit():  # from the command line
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"expected an integer at least 1 or 'auto', got {k!r}")
        if k == 1:
            return k
        if info.data.get("guests") != "packed":
            raise ValueError(f"{k} hosts per actor needs guests: packed (guests are actors)")
        if info.data.get("pin") == "resource":
            raise ValueError(
                f"{k} hosts per actor cannot go with pin: resource (each host on its own node)"
            )
        return k

    def per_actor(self, hosts: int, cpus: int) -> int:
        """Hosts each Ray actor process runs: the number given, or for `auto` as many as
        spread `hosts` over `cpus` processes (one host each when the CPUs are as many as the
        hosts; always one unless guests are packed and hosts are not pinned to nodes)."""
        k = self.hosts_per_actor
        if k != "auto":
            return k
        if self.kind != "ray" or self.guests != "packed" or self.pin == "resource":
            return 1
        return max(1, -(-hosts // max(1, cpus)))


class HostSwap(_Model):
    """Host swap device (used by host-level swapping mechanisms)."""

    device: Name = "ssd"
    size: Size = 0
    policy: Literal["random", "lru"] = "random"


class Tmem(_Model):
    """Host transcendent-memory pool settings."""

    max: Size | None = None
    exclusive_gets: bool = False
    compress: bool = False
    dedup: bool = False


class Hosts(_Model):
    """All hosts share one specification; ``count`` of them are created."""

    count: Int = Field(1, ge=1, le=MAX_HOSTS)
    names: list[Name] | None = None
    ram: PositiveSize
    reserve: Size = 0
    boot: Literal["eager", "lazy"] = "eager"
    swap: Annotated[HostSwap, _EMPTY_IS_DEFAULT] = _default(HostSwap)
    tmem: Annotated[Tmem, _EMPTY_IS_DEFAULT] = _default(Tmem)

    @model_validator(mode="before")
    @classmethod
    def _count_from_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "count" not in data and isinstance(data.get("names"), list):
            data = {**data, "count": len(data["names"])}
        return data

    @field_validator("names")
    @classmethod
    def _check_names(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if names is None:
            return names
        count = info.data.get("count")
        if count is not None and len(names) != count:
            raise ValueError(f"{len(names)} names given for {count} hosts (hosts.count)")
        duplicate = _first_duplicate(names)
        if duplicate is not None:
            raise ValueError(f"host name {duplicate!r} is given twice")
        return names

    @field_validator("reserve")
    @classmethod
    def _check_reserve(cls, reserve: int, info: ValidationInfo) -> int:
        ram = info.data.get("ram")
        if ram is not None and reserve >= ram:
            raise ValueError(
                f"reserve {format_size(reserve)} must be less than ram {format_size(ram)}"
            )
        return reserve


class SharedStorage(_Model):
    """Storage that survives host death (holds the guests' swap disks)."""

    device: Name = "san"


class DeviceOverride(_Model):
    """Overrides of a built-in device profile, or a full definition of a new device."""

    read_latency: Duration | None = None
    write_latency: Duration | None = None
    iops: PositiveRate | None = None
    bandwidth: PositiveBandwidth | None = None

    def missing(self) -> list[str]:
        """Names of the fields left unset (a new device must set all of them)."""
        return [name for name in type(self).model_fields if getattr(self, name) is None]


class Costs(_Model):
    """Overrides of per-operation costs charged in emulated time (None = built-in default)."""

    hypercall: Duration | None = None
    tmem_put: Duration | None = None
    tmem_get: Duration | None = None
    tmem_flush: Duration | None = None
    minor_fault: Duration | None = None
    major_fault: Duration | None = None
    host_page_alloc: Duration | None = None
    ram_bandwidth: PositiveBandwidth | None = None
    io_exit: Duration | None = None
    compress_bandwidth: PositiveBandwidth | None = None
    decompress_bandwidth: PositiveBandwidth | None = None
    tmem_compress_factor: Float | None = Field(None, ge=1)


class RedisConfig(_Model):
    """External Redis servers (default: the emulator starts its own)."""

    hosts: dict[Name, RedisUrl] | None = None
    shared: RedisUrl | None = None
    socket: Literal["unix", "tcp"] = "unix"
    prefix: str = "oc"
    # how long a store may leave a request unanswered before the run fails (a hung server)
    timeout: PositiveDuration = 30.0

    @model_validator(mode="after")
    def _both_or_neither(self) -> RedisConfig:
        if (self.hosts is None) != (self.shared is None):
            given, absent = ("hosts", "shared") if self.shared is None else ("shared", "hosts")
            raise ValueError(
                f"redis.{given} is given but redis.{absent} is not; give both or neither"
            )
        return self


class Limits(_Model):
    """Resource budgets checked before a run."""

    store_memory: PositiveSize | None = None
