"""`python -m tests.faults.kill_after_sql ARGS`: the real `tandem ARGS`, killed by SIGKILL right after
the registry database has run the first statement that starts with $TANDEM_TEST_KILL_AFTER_SQL
(case-insensitive): inside the write transaction, before its COMMIT, as if the machine died there.

A test-side listener on every SQLAlchemy engine, so production code carries no hook for it."""

from __future__ import annotations

import os
import signal
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.faults.harness import KILL_AFTER_SQL


def _arm(prefix: str) -> None:
    @event.listens_for(Engine, "after_cursor_execute")
    def _die(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().lower().startswith(prefix):
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    _arm(os.environ[KILL_AFTER_SQL].strip().lower())
    from tandem.cli.main import main

    sys.argv = ["tandem", *sys.argv[1:]]
    main()
