"""The registry's tables (SQLAlchemy 2 declarative). Changes here need an Alembic migration in
migrations/versions/; ORM objects never leave the registry (records.py holds what callers get)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so that migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The highest version number ever taken, deleted versions included: a push takes the next one, so
    # a number once given (and perhaps still on devices, in logs, in someone's notes) never means two bundles.
    last_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Version(Base):
    __tablename__ = "versions"
    # The unique pair is the last line of defence against two pushes taking one number.
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_versions_model_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    files: Mapped[dict[str, str]] = mapped_column(JSON)  # bundle-relative path -> sha256
    # When it was archived (None: it is not): an archived version stays stored and listed, but is not
    # served by number, aliased, released or pinned until it is unarchived.
    archived: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pushed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)  # who pushed it, as they said


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (
        UniqueConstraint("model_id", "alias", name="uq_aliases_model_alias"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_aliases_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    previous: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AliasMove(Base):
    """Every version an alias was set to, in order: rollback pops the newest."""

    __tablename__ = "alias_history"
    __table_args__ = (
        Index("ix_alias_history_model_alias", "model_id", "alias"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_alias_history_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    moved: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the secret; see security/apikeys.py
    scope: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A device key's model scope (records.ModelScope): the models, and the apps whose models, it serves;
    # both None: every model.
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    apps: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # The key's own token bucket (None: the server's default for its scope, TANDEM_*RATE_LIMIT_*).
    rate_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # None: never


class RegisteredDevice(Base):
    """A device registered with ``POST /v1/devices``: its server-assigned id and credential (docs/ota.md)."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the credential's secret (apikeys.py)
    enrolled_by: Mapped[str] = mapped_column(String(32))  # the key id of the device-scope key it registered with
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The model scope it inherited from that key at registration (None: every model).
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    apps: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class RegistryState(Base):
    """One row (id 1). ``generation`` goes up in the same transaction as every push, alias move,
    rollback and OTA release change (releases, pins, signing keys), so a server can poll one integer to
    learn whether anything it serves may have moved. OTA payloads carry it as their ``sequence``."""

    __tablename__ = "registry_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


# --- over-the-air delivery (docs/ota.md) -------------------------------------------------------


class Release(Base):
    """A version offered to devices on a channel, with its rollout rules and state."""

    __tablename__ = "releases"
    __table_args__ = (
        UniqueConstraint("model_id", "channel", "version", name="uq_releases_model_channel_version"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_releases_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(64))
    percent: Mapped[float] = mapped_column(Float)
    min_app_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    max_app_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    platforms: Mapped[list[str]] = mapped_column(JSON)
    min_os_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    min_ram_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_failure_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    min_devices: Mapped[int] = mapped_column(Integer)  # distinct devices the health gate needs before it judges
    # The variants it offers, by key or format (registry/ota/variants.py); None or []: every variant of the version.
    variants: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # active | halted | rolled_back
    note: Mapped[str] = mapped_column(String(400), default="")  # why the state is what it is
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReleasePin(Base):
    """One device held on one version of a model on a channel, whatever the releases say."""

    __tablename__ = "release_pins"
    __table_args__ = (
        UniqueConstraint("model_id", "channel", "device_id", name="uq_release_pins_model_channel_device"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_release_pins_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReleaseHealth(Base):
    """A release's health figures over distinct devices, kept in step with ``device_health`` (each device
    counted once, by its latest report) so that the gate reads one row, not every device's."""

    __tablename__ = "release_health"
    __table_args__ = (
        UniqueConstraint("model_id", "version", "channel", name="uq_release_health_model_version_channel"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_release_health_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(64))
    reports: Mapped[int] = mapped_column(BigInteger, default=0)  # counted reports, replaced ones included
    devices: Mapped[int] = mapped_column(BigInteger, default=0)  # distinct devices that reported
    failed_devices: Mapped[int] = mapped_column(BigInteger, default=0)  # whose latest report failed
    # Sums over the devices' latest reports:
    load_failures: Mapped[int] = mapped_column(BigInteger, default=0)
    inference_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    inferences: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_devices: Mapped[int] = mapped_column(BigInteger, default=0)  # devices whose latest report had p50/p99
    p50_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    p99_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    p99_ms_max: Mapped[float] = mapped_column(Float, default=0.0)  # the highest p99 any counted report gave
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeviceHealth(Base):
    """One device's latest health report on one release: a later report replaces it."""

    __tablename__ = "device_health"
    __table_args__ = (
        UniqueConstraint("model_id", "version", "channel", "device_id", name="uq_device_health_release_device"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_device_health_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(128))
    reports: Mapped[int] = mapped_column(Integer, default=0)  # this device's counted reports on the release
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    load_failures: Mapped[int] = mapped_column(BigInteger, default=0)
    inference_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    inferences: Mapped[int] = mapped_column(BigInteger, default=0)
    p50_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    p99_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SigningKeyRow(Base):
    """An Ed25519 manifest-signing key; its private seed only wrapped with the OTA master key."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64 of the 32 raw bytes
    wrapped_seed: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    current: Mapped[bool] = mapped_column(Boolean, default=False)
    # Rotation with overlap (docs/ota.md, "Signing keys"): a key made by `rotate` is first "next" (published,
    # not signing) until ``activates``; ``activated`` is when it started signing (None: it never has).
    activates: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    activated: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The key that was current when this one was made vouching for it ({"payload", "signature", "key_id"}:
    # tandem.security.endorsement), so that a device trusting only that key learns this one. None: the first key.
    endorsement: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


class DataKey(Base):
    """The AES-256 key that encrypts one model version's files for devices, wrapped with the master key."""

    __tablename__ = "data_keys"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_data_keys_model_version"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_data_keys_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(32))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OtaObject(Base):
    """A store object made for devices: a version's file encrypted with its data key (kind ``file``), or
    an encrypted delta patch from an older file to it (kind ``delta``). Encryption draws a random nonce,
    so each is made once and recorded; the unique key lets concurrent makers agree on one."""

    __tablename__ = "ota_objects"
    __table_args__ = (
        UniqueConstraint("model_id", "version", "kind", "path", "from_sha256", name="uq_ota_objects_identity"),
        ForeignKeyConstraint(
            ["model_id", "version"], ["versions.model_id", "versions.number"], name="fk_ota_objects_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # file | delta
    path: Mapped[str] = mapped_column(String(512))  # bundle-relative path of the file
    from_sha256: Mapped[str] = mapped_column(String(64))  # delta: the older plaintext file; file: ""
    plain_sha256: Mapped[str] = mapped_column(String(64))  # the version's plaintext file
    sha256: Mapped[str] = mapped_column(String(64))  # the stored (served) object
    size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
