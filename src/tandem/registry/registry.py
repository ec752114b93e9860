"""The model registry: versions of every pushed bundle, aliases that point at them, and API keys.

Metadata lives in the database (db.py, schema.py), file contents in the artifact store (store.py).
Every method opens its own short transaction and returns plain records (records.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tandem.bundle import MANIFEST, NAME_RE, Bundle, check_paths, parse_tail_name, sha256_file
from tandem.errors import (
    BundleError,
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    RegistryError,
    StorageFull,
    is_storage_full,
)
from tandem.registry import migrate
from tandem.registry.db import Database
from tandem.registry.records import (
    ALIAS_RE,
    EVERY_MODEL,
    SCOPES,
    AliasInfo,
    KeyInfo,
    ModelInfo,
    ModelScope,
    Resolved,
    Scope,
    VersionInfo,
)
from tandem.registry.schema import Alias, AliasMove, ApiKey, Model, RegistryState, Version, utcnow
from tandem.registry.store import UMASK, ArtifactStore, LocalStore
from tandem.security import apikeys
from tandem.settings import Settings, get_settings

DEFAULT_ALIAS = "production"
# Not an alias anyone can set: it always means the newest version.
LATEST = "latest"
_MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer; larger numbers cannot exist
PUSH_ATTEMPTS = 5
# Compared against when a key id is unknown, so that path costs the same as a wrong secret.
_NO_SUCH_HASH = "0" * 64


def check_alias_name(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias.isdigit():
        raise InvalidRequest(
            f"alias {alias!r} is not a valid alias name: use 1-64 lowercase letters, digits, '-' or '_', "
            "not only digits (those are version numbers), e.g. production or beta"
        )
    if alias == LATEST:
        raise InvalidRequest(f"'{LATEST}' always means the newest version and cannot be set as an alias; choose another name")
    return alias


MAX_SCOPE_NAMES = 100


def check_model_scope(scope: ModelScope) -> ModelScope:
    """The scope with its names checked (model and app names as manifests spell them), each once, sorted."""
    for kind, names in (("model", scope.models), ("app", scope.apps)):
        bad = [n for n in names if not isinstance(n, str) or not NAME_RE.fullmatch(n)]
        if bad:
            raise InvalidRequest(f"{kind} name {bad[0]!r:.80} is not one: names are 1-64 letters, digits, '.', '_' "
                                 "or '-'")
        if len(set(names)) > MAX_SCOPE_NAMES:
            raise InvalidRequest(f"a key may name at most {MAX_SCOPE_NAMES} {kind}s")
    return ModelScope(tuple(sorted(set(scope.models))), tuple(sorted(set(scope.apps))))


def stored_scope(models: list[str] | None, apps: list[str] | None) -> ModelScope:
    return ModelScope(tuple(models or ()), tuple(apps or ()))


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones in the session's zone.
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _listing(items: list[str], none: str = "none") -> str:
    return ", ".join(items) if items else none


class Registry:
    def __init__(self, db: Database, store: ArtifactStore, home: Path) -> None:
        self.db = db
        self.store = store
        self.home = Path(home)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Registry:
        """The registry under ``settings.home`` (TANDEM_HOME), its database at ``settings.registry_url``,
        upgraded to the newest schema."""
        settings = settings or get_settings()
        home = settings.home
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"TANDEM_HOME={home} cannot be created ({e}); point TANDEM_HOME at a writable folder") from e
        db = Database(settings.registry_url)
        try:
            migrate.upgrade(db)
        except BaseException:
            db.close()
            raise
        return cls(db, LocalStore(home / "objects"), home)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- versions -----------------------------------------------------------------------------

    def push(self, bundle_dir: Path) -> VersionInfo:
        """Store a verified bundle as the next version of its model (the manifest's name)."""
        bundle = Bundle.load(bundle_dir)
        m = bundle.manifest
        check_paths(m)  # every listed name a plain relative path, no two the same file: before anything is stored
        tail = parse_tail_name(m.name)
        if tail is not None:  # the server would serve split k of model X there instead
            raise InvalidRequest(f"model name {m.name!r} is reserved: the server serves the tail of "
                                 f"{tail[0]}'s split at k={tail[1]} under it; rename the bundle")
        if isinstance(self.store, LocalStore):
            self.store.sweep()  # what earlier pushes killed mid-write left
        files = {rel: self.store.put_file(bundle.path(rel), expected_sha256=entry.sha256)
                 for rel, entry in sorted(m.files.items())}
        # Up to here only content-addressed objects were written. If the push stops now or inside the
        # transaction below (crash, kill, database down), no version becomes visible: at most objects
        # stay in the store that no version refers to, harmless and shared by a later push of the same
        # files. The version number is only taken inside the transaction that records it.
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            try:
                with self.db.write(retryable=True) as s:
                    self._lock(s)
                    model = s.scalar(select(Model).where(Model.name == m.name))
                    if model is None:
                        model = Model(name=m.name, created=utcnow())
                        s.add(model)
                        s.flush()
                    latest = s.scalar(select(func.max(Version.number)).where(Version.model_id == model.id))
                    number = (latest or 0) + 1
                    stored = m.model_copy(update={"version": number})
                    manifest_sha = self.store.put_bytes((stored.model_dump_json(indent=2) + "\n").encode("utf-8"))
                    row = Version(model_id=model.id, number=number, manifest_sha256=manifest_sha,
                                  size=bundle.total_bytes, created=utcnow(), files=files)
                    s.add(row)
                    s.flush()
                    self._bump(s)
                    return self._version_info(m.name, row, ())
            except IntegrityError as e:
                # Row locking already serialises pushes; the unique (model, number) pair catches any
                # path that slips past it, and the push simply takes the next number.
                if attempt == PUSH_ATTEMPTS:
                    raise RegistryError(
                        f"could not record a new version of {m.name} after {PUSH_ATTEMPTS} attempts "
                        f"({e.orig}); try again"
                    ) from e
        raise AssertionError("unreachable")

    def models(self) -> list[ModelInfo]:
        with self.db.read() as s:
            stats = {mid: (n, latest) for mid, n, latest in s.execute(
                select(Version.model_id, func.count(), func.max(Version.number)).group_by(Version.model_id))}
            aliases: dict[int, dict[str, int]] = {}
            for a in s.scalars(select(Alias).order_by(Alias.alias)):
                aliases.setdefault(a.model_id, {})[a.alias] = a.version
            return [
                ModelInfo(name=mo.name, versions=stats.get(mo.id, (0, None))[0], latest=stats.get(mo.id, (0, None))[1],
                          aliases=aliases.get(mo.id, {}))
                for mo in s.scalars(select(Model).order_by(Model.name))
            ]

    def versions(self, name: str) -> list[VersionInfo]:
        with self.db.read() as s:
            model = self._model(s, name)
            by_version = self._aliases_by_version(s, model.id)
            rows = s.scalars(select(Version).where(Version.model_id == model.id).order_by(Version.number))
            return [self._version_info(name, r, by_version.get(r.number, ())) for r in rows]

    def get(self, name: str, version: int) -> VersionInfo:
        with self.db.read() as s:
            model = self._model(s, name)
            row = self._version(s, model, version)
            return self._version_info(name, row, self._aliases_by_version(s, model.id).get(row.number, ()))

    # --- aliases ------------------------------------------------------------------------------

    def aliases(self, name: str) -> list[AliasInfo]:
        with self.db.read() as s:
            model = self._model(s, name)
            return [self._alias_info(name, a) for a in
                    s.scalars(select(Alias).where(Alias.model_id == model.id).order_by(Alias.alias))]

    def set_alias(self, name: str, alias: str, version: int) -> AliasInfo:
        """Point ``alias`` at ``version``; the version it pointed at before is what rollback returns to."""
        check_alias_name(alias)
        with self.db.write() as s:
            self._lock(s)
            model = self._model(s, name)
            self._version(s, model, version)
            row = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == alias))
            if row is not None and row.version == version:
                return self._alias_info(name, row)  # nothing moves, so no new history and no new generation
            now = utcnow()
            if row is None:
                row = Alias(model_id=model.id, alias=alias, version=version, previous=None, updated=now)
                s.add(row)
            else:
                row.previous, row.version, row.updated = row.version, version, now
            s.add(AliasMove(model_id=model.id, alias=alias, version=version, moved=now))
            s.flush()
            self._bump(s)
            return self._alias_info(name, row)

    def rollback(self, name: str, alias: str) -> AliasInfo:
        """Point ``alias`` back at the version it pointed at before its last move."""
        with self.db.write() as s:
            self._lock(s)
            model = self._model(s, name)
            row = self._alias(s, model, alias)
            history = s.scalars(
                select(AliasMove).where(AliasMove.model_id == model.id, AliasMove.alias == alias)
                .order_by(AliasMove.id.desc()).limit(3)
            ).all()
            if len(history) < 2:
                raise Conflict(
                    f"{name}:{alias} has only ever pointed at version {row.version}, so there is nothing to roll "
                    f"back to; point it at another version with `tandem alias {name} {alias} VERSION`"
                )
            s.delete(history[0])
            row.version = history[1].version
            row.previous = history[2].version if len(history) > 2 else None
            row.updated = utcnow()
            s.flush()
            self._bump(s)
            return self._alias_info(name, row)

    # --- resolving and loading ----------------------------------------------------------------

    def resolve(self, name: str, ref: str | int | None = None) -> Resolved:
        """A version number (int or digits), an alias, or None (alias production if set, else the latest)."""
        with self.db.read() as s:
            model = self._model(s, name)
            if ref is None:
                alias = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == DEFAULT_ALIAS))
                number = alias.version if alias is not None else self._latest(s, model)
            elif isinstance(ref, int) and not isinstance(ref, bool):
                number = ref
            elif isinstance(ref, str) and ref.strip().isascii() and ref.strip().isdigit():
                number = int(ref.strip())
            elif isinstance(ref, str) and ref == LATEST:
                number = self._latest(s, model)
            elif isinstance(ref, str):
                number = self._alias(s, model, ref).version
            else:
                raise InvalidRequest(f"a model reference is a version number or an alias name, not {ref!r}")
            info = self._version_info(name, self._version(s, model, number), ())
        return Resolved(name=name, version=info.version, manifest_sha256=info.manifest_sha256,
                        bundle_dir=self._materialise(info))

    def bundle_dir(self, name: str, version: int) -> Path:
        """A verified bundle folder of this version, built from the store on first use."""
        return self._materialise(self.get(name, version))

    def generation(self) -> int:
        """A number that grows with every push, alias move, rollback and OTA release change (cheap to poll)."""
        with self.db.read() as s:
            gen = s.scalar(select(RegistryState.generation).where(RegistryState.id == 1))
        if gen is None:
            raise RegistryError("the registry database has no registry_state row; it was changed by hand")
        return int(gen)

    # --- API keys -----------------------------------------------------------------------------

    def create_key(self, scope: Scope, label: str = "", model_scope: ModelScope = EVERY_MODEL) -> tuple[str, KeyInfo]:
        """A new key: the token (shown to the user once, never stored) and its record. ``model_scope``
        (device keys only): the models it, and the devices registered with it, may see over the air."""
        if scope not in SCOPES:
            raise InvalidRequest(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        label = (label or "").strip()
        if len(label) > 200:
            raise InvalidRequest(f"the label is {len(label)} characters long; keep it to 200")
        model_scope = check_model_scope(model_scope)
        if not model_scope.everything and scope != "device":
            raise InvalidRequest(f"--model and --app limit what a device key (and its devices) may download; a "
                                 f"{scope} key has no model scope (docs/ota.md)")
        token, parsed = apikeys.new_token()
        row = ApiKey(key_id=parsed.key_id, secret_hash=apikeys.hash_secret(parsed.secret), scope=scope,
                     label=label, created=utcnow(), revoked=None, models=list(model_scope.models) or None,
                     apps=list(model_scope.apps) or None)
        with self.db.write() as s:
            s.add(row)
        return token, self._key_info(row)

    def list_keys(self) -> list[KeyInfo]:
        with self.db.read() as s:
            return [self._key_info(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.created, ApiKey.key_id))]

    def revoke_key(self, key_id: str) -> KeyInfo:
        with self.db.write() as s:
            row = s.get(ApiKey, key_id) if isinstance(key_id, str) else None
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}; `tandem keys list` shows the key ids")
            if row.revoked is None:
                row.revoked = utcnow()
            return self._key_info(row)

    def verify_key(self, token: str) -> KeyInfo | None:
        """The key's record if ``token`` is a known, unrevoked key; None otherwise (never raises for a
        bad token, and never logs it)."""
        parsed = apikeys.parse(token)
        if parsed is None:
            return None
        with self.db.read() as s:
            row = s.get(ApiKey, parsed.key_id)
            stored = row.secret_hash if row is not None else _NO_SUCH_HASH
            matches = apikeys.secret_matches(parsed.secret, stored)
            if row is None or not matches or row.revoked is not None:
                return None
            return self._key_info(row)

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _lock(s: Session) -> None:
        # Every registry writer locks the one state row first. On PostgreSQL (READ COMMITTED) that
        # serialises pushes and alias moves, and each later statement sees what the previous writer
        # committed; SQLite's BEGIN IMMEDIATE already holds the database's write lock.
        found = s.execute(select(RegistryState.id).where(RegistryState.id == 1).with_for_update()).first()
        if found is None:
            raise RegistryError("the registry database has no registry_state row; it was changed by hand")

    @staticmethod
    def _bump(s: Session) -> None:
        s.execute(update(RegistryState).where(RegistryState.id == 1).values(generation=RegistryState.generation + 1))

    @staticmethod
    def _model(s: Session, name: str) -> Model:
        # Names that no manifest can have are never looked up (a NUL byte would be a database error).
        model = s.scalar(select(Model).where(Model.name == name)) if isinstance(name, str) and NAME_RE.fullmatch(name) else None
        if model is None:
            names = list(s.scalars(select(Model.name).order_by(Model.name)))
            raise NotFound(f"no model named {name!r} in the registry (models: {_listing(names)}); "
                           "add one with `tandem push BUNDLE`")
        return model

    @staticmethod
    def _version(s: Session, model: Model, number: int) -> Version:
        row = None
        if isinstance(number, int) and 1 <= number <= _MAX_VERSION:
            row = s.scalar(select(Version).where(Version.model_id == model.id, Version.number == number))
        if row is None:
            have = [str(n) for n in s.scalars(
                select(Version.number).where(Version.model_id == model.id).order_by(Version.number))]
            raise NotFound(f"model {model.name} has no version {number} (versions: {_listing(have)})")
        return row

    @staticmethod
    def _latest(s: Session, model: Model) -> int:
        latest = s.scalar(select(func.max(Version.number)).where(Version.model_id == model.id))
        if latest is None:
            raise NotFound(f"model {model.name} has no versions yet; push one with `tandem push BUNDLE`")
        return latest

    @staticmethod
    def _alias(s: Session, model: Model, alias: str) -> Alias:
        row = None
        if isinstance(alias, str) and ALIAS_RE.fullmatch(alias):
            row = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == alias))
        if row is None:
            have = [f"{a.alias} -> {a.version}" for a in
                    s.scalars(select(Alias).where(Alias.model_id == model.id).order_by(Alias.alias))]
            raise NotFound(f"model {model.name} has no alias {alias!r} (aliases: {_listing(have)}; "
                           "or use a version number, or 'latest')")
        return row

    @staticmethod
    def _aliases_by_version(s: Session, model_id: int) -> dict[int, tuple[str, ...]]:
        out: dict[int, tuple[str, ...]] = {}
        for a in s.scalars(select(Alias).where(Alias.model_id == model_id).order_by(Alias.alias)):
            out[a.version] = (*out.get(a.version, ()), a.alias)
        return out

    @staticmethod
    def _version_info(name: str, row: Version, aliases: tuple[str, ...]) -> VersionInfo:
        return VersionInfo(name=name, version=row.number, manifest_sha256=row.manifest_sha256, size=row.size,
                           created=_aware(row.created), aliases=aliases, files=dict(row.files))

    @staticmethod
    def _alias_info(name: str, row: Alias) -> AliasInfo:
        return AliasInfo(name=name, alias=row.alias, version=row.version, previous=row.previous,
                         updated=_aware(row.updated))

    @staticmethod
    def _key_info(row: ApiKey) -> KeyInfo:
        return KeyInfo(key_id=row.key_id, scope=row.scope, label=row.label, created=_aware(row.created),
                       revoked=_aware(row.revoked), model_scope=stored_scope(row.models, row.apps))

    def _materialise(self, info: VersionInfo) -> Path:
        target = self.home / "bundles" / info.name / str(info.version)
        if _intact(target, info):
            return target
        try:
            return self._build(info, target)
        except OSError as e:
            if not is_storage_full(e):
                raise
            # A clear 503 on the server (and exit code on the CLI) rather than an internal error.
            raise StorageFull(f"no space left under {target.parent} to build {info.name} v{info.version} "
                              f"({e.strerror}); free space there and try again") from e

    def _build(self, info: VersionInfo, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{info.version}.", suffix=".staging"))
        try:
            for rel, sha in {**info.files, MANIFEST: info.manifest_sha256}.items():
                parts = PurePosixPath(rel).parts
                if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
                    raise RegistryError(f"{info.name} v{info.version} lists a file outside its bundle: {rel!r}")
                dst = stage.joinpath(*parts)
                dst.parent.mkdir(parents=True, exist_ok=True)
                src = self.store.path(sha)
                try:
                    # Store objects are read-only and never modified, so sharing their inode is safe.
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            try:
                Bundle.load(stage)
            except BundleError as e:
                raise RegistryError(f"the stored files of {info.name} v{info.version} fail verification ({e}); "
                                    "the artifact store was damaged: push the bundle again") from e
            os.chmod(stage, 0o777 & ~UMASK)  # mkdtemp makes it private; other users' servers read it
            try:
                os.rename(stage, target)  # refuses to replace a non-empty folder: nothing is swapped under a reader
            except OSError:
                if _intact(target, info):
                    return target  # another process built it first
                broken = target.with_name(f".{target.name}.broken-{secrets.token_hex(4)}")
                os.rename(target, broken)
                os.rename(stage, target)
                shutil.rmtree(broken, ignore_errors=True)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return target


def _intact(folder: Path, info: VersionInfo) -> bool:
    """A cheap check of an already built folder: the manifest is the stored one and every file has
    its size. The contents were verified when the folder was built from the store, and the files are
    read-only hard links of store objects."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        if sha256_file(manifest) != info.manifest_sha256:
            return False
        bundle = Bundle.load(folder, verify=False)
        if set(bundle.manifest.files) != set(info.files):
            return False
        return all(bundle.path(rel).stat().st_size == e.size for rel, e in bundle.manifest.files.items())
    except (OSError, BundleError):
        return False
