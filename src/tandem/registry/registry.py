"""The model registry: versions of every pushed bundle and the aliases that point at them.

Metadata lives in the database (db.py, schema.py), file contents in the artifact store (artifacts.py:
a folder, or an S3 bucket with s3.py);
bundle folders are built from the store (bundles.py). API keys are in keys.py, the over-the-air
side in ota/; ``Registry`` opens the database they share. Every method opens its own short
transaction (tx.py holds what every writer does inside one) and returns plain records (records.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tandem.bundle import Bundle, check_paths, parse_tail_name
from tandem.errors import ConfigError, Conflict, InvalidRequest, NotFound, RegistryError
from tandem.registry import lifecycle, migrate, tx
from tandem.registry.artifacts import ArtifactStore, open_store
from tandem.registry.bundles import BundleFolders
from tandem.registry.db import Database
from tandem.registry.gc import DEFAULT_MIN_AGE_S, GcReport, collect
from tandem.registry.keys import ApiKeys
from tandem.registry.records import (
    ALIAS_RE,
    EVERY_MODEL,
    AliasInfo,
    KeyInfo,
    ModelInfo,
    ModelScope,
    Resolved,
    Scope,
    VersionInfo,
)
from tandem.registry.schema import Alias, AliasMove, Model, Version, utcnow
from tandem.settings import RegistrySettings

DEFAULT_ALIAS = "production"
# Not an alias anyone can set: it always means the newest version that is not archived.
LATEST = "latest"
PUSH_ATTEMPTS = 5
PUSHED_BY_MAX = 200


def check_pushed_by(who: str | None) -> str | None:
    """Who pushed, as they said (an OS user name, an e-mail, a CI job): one line of printable text."""
    if who is None:
        return None
    text = who.strip() if isinstance(who, str) else who
    if not isinstance(text, str) or not text or len(text) > PUSHED_BY_MAX or not text.isprintable():
        raise InvalidRequest(f"pusher {who!r} is not a name: give 1-{PUSHED_BY_MAX} printable characters on one line "
                             "(your user name, an e-mail, a CI job id)")
    return text


def check_alias_name(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias.isdigit():
        raise InvalidRequest(
            f"alias {alias!r} is not a valid alias name: use 1-64 lowercase letters, digits, '-' or '_', "
            "not only digits (those are version numbers), e.g. production or beta"
        )
    if alias == LATEST:
        raise InvalidRequest(f"'{LATEST}' always means the newest version and cannot be set as an alias; choose another name")
    return alias


class Registry:
    def __init__(self, db: Database, store: ArtifactStore, home: Path) -> None:
        self.db = db
        self.store = store
        self.home = Path(home)
        self.api_keys = ApiKeys(db)
        self.folders = BundleFolders(store, self.home)

    @classmethod
    def open(cls, settings: RegistrySettings) -> Registry:
        """The registry under ``settings.home`` (TANDEM_HOME), its database at ``settings.registry_url``,
        upgraded to the newest schema, its objects where ``settings.artifacts`` says (TANDEM_ARTIFACTS)."""
        home = settings.home
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"TANDEM_HOME={home} cannot be created ({e}); point TANDEM_HOME at a writable folder") from e
        store = open_store(settings)  # a bad TANDEM_ARTIFACTS fails here, before the database is touched
        db = Database(settings.registry_url)
        try:
            migrate.upgrade(db)
        except BaseException:
            db.close()
            raise
        return cls(db, store, home)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- versions -----------------------------------------------------------------------------

    def push(self, bundle_dir: Path, pushed_by: str | None = None, alias: str | None = None) -> VersionInfo:
        """Store a verified bundle as the next version of its model (the manifest's name); ``pushed_by``
        (who pushed it) goes into its lineage. ``alias``: point it at the new version in the same
        transaction, so that the version and the alias move appear together or not at all."""
        pushed_by = check_pushed_by(pushed_by)
        if alias is not None:
            check_alias_name(alias)
        bundle = Bundle.load(bundle_dir)
        m = bundle.manifest
        check_paths(m)  # every listed name a plain relative path, no two the same file: before anything is stored
        tail = parse_tail_name(m.name)
        if tail is not None:  # the server would serve split k of model X there instead
            raise InvalidRequest(f"model name {m.name!r} is reserved: the server serves the tail of "
                                 f"{tail[0]}'s split at k={tail[1]} under it; rename the bundle")
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
                    tx.lock(s)
                    # `tandem gc` removes objects only while it holds this lock, and only those no committed
                    # version refers to: one it took after they were written above (an object an earlier,
                    # unreferenced copy already held, say) is stored again here, under the lock, so every
                    # object this version names exists when it commits.
                    for rel, sha in files.items():
                        if not self.store.exists(sha):
                            self.store.put_file(bundle.path(rel), expected_sha256=sha)
                    model = s.scalar(select(Model).where(Model.name == m.name))
                    if model is None:
                        model = Model(name=m.name, created=utcnow(), last_version=0)
                        s.add(model)
                        s.flush()
                    latest = s.scalar(select(func.max(Version.number)).where(Version.model_id == model.id))
                    # Over every number ever taken: a deleted version's number is never given again.
                    number = max(latest or 0, model.last_version or 0) + 1
                    model.last_version = number
                    stored = m.model_copy(update={"version": number})
                    manifest_sha = self.store.put_bytes((stored.model_dump_json(indent=2) + "\n").encode("utf-8"))
                    row = Version(model_id=model.id, number=number, manifest_sha256=manifest_sha,
                                  size=bundle.total_bytes, created=utcnow(), files=files, pushed_by=pushed_by)
                    s.add(row)
                    s.flush()
                    if alias is not None:
                        self._point(s, model, alias, number)
                        s.flush()
                    tx.bump(s)
                    return self._version_info(m.name, row, (alias,) if alias is not None else ())
            except IntegrityError as e:
                # Row locking already serialises pushes; the unique (model, number) pair catches any
                # path that slips past it, and the push simply takes the next number.
                if attempt == PUSH_ATTEMPTS:
                    raise RegistryError(
                        f"could not record a new version of {m.name} after {PUSH_ATTEMPTS} attempts "
                        f"({e.orig}); try again"
                    ) from e
        raise AssertionError("unreachable")

    def lineage(self, v: VersionInfo) -> dict:
        """Where a stored version came from, as its manifest says: the data and config fingerprints,
        how it was trained (data, objective, seed, epochs, the exported epoch...), the git commit of the
        code that trained it and whether that checkout had uncommitted changes (None when unknown), its
        measured metrics, when it was exported and pushed, and who pushed it."""
        m = self._stored_manifest(v.manifest_sha256)
        training = m.get("training") or {}
        code = training.get("code")
        if not isinstance(code, dict):  # exported outside a git checkout, or before commits were recorded
            code = {}
        return {"created": m.get("created"), "pushed": v.created.isoformat(), "pushed_by": v.pushed_by,
                "git_commit": code.get("git_commit"), "git_dirty": code.get("git_dirty"),
                "fingerprint": m.get("fingerprint"), "training": training, "metrics": m.get("metrics", {}),
                "parent_version": m.get("parent_version")}

    def identical_version(self, bundle_dir: Path) -> VersionInfo | None:
        """The stored version of this bundle's model that holds the same files and the same manifest
        (apart from its version number and export time), if any: pushing it again would only add a copy."""
        m = Bundle.load(bundle_dir).manifest
        files = {rel: entry.sha256 for rel, entry in m.files.items()}
        ours = _comparable(json.loads(m.model_dump_json()))
        with self.db.read() as s:
            model = s.scalar(select(Model).where(Model.name == m.name))
            if model is None:
                return None
            # An archived version is not offered: pushing the bundle again gives a version that can be served.
            for row in s.scalars(select(Version).where(Version.model_id == model.id, Version.archived.is_(None))
                                 .order_by(Version.number)):
                if dict(row.files) != files:
                    continue
                if _comparable(self._stored_manifest(row.manifest_sha256)) == ours:
                    return self._version_info(m.name, row, ())
        return None

    def _stored_manifest(self, sha256: str) -> dict:
        manifest: dict = json.loads(self.store.read(sha256))
        return manifest

    def models(self) -> list[ModelInfo]:
        """Every model: how many versions it holds (archived ones included) and its latest (the newest
        one not archived)."""
        with self.db.read() as s:
            live = {mid: latest for mid, latest in s.execute(
                select(Version.model_id, func.max(Version.number)).where(Version.archived.is_(None))
                .group_by(Version.model_id))}
            stats = {mid: (n, live.get(mid)) for mid, n in s.execute(
                select(Version.model_id, func.count()).group_by(Version.model_id))}
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
            model = tx.model(s, name)
            by_version = self._aliases_by_version(s, model.id)
            rows = s.scalars(select(Version).where(Version.model_id == model.id).order_by(Version.number))
            return [self._version_info(name, r, by_version.get(r.number, ())) for r in rows]

    def get(self, name: str, version: int) -> VersionInfo:
        with self.db.read() as s:
            model = tx.model(s, name)
            row = tx.version(s, model, version)
            return self._version_info(name, row, self._aliases_by_version(s, model.id).get(row.number, ()))

    def archive(self, name: str, version: int) -> VersionInfo:
        """Take a version out of service but keep it: listed, inspectable, restorable with ``unarchive``;
        not served by number, aliased, released or pinned (lifecycle.py says what refuses it)."""
        with self.db.write() as s:
            row = lifecycle.archive(s, tx.locked_model(s, name), version)
            return self._version_info(name, row, ())

    def unarchive(self, name: str, version: int) -> VersionInfo:
        with self.db.write() as s:
            row = lifecycle.unarchive(s, tx.locked_model(s, name), version)
            return self._version_info(name, row, ())

    def check_delete(self, name: str, version: int) -> VersionInfo:
        """The version ``delete_version`` would delete now, or the Conflict it would raise (changes nothing)."""
        with self.db.read() as s:
            model = tx.model(s, name)
            return self._version_info(name, lifecycle.check_delete(s, model, version), ())

    def delete_version(self, name: str, version: int) -> VersionInfo:
        """Remove a version's record for good (refused while anything uses it, see lifecycle.py); its
        bundle folder goes now, its store objects at the next ``gc`` (other versions may share them)."""
        with self.db.write() as s:
            model = tx.locked_model(s, name)
            info = self._version_info(name, tx.version(s, model, version), ())
            lifecycle.delete_version(s, model, version)
        self.folders.remove(name, version)
        return info

    def gc(self, min_age_s: float = DEFAULT_MIN_AGE_S, dry_run: bool = False) -> GcReport:
        """Remove store objects nothing refers to, and bundle folders of deleted versions (gc.py)."""
        return collect(self, min_age_s, dry_run)

    # --- aliases ------------------------------------------------------------------------------

    def aliases(self, name: str) -> list[AliasInfo]:
        with self.db.read() as s:
            model = tx.model(s, name)
            return [self._alias_info(name, a) for a in
                    s.scalars(select(Alias).where(Alias.model_id == model.id).order_by(Alias.alias))]

    def set_alias(self, name: str, alias: str, version: int) -> AliasInfo:
        """Point ``alias`` at ``version``; the version it pointed at before is what rollback returns to."""
        check_alias_name(alias)
        with self.db.write() as s:
            tx.lock(s)
            model = tx.model(s, name)
            tx.servable(s, model, version)
            row = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == alias))
            if row is not None and row.version == version:
                return self._alias_info(name, row)  # nothing moves, so no new history and no new generation
            row = self._point(s, model, alias, version)
            s.flush()
            tx.bump(s)
            return self._alias_info(name, row)

    @staticmethod
    def _point(s: Session, model: Model, alias: str, version: int) -> Alias:
        """Move (or create) ``alias`` to ``version`` and record the move, inside the caller's locked transaction."""
        row = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == alias))
        now = utcnow()
        if row is None:
            row = Alias(model_id=model.id, alias=alias, version=version, previous=None, updated=now)
            s.add(row)
        else:
            row.previous, row.version, row.updated = row.version, version, now
        s.add(AliasMove(model_id=model.id, alias=alias, version=version, moved=now))
        return row

    def rollback(self, name: str, alias: str) -> AliasInfo:
        """Point ``alias`` back at the version it pointed at before its last move."""
        with self.db.write() as s:
            tx.lock(s)
            model = tx.model(s, name)
            row = self._alias(s, model, alias)
            history = s.scalars(
                select(AliasMove).where(AliasMove.model_id == model.id, AliasMove.alias == alias)
                .order_by(AliasMove.id.desc()).limit(3)
            ).all()
            if len(history) < 2:
                # Earlier rollbacks undid the later moves, so this is where the alias was first set, not
                # necessarily the only version it ever pointed at.
                raise Conflict(
                    f"{name}:{alias} points at version {row.version}, where it was first set: no earlier move is left to "
                    f"undo (each rollback undoes the latest move); point it at any version with "
                    f"`tandem alias {name} {alias} VERSION`"
                )
            tx.servable(s, model, history[1].version)  # an archived one stays out of service
            s.delete(history[0])
            row.version = history[1].version
            row.previous = history[2].version if len(history) > 2 else None
            row.updated = utcnow()
            s.flush()
            tx.bump(s)
            return self._alias_info(name, row)

    # --- resolving and loading ----------------------------------------------------------------

    def resolve(self, name: str, ref: str | int | None = None, *, include_archived: bool = False) -> Resolved:
        """A version number (int or digits), an alias, or None (alias production if set, else the latest).
        An archived version is NotFound (what a server answers for it) unless ``include_archived``
        (to inspect it: `tandem info`)."""
        with self.db.read() as s:
            model = tx.model(s, name)
            if ref is None:
                alias = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == DEFAULT_ALIAS))
                number = alias.version if alias is not None else tx.latest(s, model)
            elif isinstance(ref, int) and not isinstance(ref, bool):
                number = ref
            elif isinstance(ref, str) and ref.strip().isascii() and ref.strip().isdigit():
                number = int(ref.strip())
            elif isinstance(ref, str) and ref == LATEST:
                number = tx.latest(s, model)
            elif isinstance(ref, str):
                number = self._alias(s, model, ref).version
            else:
                raise InvalidRequest(f"a model reference is a version number or an alias name, not {ref!r}")
            row = tx.version(s, model, number) if include_archived else tx.servable(s, model, number, NotFound)
            info = self._version_info(name, row, ())
        return Resolved(name=name, version=info.version, manifest_sha256=info.manifest_sha256,
                        bundle_dir=self.folders.materialise(info))

    def bundle_dir(self, name: str, version: int) -> Path:
        """A verified bundle folder of this version, built from the store on first use."""
        return self.folders.materialise(self.get(name, version))

    def generation(self) -> int:
        """A number that grows with every push, alias move, rollback and OTA release change (cheap to poll)."""
        with self.db.read() as s:
            return tx.generation(s)

    # --- API keys (keys.py) ---------------------------------------------------------------------

    def create_key(self, scope: Scope, label: str = "", model_scope: ModelScope = EVERY_MODEL,
                   rate_per_s: float | None = None, burst: int | None = None,
                   expires: datetime | None = None) -> tuple[str, KeyInfo]:
        return self.api_keys.create(scope, label, model_scope, rate_per_s, burst, expires)

    def update_key(self, key_id: str, rate_per_s: float | None = None, burst: int | None = None,
                   expires: datetime | None = None, default_limits: bool = False,
                   never_expires: bool = False) -> KeyInfo:
        return self.api_keys.update(key_id, rate_per_s, burst, expires, default_limits, never_expires)

    def list_keys(self) -> list[KeyInfo]:
        return self.api_keys.list()

    def revoke_key(self, key_id: str) -> KeyInfo:
        return self.api_keys.revoke(key_id)

    def verify_key(self, token: str) -> KeyInfo | None:
        return self.api_keys.verify(token)

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _alias(s: Session, model: Model, alias: str) -> Alias:
        row = None
        if isinstance(alias, str) and ALIAS_RE.fullmatch(alias):
            row = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == alias))
        if row is None:
            have = [f"{a.alias} -> {a.version}" for a in
                    s.scalars(select(Alias).where(Alias.model_id == model.id).order_by(Alias.alias))]
            raise NotFound(f"model {model.name} has no alias {alias!r} (aliases: {tx.listing(have)}; "
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
                           created=tx.aware(row.created), aliases=aliases, files=dict(row.files),
                           archived=tx.aware(row.archived), pushed_by=row.pushed_by)

    @staticmethod
    def _alias_info(name: str, row: Alias) -> AliasInfo:
        return AliasInfo(name=name, alias=row.alias, version=row.version, previous=row.previous,
                         updated=tx.aware(row.updated))


def _comparable(manifest: dict) -> dict:
    """A manifest without what differs between two exports of the same thing, or two pushes of it."""
    return {k: v for k, v in manifest.items() if k not in ("version", "parent_version", "created")}
