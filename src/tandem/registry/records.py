"""What the registry hands out: plain, immutable records (no ORM objects leave the registry)."""

from __future__ import annotations

import re
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
class KeyInfo:
    key_id: str  # public part, safe to show and log
    scope: Scope
    label: str
    created: datetime
    revoked: datetime | None = None


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
