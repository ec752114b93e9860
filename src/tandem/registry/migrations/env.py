"""Alembic environment. Tandem passes its open connection in ``config.attributes["connection"]``
(inside a transaction that holds the migration lock); without one, the URL comes from the
``sqlalchemy.url`` option (an alembic.ini's, or ``alembic -x url=...``), so the alembic command line
works too. Tandem's settings are not read here: whoever runs the migrations says which database."""

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
    url = config.get_main_option("sqlalchemy.url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        from tandem.errors import ConfigError

        raise ConfigError("no database to migrate: set sqlalchemy.url in alembic.ini or pass -x url=URL "
                          "(Tandem itself migrates the registry whenever it opens it)")
    return url


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
