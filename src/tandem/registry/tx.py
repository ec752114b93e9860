"""What every registry writer does inside its transaction (``db.read()`` / ``db.write()`` sessions):
take the registry's write lock, look a model or one of its versions up with an error that lists what
exists, move the generation servers poll, and read a stored time back as an aware UTC datetime.

The versions, the API keys and the over-the-air side (registry/ota/) all go through these, so the
lock order and the generation rule are written once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tandem.bundle import NAME_RE
from tandem.errors import Conflict, NotFound, RegistryError, TandemError
from tandem.registry.schema import Model, RegistryState, Version

MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer; larger numbers cannot exist


def lock(s: Session) -> None:
    """Take the registry's write lock: every writer locks the one state row first. On PostgreSQL
    (READ COMMITTED) that serialises pushes, alias moves and OTA changes, and each later statement sees
    what the previous writer committed; SQLite's BEGIN IMMEDIATE already holds the database's write lock."""
    found = s.execute(select(RegistryState.id).where(RegistryState.id == 1).with_for_update()).first()
    if found is None:
        raise RegistryError("the registry database has no registry_state row; it was changed by hand")


def bump(s: Session) -> None:
    """Move the registry's generation on, in the same transaction as the change servers must see."""
    s.execute(update(RegistryState).where(RegistryState.id == 1).values(generation=RegistryState.generation + 1))


def generation(s: Session) -> int:
    gen = s.scalar(select(RegistryState.generation).where(RegistryState.id == 1))
    if gen is None:
        raise RegistryError("the registry database has no registry_state row; it was changed by hand")
    return int(gen)


def model(s: Session, name: str) -> Model:
    """The model's row; NotFound listing the models there are."""
    # Names that no manifest can have are never looked up (a NUL byte would be a database error).
    row = s.scalar(select(Model).where(Model.name == name)) if isinstance(name, str) and NAME_RE.fullmatch(name) else None
    if row is None:
        names = list(s.scalars(select(Model.name).order_by(Model.name)))
        raise NotFound(f"no model named {name!r} in the registry (models: {listing(names)}); "
                       "add one with `tandem push BUNDLE`")
    return row


def locked_model(s: Session, name: str) -> Model:
    """The model's row, with the registry's write lock taken first."""
    lock(s)
    return model(s, name)


def version(s: Session, model: Model, number: int) -> Version:
    """The model's version ``number``; NotFound listing the versions there are."""
    row = None
    if isinstance(number, int) and 1 <= number <= MAX_VERSION:
        row = s.scalar(select(Version).where(Version.model_id == model.id, Version.number == number))
    if row is None:
        have = [str(n) for n in s.scalars(
            select(Version.number).where(Version.model_id == model.id).order_by(Version.number))]
        raise NotFound(f"model {model.name} has no version {number} (versions: {listing(have)})")
    return row


def servable(s: Session, model: Model, number: int, error: type[TandemError] = Conflict) -> Version:
    """The model's version ``number`` if it is not archived: what may be served, aliased, released or
    pinned. An archived one raises ``error`` (a 404 where it is looked up to be served, a 409 where
    something is to be pointed at it), saying how to restore it."""
    row = version(s, model, number)
    if row.archived is not None:
        raise error(f"{model.name} version {number} is archived: it stays stored but is not served, aliased, "
                    f"released or pinned; restore it with `tandem versions unarchive {model.name} {number}`")
    return row


def latest(s: Session, model: Model) -> int:
    """The newest version that is not archived (what ``latest`` and an unaliased model mean)."""
    number = s.scalar(select(func.max(Version.number)).where(Version.model_id == model.id,
                                                             Version.archived.is_(None)))
    if number is None:
        archived = [str(n) for n in s.scalars(select(Version.number).where(Version.model_id == model.id)
                                              .order_by(Version.number))]
        if archived:
            raise NotFound(f"every version of model {model.name} is archived ({listing(archived)}); restore one "
                           f"with `tandem versions unarchive {model.name} VERSION`, or push a new one")
        state = "left: every version pushed was deleted" if model.last_version else "yet"
        raise NotFound(f"model {model.name} has no versions {state}; push one with `tandem push BUNDLE`")
    return number


@overload
def aware(dt: datetime) -> datetime: ...


@overload
def aware(dt: None) -> None: ...


def aware(dt: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime: SQLite hands back naive datetimes (stored as UTC),
    PostgreSQL aware ones in the session's zone."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def listing(items: list[str], none: str = "none") -> str:
    return ", ".join(items) if items else none
