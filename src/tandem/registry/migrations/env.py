"""Alembic environment. Tandem passes its open connection in ``config.attributes["connection"]``
(inside a transaction that holds the migration lock); without one, the URL comes from the
``sqlalchemy.url`` option or Tandem's settings, so the alembic command line works too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from tandem.registry.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from tandem.settings import get_settings

    return config.get_main_option("sqlalchemy.url") or get_settings().registry_url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (conn := config.attributes.get("connection")) is not None:
    _run(conn)
else:
    from tandem.registry.db import Database

    db = Database(_url())
    try:
        with db.write_connection() as connection:
            _run(connection)
    finally:
        db.close()
