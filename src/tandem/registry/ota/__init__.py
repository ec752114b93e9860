"""The registry's over-the-air side (docs/ota.md). ``Ota(reg)`` holds its parts:

- ``keys`` (keys.py): the master key, manifest-signing keys and per-version data keys
- ``objects`` (objects.py): the encrypted files and delta patches devices download
- ``releases`` (releases.py): which version each channel offers to which devices, pins, health reports
- ``snapshot()`` (snapshot.py): all of it for one generation, as a server keeps it in memory

The rollout decision itself is pure (rollout.py); registered devices and their credentials are in
devices.py. Every writer here goes through the registry's transaction API (registry/tx.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.registry.ota.keys import OtaKeys
from tandem.registry.ota.objects import OtaObjects
from tandem.registry.ota.releases import Releases
from tandem.registry.ota.snapshot import OtaSnapshot, read_snapshot
from tandem.settings import OtaSettings

if TYPE_CHECKING:
    from tandem.registry.registry import Registry


class Ota:
    def __init__(self, reg: Registry, settings: OtaSettings) -> None:
        self.reg = reg
        self.keys = OtaKeys(reg, settings.ota_master_key)
        self.objects = OtaObjects(reg, self.keys)
        self.releases = Releases(reg, self.keys, self.objects, settings.ota_gate_min_devices)

    def snapshot(self) -> OtaSnapshot:
        return read_snapshot(self.reg.db, self.keys)
