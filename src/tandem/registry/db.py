"""Connections to the registry database — a SQLite file by default, PostgreSQL by URL — and the
translation of driver errors into Tandem's: a database that is down or locked is ``Unavailable``
(the server answers 503 with Retry-After), anything else the database refuses is a ``RegistryError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from tandem.errors import ConfigError, RegistryError, Unavailable

# How long a SQLite writer waits for another writer's lock before giving up (then: Unavailable).
SQLITE_BUSY_TIMEOUT_S = 30
PG_CONNECT_TIMEOUT_S = 5
_BEGIN = {None: "BEGIN", "IMMEDIATE": "BEGIN IMMEDIATE"}


def registry_url(url: str) -> URL:
    """Parse ``url``; plain ``postgresql://`` (and ``postgres://``) mean the psycopg 3 driver."""
    try:
        u = make_url(url)
    except ArgumentError as e:
        raise ConfigError(
            f"TANDEM_DATABASE_URL is not a database URL ({e}); use e.g. "
            "postgresql+psycopg://user@host:5432/dbname, or unset it for the SQLite file under TANDEM_HOME"
        ) from e
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"the registry runs on SQLite or PostgreSQL, not {backend!r} ({u.drivername})")
    if backend == "sqlite" and u.database in (None, "", ":memory:"):
        raise ConfigError("the registry needs a SQLite *file* (several processes share it), not an in-memory database")
    return u


def shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


class Database:
    """One engine per process; ``read()`` and ``write()`` open short transactions on it."""

    def __init__(self, url: str) -> None:
        self.url = registry_url(url)
        self.dialect = self.url.get_backend_name()
        try:
            if self.dialect == "sqlite":
                self.engine = _sqlite_engine(self.url)
            else:
                self.engine = create_engine(
                    self.url, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S}
                )
        except ModuleNotFoundError as e:
            raise ConfigError(f"no database driver for {shown(self.url)} ({e}); install tandem[serve]") from e
        # Writers on SQLite take the write lock when they begin (BEGIN IMMEDIATE): a transaction that
        # reads first and upgrades to writing later can fail at once with "database is locked" when
        # another writer committed meanwhile, whatever the busy timeout.
        self.write_engine = self.engine.execution_options(tandem_begin="IMMEDIATE")

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def errors(self, retryable: bool = False) -> Iterator[None]:
        """Driver errors as Tandem errors. ``retryable`` lets IntegrityError through to a retry loop."""
        try:
            yield
        except IntegrityError as e:
            if retryable:
                raise
            raise RegistryError(f"the registry database refused a change: {_first_line(e)}") from e
        except (OperationalError, InterfaceError) as e:
            raise Unavailable(
                f"the registry database {shown(self.url)} is unavailable ({_first_line(e)}); "
                "check that it is running and reachable, then try again"
            ) from e
        except DBAPIError as e:
            raise RegistryError(f"the registry database {shown(self.url)} failed: {_first_line(e)}") from e

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self.errors(), Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextlib.contextmanager
    def write(self, retryable: bool = False) -> Iterator[Session]:
        with self.errors(retryable), Session(self.write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[Connection]:
        with self.errors(), self.write_engine.begin() as conn:
            yield conn


def _sqlite_engine(url: URL) -> Engine:
    assert url.database is not None  # registry_url refuses in-memory databases
    Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # SQLAlchemy emits BEGIN itself (below): the sqlite3 module's own transaction handling skips
        # BEGIN before SELECT and DDL, which breaks repeatable reads and transactional migrations.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
            # WAL: readers (every server worker) never block the one writer, nor it them.
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(_BEGIN[conn.get_execution_options().get("tandem_begin")])

    return engine


def _first_line(e: DBAPIError) -> str:
    text = str(e.orig) if e.orig is not None else str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__
