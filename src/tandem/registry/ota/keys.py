"""OTA secrets: the master key, the Ed25519 manifest-signing keys and the per-version data keys.

Signing-key seeds and data keys are stored in the registry only wrapped (AES-256-GCM) with the
master key: TANDEM_OTA_MASTER_KEY, or the file ``ota-master.key`` under TANDEM_HOME, created on
first use. A copy of the database alone therefore signs nothing and decrypts nothing.

Signing keys rotate with an overlap (docs/ota.md, "Signing keys"): ``rotate_signing_key`` makes a
*next* key, endorsed by the current one, that answers announce to devices while the current key
still signs; at its activation time (checked lazily, by whichever server or command looks first:
``activate_due``) it becomes *current* and the old one *previous*, in one transaction under the
registry's write lock, with the generation moved so that every server loads the new signer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tandem.errors import ConfigError, Conflict, DecryptionError, NotFound
from tandem.registry import tx
from tandem.registry.ota.records import SigningKeyInfo
from tandem.registry.schema import DataKey, SigningKeyRow, utcnow
from tandem.security import encryption
from tandem.security.endorsement import endorse
from tandem.security.signing import SigningKey

if TYPE_CHECKING:
    from tandem.registry.registry import Registry

MASTER_KEY_FILE = "ota-master.key"
NEXT, CURRENT, PREVIOUS, RETIRED = "next", "current", "previous", "retired"


def _decode_master(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(f"{source} is not valid base64 ({e}); it must hold 32 random bytes in base64, e.g. "
                          "the output of `python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\"`") from e
    if len(key) != encryption.KEY_BYTES:
        raise ConfigError(f"{source} holds {len(key)} bytes; the OTA master key has {encryption.KEY_BYTES} (base64 of "
                          "32 random bytes)")
    return key


def master_key(home: Path, configured: SecretStr | None) -> bytes:
    """``configured`` (TANDEM_OTA_MASTER_KEY) if set, else the key file under ``home``, created on first use."""
    if configured is not None:
        return _decode_master(configured.get_secret_value(), "TANDEM_OTA_MASTER_KEY")
    path = Path(home) / MASTER_KEY_FILE
    try:
        return _decode_master(path.read_text("ascii"), str(path))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the OTA master key file {path} ({e}); fix its permissions or set "
                          "TANDEM_OTA_MASTER_KEY") from e
    return _create_key_file(path)


def _create_key_file(path: Path) -> bytes:
    """Write a new key to ``path`` unless another process got there first; either way return the key
    the file holds. The file is written whole under a temporary name (mkstemp: mode 0600) and then
    hard-linked into place, which fails if ``path`` exists: two processes never end up with two keys."""
    key = encryption.new_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"cannot create the OTA master key file {path} ({e}); make TANDEM_HOME writable or set "
                          "TANDEM_OTA_MASTER_KEY") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _decode_master(path.read_text("ascii"), str(path))
        with contextlib.suppress(OSError):  # durability of the new name; not possible everywhere
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return key


def wrap(master: bytes, secret: bytes, label: str) -> bytes:
    # The label is the associated data: a wrapped key copied onto another row does not unwrap.
    return encryption.encrypt(master, secret, label.encode())


def unwrap(master: bytes, blob: bytes, label: str) -> bytes:
    try:
        return encryption.decrypt(master, bytes(blob), label.encode())
    except DecryptionError as e:
        raise ConfigError(
            f"cannot unwrap {label} with this OTA master key: it was wrapped with another one. Every server and "
            "CLI of a registry must use the same master key (TANDEM_OTA_MASTER_KEY, or the ota-master.key file "
            "under the TANDEM_HOME that created it)"
        ) from e


def signing_label(key_id: str) -> str:
    return f"tandem signing key {key_id}"


def data_key_label(name: str, version: int) -> str:
    return f"tandem data key {name} v{version}"


def key_state(row: SigningKeyRow) -> str:
    if row.retired is not None:
        return RETIRED
    if row.current:
        return CURRENT
    return NEXT if row.activated is None else PREVIOUS


def signing_key_info(row: SigningKeyRow) -> SigningKeyInfo:
    created = tx.aware(row.created)
    assert created is not None
    endorsement = row.endorsement if isinstance(row.endorsement, dict) else None
    return SigningKeyInfo(row.key_id, row.public_key, created, tx.aware(row.retired), bool(row.current),
                          key_state(row), tx.aware(row.activates), tx.aware(row.activated),
                          endorsement.get("key_id") if endorsement else None)


def _stamp(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _due(s: Session, now: datetime) -> SigningKeyRow | None:
    """The next key whose activation time has come, if any."""
    row = s.scalar(select(SigningKeyRow).where(SigningKeyRow.current.is_(False), SigningKeyRow.retired.is_(None),
                                               SigningKeyRow.activated.is_(None)))
    return row if row is not None and row.activates is not None and tx.aware(row.activates) <= now else None


class OtaKeys:
    """Signing keys (create, rotate, retire, list) and data keys of the registry ``reg``."""

    def __init__(self, reg: Registry, configured_master: SecretStr | None = None) -> None:
        self.reg = reg
        self._configured = configured_master
        self._master: bytes | None = None

    @property
    def master(self) -> bytes:
        if self._master is None:  # read (or created) only when a secret is wrapped or unwrapped
            self._master = master_key(self.reg.home, self._configured)
        return self._master

    # --- signing keys -------------------------------------------------------------------------

    def signing_keys(self) -> list[SigningKeyInfo]:
        with self.reg.db.read() as s:
            return [signing_key_info(r) for r in
                    s.scalars(select(SigningKeyRow).order_by(SigningKeyRow.created, SigningKeyRow.key_id))]

    def create_signing_key(self) -> SigningKeyInfo:
        """The first signing key. Refused while a current key exists: replacing it is a rotation."""
        with self.reg.db.write() as s:
            tx.lock(s)
            current = s.scalar(select(SigningKeyRow).where(SigningKeyRow.current.is_(True)))
            if current is not None:
                raise Conflict(f"signing key {current.key_id} is already current; replace it with "
                               "`tandem keys signing rotate` (devices keep trusting it until you retire it)")
            return self._add(s)

    def rotate_signing_key(self, *, overlap: timedelta) -> SigningKeyInfo:
        """A new key, endorsed by the current one. With an ``overlap``, it is *next*: published (answers
        carry its endorsement, devices learn it) but not signing until ``overlap`` from now; with none, it
        signs at once, or, if a next key is waiting, that one signs at once. The old key stays listed (and
        trusted by devices) until it is retired. A next key already waiting and an overlap: Conflict."""
        now = utcnow()
        with self.reg.db.write() as s:
            tx.lock(s)
            self._activate_due(s, now)
            current = s.scalar(select(SigningKeyRow).where(SigningKeyRow.current.is_(True)))
            waiting = s.scalar(select(SigningKeyRow).where(SigningKeyRow.current.is_(False),
                                                           SigningKeyRow.retired.is_(None),
                                                           SigningKeyRow.activated.is_(None)))
            if waiting is not None:
                if overlap > timedelta(0):
                    when = tx.aware(waiting.activates)
                    raise Conflict(
                        f"signing key {waiting.key_id} is already next: it starts signing at "
                        f"{_stamp(when) if when else 'the next rotation'}; start it now with `tandem keys signing "
                        f"rotate --now`, or cancel it with `tandem keys signing retire {waiting.key_id}`")
                self._promote(s, waiting, now)
                return signing_key_info(waiting)
            if current is None:
                return self._add(s, now)
            endorser = self.signer(current)
            if overlap <= timedelta(0):
                current.current = False
                s.flush()  # one current key at a time, also within the transaction
                return self._add(s, now, endorser=endorser)
            return self._add(s, now, endorser=endorser, activates=now + overlap)

    def activate_due(self, now: datetime | None = None) -> SigningKeyInfo | None:
        """Make the next key current if its activation time has come (by this machine's clock); the key
        made current, or None. Cheap when nothing is due (one read); several servers may call it at once:
        the first one promotes, the others find nothing due."""
        now = now or utcnow()
        with self.reg.db.read() as s:
            if _due(s, now) is None:
                return None
        with self.reg.db.write() as s:
            tx.lock(s)
            return self._activate_due(s, now)

    def _activate_due(self, s: Session, now: datetime) -> SigningKeyInfo | None:
        row = _due(s, now)
        if row is None:
            return None
        self._promote(s, row, now)
        return signing_key_info(row)

    @staticmethod
    def _promote(s: Session, row: SigningKeyRow, now: datetime) -> None:
        s.execute(update(SigningKeyRow).where(SigningKeyRow.current.is_(True)).values(current=False))
        s.flush()
        row.current = True
        row.activated = now
        s.flush()
        tx.bump(s)  # every server loads the new signer on its next poll

    def retire_signing_key(self, key_id: str) -> SigningKeyInfo:
        with self.reg.db.write() as s:
            tx.lock(s)
            row = s.get(SigningKeyRow, key_id) if isinstance(key_id, str) else None
            if row is None:
                raise NotFound(f"no signing key with id {key_id!r}; `tandem keys signing list` shows them")
            if row.current:
                raise Conflict(f"signing key {key_id} is the current one; rotate to a new key first "
                               "(`tandem keys signing rotate`), then retire this one")
            if row.retired is None:
                row.retired = utcnow()
                tx.bump(s)
            return signing_key_info(row)

    def ensure_signing_key(self) -> SigningKeyInfo | None:
        """Create the first signing key if there is no current one; the new key, or None."""
        with self.reg.db.read() as s:
            if s.scalar(select(SigningKeyRow.key_id).where(SigningKeyRow.current.is_(True))) is not None:
                return None
        try:
            return self.create_signing_key()
        except Conflict:
            return None  # another process created it meanwhile

    def _add(self, s: Session, now: datetime | None = None, endorser: SigningKey | None = None,
             activates: datetime | None = None) -> SigningKeyInfo:
        """A new key: current at once, or (``activates``) next until then; ``endorser`` vouches for it."""
        now = now or utcnow()
        key = SigningKey.generate()
        public = key.public
        row = SigningKeyRow(key_id=public.key_id, public_key=public.to_b64(),
                            wrapped_seed=wrap(self.master, key.seed, signing_label(public.key_id)),
                            created=now, retired=None, current=activates is None, activates=activates,
                            activated=now if activates is None else None,
                            endorsement=endorse(endorser, public, now, activates or now) if endorser else None)
        s.add(row)
        s.flush()
        tx.bump(s)  # servers pick up the new signer (and the listed keys) on their next poll
        return signing_key_info(row)

    def signer(self, row: SigningKeyRow) -> SigningKey:
        return SigningKey(unwrap(self.master, row.wrapped_seed, signing_label(row.key_id)))

    # --- data keys ----------------------------------------------------------------------------

    def data_key(self, name: str, version: int) -> tuple[str, bytes]:
        """(key id, key) of the version's data key, created on first use."""
        for _ in range(2):
            with self.reg.db.read() as s:
                model = tx.model(s, name)
                tx.version(s, model, version)
                row = s.scalar(select(DataKey).where(DataKey.model_id == model.id, DataKey.version == version))
                if row is not None:
                    return row.key_id, unwrap(self.master, row.wrapped, data_key_label(name, version))
                model_id = model.id
            key, key_id = encryption.new_key(), secrets.token_hex(8)
            try:
                with self.reg.db.write(retryable=True) as s:
                    s.add(DataKey(model_id=model_id, version=version, key_id=key_id,
                                  wrapped=wrap(self.master, key, data_key_label(name, version)), created=utcnow()))
                return key_id, key
            except IntegrityError:
                continue  # another process created it first: read theirs
        raise AssertionError("unreachable: the data key row exists after a unique-key conflict")
