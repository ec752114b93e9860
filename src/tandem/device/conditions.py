"""When a device may download: the app states conditions, a DeviceState callable reports the device.

Python cannot ask a phone whether it is charging or on Wi-Fi; the app can. So the updater takes a
``DeviceState``: any callable returning the device's current ``DeviceConditions`` (on Android,
read from ConnectivityManager/BatteryManager through the app's bridge). Without one, the device
is taken to be on an unmetered network, charging and idle — a desktop or a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DownloadConditions:
    """What must hold before the updater downloads (like Firebase's CustomModelDownloadConditions)."""

    unmetered_only: bool = False
    charging_only: bool = False
    idle_only: bool = False


@dataclass(frozen=True)
class DeviceConditions:
    """The device as it is now."""

    unmetered: bool = True
    charging: bool = True
    idle: bool = True


DeviceState = Callable[[], DeviceConditions]


def always() -> DeviceConditions:
    return DeviceConditions()


def unmet(wanted: DownloadConditions, now: DeviceConditions) -> list[str]:
    """What keeps a download from starting now (empty: go ahead)."""
    missing = []
    if wanted.unmetered_only and not now.unmetered:
        missing.append("an unmetered network")
    if wanted.charging_only and not now.charging:
        missing.append("charging")
    if wanted.idle_only and not now.idle:
        missing.append("an idle device")
    return missing
