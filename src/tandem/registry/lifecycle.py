"""A stored version's life after its push: archived (kept and listed, but not served, aliased, released
or pinned), unarchived, or deleted for good (docs/registry.md).

Each function runs inside the caller's transaction, after the registry's write lock (tx.lock): what
still uses the version is checked in the same transaction that changes it, so no alias move or OTA
release can slip in between, and the generation moves with the change so that servers follow it.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tandem.errors import Conflict
from tandem.registry import tx
from tandem.registry.schema import (
    Alias,
    AliasMove,
    DataKey,
    DeviceHealth,
    Model,
    OtaObject,
    Release,
    ReleaseHealth,
    ReleasePin,
    Version,
    utcnow,
)

# Releases whose devices may be getting or running the version (a rolled-back one sends them back).
LIVE_STATES = ("active", "halted")
SHOWN = 10  # users of a version named in a refusal; the rest are counted


def archive(s: Session, model: Model, number: int) -> Version:
    """Mark the version archived. Refused while an alias points at it, a live release offers it or a
    device is pinned to it: each would go on serving what the user meant to take out of service."""
    row = tx.version(s, model, number)
    if row.archived is not None:
        return row  # already archived: nothing moves
    problems = [*_alias_problems(s, model, number),
                *_release_problems(s, model, number, LIVE_STATES,
                                   "devices may be getting or running it: release another version on that channel and "
                                   f"roll this one back (`tandem release-rollback {model.name} --channel {{channel}}`)"),
                *_pin_problems(s, model, number)]
    if problems:
        raise Conflict(f"cannot archive {model.name} version {number}: {'; '.join(problems)}")
    row.archived = utcnow()
    tx.bump(s)
    return row


def unarchive(s: Session, model: Model, number: int) -> Version:
    row = tx.version(s, model, number)
    if row.archived is not None:
        row.archived = None
        tx.bump(s)
    return row


def delete_version(s: Session, model: Model, number: int) -> Version:
    """Remove the version's record and everything recorded only for it (its alias history, OTA data key,
    encrypted objects and health figures); its files stay in the store until `tandem gc`. Refused
    while an alias points at it, any OTA release (even a rolled-back one) or pin names it. The number is
    never given again (``Model.last_version``)."""
    row = check_delete(s, model, number)
    mine = (OtaObject.model_id == model.id, OtaObject.version == number)
    moved = set(s.scalars(select(AliasMove.alias).where(AliasMove.model_id == model.id, AliasMove.version == number)))
    s.execute(delete(AliasMove).where(AliasMove.model_id == model.id, AliasMove.version == number))
    for alias in sorted(moved):
        _tidy_history(s, model, alias)
    s.execute(delete(OtaObject).where(*mine))
    s.execute(delete(DataKey).where(DataKey.model_id == model.id, DataKey.version == number))
    s.execute(delete(DeviceHealth).where(DeviceHealth.model_id == model.id, DeviceHealth.version == number))
    s.execute(delete(ReleaseHealth).where(ReleaseHealth.model_id == model.id, ReleaseHealth.version == number))
    s.delete(row)
    model.last_version = max(model.last_version, number)
    s.flush()
    tx.bump(s)
    return row


def check_delete(s: Session, model: Model, number: int) -> Version:
    """The version, if it may be deleted; Conflict naming everything that still uses it."""
    row = tx.version(s, model, number)
    problems = [*_alias_problems(s, model, number),
                *_release_problems(s, model, number, None,
                                   "OTA keeps every release it made, to send devices that hold the version back "
                                   f"from it: archive the version instead (`tandem versions archive {model.name} {number}`)"),
                *_pin_problems(s, model, number)]
    if problems:
        raise Conflict(f"cannot delete {model.name} version {number}: {'; '.join(problems)}")
    return row


def _tidy_history(s: Session, model: Model, alias: str) -> None:
    """An alias's moves without a deleted version: rollback skips it. Two moves to the same version
    that now follow each other are one (a rollback between them would move nothing), and ``previous``
    is again what rollback would go back to."""
    moves = s.scalars(select(AliasMove).where(AliasMove.model_id == model.id, AliasMove.alias == alias)
                      .order_by(AliasMove.id)).all()
    kept: list[AliasMove] = []
    for m in moves:
        if kept and kept[-1].version == m.version:
            s.delete(m)
        else:
            kept.append(m)
    row = s.scalar(select(Alias).where(Alias.model_id == model.id, Alias.alias == alias))
    if row is not None:
        row.previous = kept[-2].version if len(kept) > 1 else None


def _alias_problems(s: Session, model: Model, number: int) -> list[str]:
    names = list(s.scalars(select(Alias.alias).where(Alias.model_id == model.id, Alias.version == number)
                           .order_by(Alias.alias)))
    if not names:
        return []
    which = f"alias {names[0]} points" if len(names) == 1 else f"aliases {', '.join(names)} point"
    return [f"{which} at it (point {'it' if len(names) == 1 else 'them'} at another version first: "
            f"`tandem alias {model.name} {names[0]} VERSION`)"]


def _release_problems(s: Session, model: Model, number: int, states: tuple[str, ...] | None, fix: str) -> list[str]:
    q = select(Release).where(Release.model_id == model.id, Release.version == number)
    if states is not None:
        q = q.where(Release.state.in_(states))
    rows = s.scalars(q.order_by(Release.channel)).all()
    return [f"it is released on channel {r.channel} ({r.state}): {fix.format(channel=r.channel)}" for r in rows]


def _pin_problems(s: Session, model: Model, number: int) -> list[str]:
    pins = s.scalars(select(ReleasePin).where(ReleasePin.model_id == model.id, ReleasePin.version == number)
                     .order_by(ReleasePin.channel, ReleasePin.device_id)).all()
    if not pins:
        return []
    named = ", ".join(f"{p.device_id} on {p.channel}" for p in pins[:SHOWN])
    more = f" and {len(pins) - SHOWN} more" if len(pins) > SHOWN else ""
    first = pins[0]
    return [f"{len(pins)} device(s) are pinned to it ({named}{more}; unpin them first: "
            f"`tandem unpin {model.name} {first.device_id} --channel {first.channel}`)"]
