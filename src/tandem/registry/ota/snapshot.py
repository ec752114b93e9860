"""What a server worker answers the OTA routes from: the releases, pins, objects and keys of one
registry generation, read in one transaction (server/ota/state.py indexes it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from tandem.registry.db import Database
from tandem.registry.ota.keys import OtaKeys, data_key_label, signing_key_info, unwrap
from tandem.registry.ota.objects import object_info
from tandem.registry.ota.records import OtaObjectInfo, PinInfo, ReleaseInfo, SigningKeyInfo
from tandem.registry.ota.releases import pin_info, release_info
from tandem.registry.schema import (
    DataKey,
    Model,
    OtaObject,
    RegistryState,
    Release,
    ReleasePin,
    SigningKeyRow,
    Version,
)
from tandem.security.endorsement import MAX_ENDORSEMENTS
from tandem.security.signing import SigningKey


@dataclass(frozen=True)
class StoredVersion:
    version: int
    manifest_sha256: str
    files: dict[str, str]  # bundle-relative path -> plaintext sha256


@dataclass(frozen=True)
class OtaSnapshot:
    """Everything `POST /v1/ota/check` and the download routes need, read in one transaction."""

    generation: int
    models: frozenset[str]
    versions: dict[str, dict[int, StoredVersion]] = field(default_factory=dict)  # models with releases or pins
    releases: list[ReleaseInfo] = field(default_factory=list)
    pins: list[PinInfo] = field(default_factory=list)
    objects: list[OtaObjectInfo] = field(default_factory=list)
    signing_keys: list[SigningKeyInfo] = field(default_factory=list)
    signer: SigningKey | None = None  # the current key's private part
    # What answers carry so that devices follow a rotation: the endorsements of every key that signs, signed or
    # is next (the newest MAX_ENDORSEMENTS, oldest first). Retired keys' too, so that a device trusting only an
    # old key follows the chain to the current one (and then drops the retired ones); never that of a next key
    # retired before it signed (a rotation called off, perhaps because the key leaked).
    endorsements: list[dict[str, str]] = field(default_factory=list)
    data_keys: dict[tuple[str, int], tuple[str, bytes]] = field(default_factory=dict)  # -> (key id, key)


def read_snapshot(db: Database, keys: OtaKeys) -> OtaSnapshot:
    with db.read() as s:
        generation = int(s.scalar(select(RegistryState.generation).where(RegistryState.id == 1)) or 0)
        names: dict[int, str] = {i: n for i, n in s.execute(select(Model.id, Model.name))}
        releases = [release_info(names[r.model_id], r, None) for r in s.scalars(select(Release))]
        pins = [pin_info(names[p.model_id], p) for p in s.scalars(select(ReleasePin))]
        served = {names[r.model_id] for r in s.scalars(select(Release))} | {p.name for p in pins}
        served_ids = [i for i, n in names.items() if n in served]
        versions: dict[str, dict[int, StoredVersion]] = {}
        for v in s.scalars(select(Version).where(Version.model_id.in_(served_ids))):
            versions.setdefault(names[v.model_id], {})[v.number] = StoredVersion(v.number, v.manifest_sha256,
                                                                                 dict(v.files))
        objects = [object_info(names[o.model_id], o) for o in
                   s.scalars(select(OtaObject).where(OtaObject.model_id.in_(served_ids)))]
        key_rows = s.scalars(select(SigningKeyRow).order_by(SigningKeyRow.created, SigningKeyRow.key_id)).all()
        wrapped = [(names[d.model_id], d.version, d.key_id, d.wrapped) for d in
                   s.scalars(select(DataKey).where(DataKey.model_id.in_(served_ids)))]
    current = next((r for r in key_rows if r.current), None)
    return OtaSnapshot(
        generation=generation, models=frozenset(names.values()), versions=versions, releases=releases, pins=pins,
        objects=objects, signing_keys=[signing_key_info(r) for r in key_rows],
        signer=keys.signer(current) if current is not None else None,
        endorsements=[dict(r.endorsement) for r in key_rows if isinstance(r.endorsement, dict)
                      and not (r.retired is not None and r.activated is None)][-MAX_ENDORSEMENTS:],
        data_keys={(n, v): (kid, unwrap(keys.master, w, data_key_label(n, v))) for n, v, kid, w in wrapped},
    )
