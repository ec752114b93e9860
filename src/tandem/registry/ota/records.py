"""What the registry's over-the-air side hands out: plain, immutable records (no ORM objects leave it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tandem.registry.ota.rollout import ReleaseState
from tandem.registry.records import EVERY_MODEL, KeyInfo, ModelScope


@dataclass(frozen=True)
class DeviceInfo:
    """A registered device (``POST /v1/devices``)."""

    device_id: str  # assigned by the server
    enrolled_by: str  # the id of the device-scope API key it registered with
    created: datetime
    revoked: datetime | None = None
    model_scope: ModelScope = EVERY_MODEL  # inherited from the key it registered with

    def principal(self) -> KeyInfo:
        return KeyInfo(self.device_id, "device", f"device enrolled with key {self.enrolled_by}", self.created,
                       self.revoked, device_id=self.device_id, model_scope=self.model_scope)


@dataclass(frozen=True)
class HealthInfo:
    """A release's health over distinct devices: each device counts once, by its latest report."""

    reports: int = 0  # counted reports, those a later one replaced included
    devices: int = 0  # distinct devices that reported
    failed_devices: int = 0  # devices whose latest report saw a load failure or an inference error
    load_failures: int = 0  # the rest: sums and means over the devices' latest reports
    inference_errors: int = 0
    inferences: int = 0
    p50_ms_mean: float | None = None
    p99_ms_mean: float | None = None
    p99_ms_max: float | None = None  # the highest p99 any counted report gave

    @property
    def failure_rate(self) -> float:
        return self.failed_devices / self.devices if self.devices else 0.0


@dataclass(frozen=True)
class ReleaseInfo:
    name: str
    version: int
    channel: str
    percent: float
    state: ReleaseState
    min_app_version: str | None = None
    max_app_version: str | None = None
    platforms: tuple[str, ...] = ()
    min_os_version: str | None = None
    min_ram_mb: int | None = None
    max_failure_rate: float | None = None
    min_devices: int = 0  # distinct devices the health gate needs before it judges
    variants: tuple[str, ...] = ()  # the variants it offers, by key or format (variants.py); (): all of them
    note: str = ""  # why the state is what it is (e.g. the health gate's figures)
    created: datetime | None = None
    updated: datetime | None = None
    health: HealthInfo = field(default_factory=HealthInfo)


@dataclass(frozen=True)
class PinInfo:
    name: str
    channel: str
    device_id: str
    version: int
    created: datetime | None = None


@dataclass(frozen=True)
class SigningKeyInfo:
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    created: datetime
    retired: datetime | None = None
    current: bool = False
    # next (published, not signing yet) | current (signing) | previous (signed before; devices still trust it) |
    # retired (devices told to drop it)
    state: str = "current"
    activates: datetime | None = None  # a next key: when it starts signing (at the server's first check after)
    activated: datetime | None = None  # when it started signing (None: it never has)
    endorsed_by: str | None = None  # the key that was current when this one was made, vouching for it


@dataclass(frozen=True)
class OtaObjectInfo:
    """A store object made for devices (see schema.OtaObject)."""

    name: str
    version: int
    kind: str  # file | delta
    path: str
    from_sha256: str  # delta: the older plaintext file it patches; file: ""
    plain_sha256: str  # the version's plaintext file
    sha256: str  # the stored, served object
    size: int
