"""Bring the registry database to the newest schema; run whenever the registry is opened.

Several processes (uvicorn workers) may open a fresh registry at the same moment, so the upgrade
runs under a lock: PostgreSQL's transaction-scoped advisory lock, SQLite's write lock (BEGIN
IMMEDIATE). DDL is transactional on both, so a failed upgrade leaves the old schema.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from tandem.errors import RegistryError
from tandem.registry.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision in migrations/versions (a test keeps the two in step). Knowing it without
# loading Alembic keeps opening an up-to-date registry to one query, in every CLI call and worker.
HEAD = "0009"
# An arbitrary constant naming Tandem's lock among all advisory locks of the PostgreSQL database.
PG_LOCK_KEY = 0x7A4D0E6D

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def current(db: Database) -> str | None:
    """The database's schema revision; None for an empty database."""
    with db.read() as s:
        conn = s.connection()
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(db: Database) -> None:
    # The common case (already up to date) costs one read and takes no lock.
    found = current(db)
    if found == HEAD:
        return
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    if found is not None:
        try:
            script.get_revision(found)
        except CommandError as e:
            raise RegistryError(
                f"the registry database {db.url.render_as_string(hide_password=True)} has schema revision "
                f"{found}, which this Tandem does not know (its newest is {HEAD}): it was written by a "
                "newer Tandem; upgrade Tandem"
            ) from e
    with db.write_connection() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except CommandError as e:
            raise RegistryError(f"could not upgrade the registry database schema: {e}") from e
    log.debug("registry database schema upgraded from %s to %s", found or "nothing", HEAD)
