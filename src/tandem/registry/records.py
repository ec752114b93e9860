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

# train: managed training (POST /v1/trainings): upload a dataset, train, push the result (docs/scale.md).
Scope = Literal["predict", "device", "train", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "device", "train", "admin")


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
    archived: datetime | None = None  # when it was archived: stored and listed, not served, aliased or released
    pushed_by: str | None = None  # who pushed it (the OS user, or what `tandem push --by` said)


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
    # The key's own token bucket; None: the server's default for its scope (TANDEM_*RATE_LIMIT_*).
    rate_per_s: float | None = None
    burst: int | None = None
    expires: datetime | None = None  # when it stops working (aware, UTC); None: never

    def expired(self, now: datetime) -> bool:
        """Whether the key has stopped working by ``now`` (an aware time). Checked by whoever uses the
        record, on every request: a record remembered for a while must not outlive its key."""
        return self.expires is not None and now >= self.expires


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
    cloud model at someone else's cost, and a predict key must not download weights; a train key, which
    runs jobs on the cluster and pushes versions, does neither)."""
    return have in (need, "admin")
