"""What the registry hands out: plain, immutable records (no ORM objects leave the registry)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

# An alias: lowercase so URLs and CLI agree; never all digits (those are version numbers).
ALIAS_RE = re.compile(r"^[a-z0-9_-]{1,64}$")

Scope = Literal["predict", "device", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "device", "admin")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    versions: int
    latest: int | None
    aliases: dict[str, int]  # alias -> version


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    manifest_sha256: str  # sha256 of the stored manifest.json: the version's identity
    size: int  # bytes of all files of the bundle
    created: datetime
    aliases: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # bundle-relative path -> sha256 (content address)


@dataclass(frozen=True)
class AliasInfo:
    name: str
    alias: str
    version: int
    previous: int | None  # what `rollback` would go back to
    updated: datetime


@dataclass(frozen=True)
class ModelScope:
    """The models a device key, and every device registered with it, may see over the air: those it
    names, and those of the apps it names (a model one of whose versions' manifests lists the app, e.g.
    celebmatch). Neither named: every model. A model outside it does not exist for that caller (404)."""

    models: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.models and not self.apps

    def allows(self, name: str, apps_of: Callable[[str], Iterable[str]]) -> bool:
        if self.everything or name in self.models:
            return True
        return bool(self.apps) and any(app in self.apps for app in apps_of(name))

    def describe(self) -> str:
        if self.everything:
            return "all models"
        parts = [*(f"model {m}" for m in self.models), *(f"app {a}" for a in self.apps)]
        return ", ".join(parts)


EVERY_MODEL = ModelScope()


@dataclass(frozen=True)
class KeyInfo:
    """Who called: an API key, or a registered device (``device_id`` set, scope ``device``)."""

    key_id: str  # public part, safe to show and log (a device's: its device id)
    scope: Scope
    label: str
    created: datetime
    revoked: datetime | None = None
    device_id: str | None = None  # a registered device's credential, not an API key
    model_scope: ModelScope = EVERY_MODEL  # device keys and devices: the models they may see (OTA)


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
class Resolved:
    """A model reference resolved to one stored version, with a verified bundle folder to load from."""

    name: str
    version: int
    manifest_sha256: str
    bundle_dir: Path


def grants(have: Scope, need: Scope) -> bool:
    """Whether a key of scope ``have`` may call a route that needs ``need``: admin may do everything;
    predict and device keys only their own routes (a device key embedded in an app must not run the
    cloud model at someone else's cost, and a predict key must not download weights)."""
    return have == need or have == "admin"


# --- over-the-air delivery (docs/ota.md) ---------------------------------------------------------


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
    state: str  # active | halted | rolled_back
    min_app_version: str | None = None
    max_app_version: str | None = None
    platforms: tuple[str, ...] = ()
    min_os_version: str | None = None
    min_ram_mb: int | None = None
    max_failure_rate: float | None = None
    min_devices: int = 0  # distinct devices the health gate needs before it judges
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
