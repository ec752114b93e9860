"""Which version a device should run: the OTA rollout rules as pure functions (docs/ota.md).

No database and no I/O here: the server evaluates these on every `POST /v1/ota/check` against rules
it keeps in memory, and the tests can check every rule directly.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tandem.errors import InvalidRequest, quoted

ReleaseState = Literal["active", "halted", "rolled_back"]
STATES: tuple[ReleaseState, ...] = ("active", "halted", "rolled_back")
Action = Literal["install", "rollback", "stay"]
# Why, as the signed payload says it (docs/ota.md): install for a release or a pin; rollback only for a
# rollback recorded on the server (the release the device runs was rolled back) or a pin; stay when the
# device runs what it should, nothing is for it, or it runs a newer version with no rollback recorded.
Reason = Literal["release", "pin", "rolled_back", "current", "no_release", "no_recorded_rollback"]

# A version such as 2.4, 2.4.0, v17.2.1, 3.0rc1, 3.0.dev2, 2.4.0-beta.3, 2.4.post1 or 2.4.0+build.7:
# up to eight numeric parts, then an optional pre-release (dev, a/alpha, b/beta, rc/c/pre/preview), an
# optional post-release, and local build metadata that does not count.
_VERSION = re.compile(
    r"^v?(?P<release>\d{1,9}(?:\.\d{1,9}){0,7})"
    r"(?:[-._]?(?P<pre>dev|alpha|a|beta|b|rc|c|preview|pre)[-._]?(?P<pre_n>\d{1,9})?)?"
    r"(?:[-._]?(?P<post>post|rev|r)[-._]?(?P<post_n>\d{1,9})?)?"
    r"(?:\+[A-Za-z0-9.-]{1,64})?$",
    re.IGNORECASE,
)
# How a pre-release sorts against the release it leads to (dev < alpha < beta < rc < the release).
_PRE_RANK = {"dev": 0, "a": 1, "alpha": 1, "b": 2, "beta": 2, "c": 3, "rc": 3, "pre": 3, "preview": 3}
_FINAL = 4

VersionKey = tuple[tuple[int, ...], tuple[int, int], int]


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class AppVersion:
    """A comparable version. ``key``: the numeric parts without trailing zeros (so 2.4 == 2.4.0), the
    pre-release rank and number, the post-release number."""

    key: VersionKey
    text: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AppVersion) and self.key == other.key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, AppVersion):
            return NotImplemented
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return self.text


def parse_version(text: object, what: str = "app_version") -> AppVersion:
    """``text`` as a comparable version; InvalidRequest (400) with an example when it is not one."""
    m = _VERSION.fullmatch(text.strip()) if isinstance(text, str) and len(text) <= 100 else None
    if m is None:
        raise InvalidRequest(
            f"{what} {quoted(text, 60)} is not a version: use numbers separated by dots, optionally with a "
            "pre-release or post-release suffix, e.g. 2.4, 2.4.1, 3.0rc1 or 17.2.1"
        )
    parts = [int(p) for p in m.group("release").split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    pre = m.group("pre")
    pre_key = (_PRE_RANK[pre.lower()], int(m.group("pre_n") or 0)) if pre else (_FINAL, 0)
    post = int(m.group("post_n") or 0) + 1 if m.group("post") else 0
    return AppVersion((tuple(parts), pre_key, post), m.string)  # the text, stripped


def optional_version(text: str | None, what: str) -> AppVersion | None:
    return parse_version(text, what) if text else None


def bucket(name: str, channel: str, device_id: str) -> float:
    """The device's place in a staged rollout, 0.00 to 99.99: the same device, model and channel
    always get the same number, so a device in at 10% stays in at 50%."""
    digest = hashlib.sha256(f"{name}:{channel}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000 / 100


@dataclass(frozen=True)
class Rule:
    """One release of a model version on a channel, as the rollout decision needs it (versions parsed
    once, when the rules are loaded, not on every check)."""

    version: int
    state: ReleaseState = "active"
    percent: float = 100.0
    min_app: AppVersion | None = None
    max_app: AppVersion | None = None
    platforms: tuple[str, ...] = ()
    min_os: AppVersion | None = None
    min_ram_mb: int | None = None
    # The runtimes the release has a model for (its variants' formats, less what it holds back); None: any.
    runtimes: frozenset[str] | None = None

    @classmethod
    def of(cls, version: int, state: ReleaseState = "active", percent: float = 100.0,
           min_app_version: str | None = None, max_app_version: str | None = None,
           platforms: Iterable[str] = (), min_os_version: str | None = None, min_ram_mb: int | None = None,
           runtimes: Iterable[str] | None = None) -> Rule:
        return cls(version, state, percent, optional_version(min_app_version, "min_app_version"),
                   optional_version(max_app_version, "max_app_version"), tuple(p.lower() for p in platforms),
                   optional_version(min_os_version, "min_os_version"), min_ram_mb,
                   frozenset(runtimes) if runtimes is not None else None)


@dataclass(frozen=True)
class Device:
    """What a device says about itself in a check. Parse the versions with :meth:`parse`."""

    device_id: str
    installed: int | None = None
    platform: str | None = None
    os_version: AppVersion | None = None
    app_version: AppVersion | None = None
    ram_mb: int | None = None
    # The runtime it runs models with (a check that names none: onnx); None: not judged (any release will do).
    runtime: str | None = None

    @classmethod
    def parse(cls, device_id: str, installed: int | None = None, platform: str | None = None,
              os_version: str | None = None, app_version: str | None = None, ram_mb: int | None = None,
              runtime: str | None = None) -> Device:
        return cls(device_id, installed, platform.lower() if platform else None,
                   optional_version(os_version, "os_version"), optional_version(app_version, "app_version"), ram_mb,
                   runtime)


def targets(rule: Rule, device: Device) -> bool:
    """Whether the release's targeting (app version range, platform, OS version, RAM, a model for the
    device's runtime) covers the device. A device that does not say what a rule asks about is not covered
    by that rule."""
    if rule.runtimes is not None and device.runtime is not None and device.runtime not in rule.runtimes:
        return False
    if rule.min_app is not None and (device.app_version is None or device.app_version < rule.min_app):
        return False
    if rule.max_app is not None and (device.app_version is None or device.app_version > rule.max_app):
        return False
    if rule.platforms and device.platform not in rule.platforms:
        return False
    if rule.min_os is not None and (device.os_version is None or device.os_version < rule.min_os):
        return False
    return rule.min_ram_mb is None or (device.ram_mb is not None and device.ram_mb >= rule.min_ram_mb)


def covers(rule: Rule, name: str, channel: str, device: Device) -> bool:
    """Whether the release is for this device: targeting met and inside the staged percentage."""
    return targets(rule, device) and bucket(name, channel, device.device_id) < rule.percent


@dataclass(frozen=True)
class Decision:
    version: int
    action: Action
    pinned: bool = False
    reason: Reason = field(default="release", compare=False)


def decide(name: str, channel: str, rules: Sequence[Rule], pins: Mapping[str, int], device: Device) -> Decision | None:
    """What ``device`` should run on ``channel``; None when no release is for it.

    ``rules``: the channel's releases, any order. A pin wins over every release. Otherwise the
    newest release that is for the device: an active one whose targeting and percentage cover it,
    or a halted one it already runs (a halted release keeps its devices but takes no new ones).
    Rolled-back releases are for nobody.

    A version lower than the installed one is a rollback only when the server recorded one: a pin,
    or the installed version's release on this channel was rolled back. Otherwise the device stays
    on what it runs (``action`` "stay", the installed version): what a device says about itself
    (an old app version, another platform) never earns it a signed downgrade.
    """
    installed = device.installed
    pinned = pins.get(device.device_id)
    if pinned is not None:
        action: Action = "rollback" if installed is not None and pinned < installed else "install"
        return Decision(pinned, action, pinned=True, reason="pin")
    for rule in sorted(rules, key=lambda r: r.version, reverse=True):
        if rule.state == "active" and covers(rule, name, channel, device):
            if installed is None or rule.version >= installed:
                return Decision(rule.version, "install")
            if any(r.version == installed and r.state == "rolled_back" for r in rules):
                return Decision(rule.version, "rollback", reason="rolled_back")
            return Decision(installed, "stay", reason="no_recorded_rollback")
        if rule.state == "halted" and installed == rule.version and targets(rule, device):
            return Decision(rule.version, "install")
    return None


def offers(name: str, channel: str, rules: Iterable[Rule], pins: Mapping[str, int], device: Device,
           version: int) -> bool:
    """Whether ``version`` is one the device may hold now: what :func:`decide` answers, a pin, or any
    active or halted release of that version that covers the device (a halted one keeps its devices).
    The data-key route gives keys only for these."""
    if pins.get(device.device_id) == version:
        return True
    decision = decide(name, channel, list(rules), pins, device)
    if decision is not None and decision.action != "stay" and decision.version == version:
        return True
    return any(r.version == version and r.state in ("active", "halted") and covers(r, name, channel, device)
               for r in rules)


def offered(name: str, channel: str, rules: Iterable[Rule], pins: Mapping[str, int], device: Device,
            version: int) -> bool:
    """Whether the release of ``version`` was offered to the device at all: a pin of it, or a release
    of it (active, halted or rolled back: the state does not matter, only whom its rules cover) whose
    targeting and percentage cover the device. Health reports count only from these devices."""
    if pins.get(device.device_id) == version:
        return True
    return any(r.version == version and covers(r, name, channel, device) for r in rules)


@dataclass(frozen=True)
class Health:
    """A release's health figures over distinct devices: each device counts once, by its latest report."""

    devices: int = 0
    failed_devices: int = 0  # devices whose latest report saw a load failure or an inference error
    load_failures: int = 0
    inference_errors: int = 0
    inferences: int = 0

    @property
    def failure_rate(self) -> float:
        """The share of devices whose latest report saw a load failure or an inference error."""
        return self.failed_devices / self.devices if self.devices else 0.0


def gate_trips(max_failure_rate: float | None, min_devices: int, health: Health) -> bool:
    """The health gate: enough distinct devices reported, and a larger share of them failing than the
    release allows. A count alone never trips it: the rate is over devices, not reports."""
    return (max_failure_rate is not None and health.devices >= max(1, min_devices)
            and health.failure_rate > max_failure_rate)
