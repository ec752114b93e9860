"""`tandem gc`: remove what the artifact store holds that nothing refers to (docs/registry.md).

Kept (the references): every stored version's files and manifest, archived versions' included, and
every encrypted OTA object the database records (a version's files encrypted for devices, and delta
patches). Removed: other objects older than the grace period (an interrupted push's, a deleted
version's, an OTA object that was replaced or lost a race), the bundle folders of deleted versions, and
temporary files of writers killed mid-write. The store may be a folder or an S3 bucket: its listing
gives each object's size and the time it was written.

Why a push (or an OTA object being made) running at the same time loses nothing. Writers store objects
first and record them in the database afterwards, so for a while an object in use is referenced by
nothing committed:

1. gc deletes only while it holds the registry's write lock (tx.lock), and only objects that the
   references it reads under that lock do not name: nothing committed then refers to them.
2. Every writer takes that lock before it commits a reference and checks there that the objects it
   names are stored, storing again any that is gone: a push its version's files (Registry.push), the
   OTA side its encrypted file or patch (ota/objects.py). An object a writer found already stored (an
   earlier copy nothing referred to) and gc then removed comes back before anything refers to it.
3. An object younger than the grace period (``--min-age``, 60 minutes by default) is kept whatever:
   a margin for writers that do not check (a Tandem from before gc existed, sharing the registry).

The store belongs to the database that refers to it: gc run against another database (an empty one,
say) would take everything, so it refuses when the database has no models but the store has objects.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from tandem.errors import Conflict, InvalidRequest
from tandem.registry import tx
from tandem.registry.schema import Model, OtaObject, Version

if TYPE_CHECKING:
    from tandem.registry.registry import Registry

DEFAULT_MIN_AGE_S = 3600.0


@dataclass(frozen=True)
class GcReport:
    dry_run: bool  # nothing was removed: the counts say what would be
    min_age_s: float
    objects: int  # store objects nothing refers to, removed
    bytes: int  # what they held
    folders: int  # bundle folders of deleted versions, removed
    temporary: int  # temporary files of writers killed mid-write, removed
    kept_young: int  # objects nothing refers to yet, kept as younger than min_age_s (a write may be under way)
    kept_young_bytes: int
    referenced: int  # objects something refers to


def referenced(s: Session) -> set[str]:
    """Every store object the database refers to."""
    refs: set[str] = set()
    for manifest_sha, files in s.execute(select(Version.manifest_sha256, Version.files)):
        refs.add(manifest_sha)
        refs.update((files or {}).values())
    for sha, plain in s.execute(select(OtaObject.sha256, OtaObject.plain_sha256)):
        refs.update((sha, plain))
    return refs


def collect(reg: Registry, min_age_s: float = DEFAULT_MIN_AGE_S, dry_run: bool = False) -> GcReport:
    store = reg.store
    if not isinstance(min_age_s, int | float) or not math.isfinite(min_age_s) or min_age_s < 0:
        raise InvalidRequest(f"the minimum age {min_age_s!r} is not a number of seconds from 0")
    cutoff = time.time() - min_age_s
    # Bundle folders are listed before the versions are read: each was built from a version committed
    # before the listing, and numbers are never reused, so a folder whose version that read does not
    # find was deleted and will never be wanted again.
    built = reg.folders.built()
    with reg.db.read() as s:
        refs = referenced(s)
        live = {(name, n) for name, n in s.execute(select(Model.name, Version.number).join(Model, Model.id == Version.model_id))}
        has_models = bool(s.scalar(select(exists().where(Model.id.is_not(None)))))
    doomed_folders = [(name, n) for name, n, _ in built if (name, n) not in live]
    candidates: list[tuple[str, int]] = []
    young = young_bytes = kept = 0
    # A local folder or a bucket alike: each listed object comes with its size and when it was written.
    for obj in store.objects():
        if obj.sha256 in refs:
            kept += 1
        elif obj.modified > cutoff:
            young, young_bytes = young + 1, young_bytes + obj.size
        else:
            candidates.append((obj.sha256, obj.size))
    if not has_models and (candidates or young or doomed_folders):
        raise Conflict(f"the registry database {reg.db.url.render_as_string(hide_password=True)} holds no models, but "
                       f"the artifact store at {store.location} holds objects: they belong to another database (check "
                       "TANDEM_DATABASE_URL and TANDEM_HOME); gc would remove them all, so it did nothing")
    if dry_run:
        return GcReport(True, min_age_s, len(candidates), sum(size for _, size in candidates), len(doomed_folders),
                        store.sweep(dry_run=True), young, young_bytes, kept)
    removed = freed = 0
    with reg.db.write() as s:
        tx.lock(s)
        refs = referenced(s)  # again, under the lock: see the module's docstring
        for sha, _ in candidates:
            if sha not in refs:
                size = store.remove(sha)
                if size is not None:
                    removed, freed = removed + 1, freed + size
    folders = sum(reg.folders.remove(name, n) for name, n in doomed_folders)
    return GcReport(False, min_age_s, removed, freed, folders, store.sweep(), young, young_bytes, kept)
