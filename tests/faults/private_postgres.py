"""A PostgreSQL cluster of the test's own, to stop and start for real (the shared server on
127.0.0.1:5432 serves everyone else and is never stopped).

initdb makes it in a fresh temporary directory; it listens on a free port on 127.0.0.1 only, with
its Unix socket in that directory, trust authentication and no fsync (nothing in it must survive a
power cut, only a server stop). PostgreSQL refuses to run as root, and the tests run as root: then
every command runs as the `postgres` user, who owns the directory. Where the binaries or that user
are missing, the test is skipped, saying which.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.testing.processes import free_port

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"), Path("/usr/bin")]
RUN_AS = "postgres"
START_TIMEOUT_S = 30


def _binary(name: str) -> Path | None:
    for d in BIN_DIRS:
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return d / name
    found = shutil.which(name)
    return Path(found) if found else None


class PrivatePostgres:
    """One cluster: ``start()``, ``stop(mode)`` as often as the test likes; ``url`` reaches it over TCP."""

    def __init__(self, root: Path, initdb: Path, pg_ctl: Path, user: pwd.struct_passwd | None) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self._initdb, self._pg_ctl, self._user = initdb, pg_ctl, user

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: object, timeout: float = 60) -> None:
        cmd = [str(a) for a in argv]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user.pw_name, "--", *cmd]
        # cwd: the postgres user may not be allowed into the caller's directory.
        r = subprocess.run(cmd, cwd=self.root, check=False, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-800:]}\n"
                               f"log: {self.log_tail()}")

    def log_tail(self, n: int = 10) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    def init(self) -> None:
        self._run(self._initdb, "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions")

    def start(self) -> None:
        """Start and wait until it accepts connections (also after an immediate stop: crash recovery)."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run(self._pg_ctl, "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", START_TIMEOUT_S, "start",
                  timeout=START_TIMEOUT_S + 10)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, a clean shutdown; ``immediate``: the server processes quit
        at once, as in a crash (the next start recovers from the WAL)."""
        self._run(self._pg_ctl, "-D", self.data, "-m", mode, "-w", "-t", START_TIMEOUT_S, "stop",
                  timeout=START_TIMEOUT_S + 10)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started cluster, stopped (immediately) and deleted afterwards; skips where it cannot be made."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None or _binary("postgres") is None:
        pytest.skip(f"PostgreSQL's initdb, pg_ctl and postgres are needed (looked in "
                    f"{', '.join(map(str, BIN_DIRS))} and PATH)")
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(RUN_AS)
        except KeyError:
            pytest.skip(f"running as root, and PostgreSQL refuses root: a {RUN_AS!r} user is needed to run it as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root, and PostgreSQL refuses root: `runuser` is needed to run it as postgres")
    # Under /tmp, not pytest's tmp_path: root's pytest directories are closed to other users.
    root = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        pg = PrivatePostgres(root, initdb, pg_ctl, user)
        pg.init()
        pg.start()
        try:
            yield pg
        finally:
            if pg.running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    pg.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
