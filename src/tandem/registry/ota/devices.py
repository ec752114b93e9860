"""Registered devices (docs/ota.md): each install of an app enrols once with the fleet's shared
device key and gets a server-assigned id and a credential of its own (``tdd_<device_id>_<secret>``,
only the secret's SHA-256 stored, as for API keys). From then on the device speaks only as that id,
and an operator can revoke it alone."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tandem.errors import NotFound
from tandem.registry import tx
from tandem.registry.keys import NO_SUCH_HASH, stored_scope
from tandem.registry.ota.records import DeviceInfo
from tandem.registry.records import EVERY_MODEL, KeyInfo, ModelScope
from tandem.registry.registry import Registry
from tandem.registry.schema import RegisteredDevice, utcnow
from tandem.security import apikeys


class Devices:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    def register(self, enrolled_by: str, model_scope: ModelScope = EVERY_MODEL) -> tuple[str, DeviceInfo]:
        """A new device: its credential (given to the device once, never stored) and its record.
        ``enrolled_by``: the key id of the device-scope key it enrolled with; ``model_scope``: that key's,
        which the device inherits (the models it may see over the air)."""
        token, parsed = apikeys.new_device_token()
        row = RegisteredDevice(device_id=parsed.key_id, secret_hash=apikeys.hash_secret(parsed.secret),
                               enrolled_by=enrolled_by, created=utcnow(), revoked=None,
                               models=list(model_scope.models) or None, apps=list(model_scope.apps) or None)
        with self.reg.db.write() as s:
            s.add(row)
        return token, device_info(row)

    def verify(self, token: str) -> KeyInfo | None:
        """The caller a device credential stands for, if it is a known, unrevoked device; else None
        (never raises for a bad token, never logs it; one constant-time comparison either way)."""
        parsed = apikeys.parse_device(token)
        if parsed is None:
            return None
        with self.reg.db.read() as s:
            row = s.get(RegisteredDevice, parsed.key_id)
            matches = apikeys.secret_matches(parsed.secret, row.secret_hash if row is not None else NO_SUCH_HASH)
            if row is None or not matches or row.revoked is not None:
                return None
            return device_info(row).principal()

    def get(self, device_id: str) -> DeviceInfo:
        with self.reg.db.read() as s:
            return device_info(self._row(s, device_id))

    def registered(self, revoked: bool = True) -> list[DeviceInfo]:
        """Every registered device, oldest first (``revoked=False``: only those that may still call)."""
        with self.reg.db.read() as s:
            q = select(RegisteredDevice).order_by(RegisteredDevice.created, RegisteredDevice.device_id)
            if not revoked:
                q = q.where(RegisteredDevice.revoked.is_(None))
            return [device_info(r) for r in s.scalars(q)]

    def revoke(self, device_id: str) -> DeviceInfo:
        """The device's credential stops working (within TANDEM_KEY_CACHE_S on running servers)."""
        with self.reg.db.write() as s:
            row = self._row(s, device_id)
            if row.revoked is None:
                row.revoked = utcnow()
            return device_info(row)

    @staticmethod
    def _row(s: Session, device_id: str) -> RegisteredDevice:
        row = s.get(RegisteredDevice, device_id) if isinstance(device_id, str) and len(device_id) <= 32 else None
        if row is None:
            raise NotFound(f"no registered device with id {device_id[:40]!r}; `tandem devices list` shows them "
                           "(a device id is the one the server assigned at POST /v1/devices)")
        return row


def device_info(row: RegisteredDevice) -> DeviceInfo:
    created = tx.aware(row.created)
    assert created is not None
    return DeviceInfo(row.device_id, row.enrolled_by, created, tx.aware(row.revoked), stored_scope(row.models, row.apps))
