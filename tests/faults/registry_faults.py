"""Faults on the registry's side: `tandem push` and `tandem alias` killed with SIGKILL at chosen
instants, and a push onto a disk that fills up. Each scenario starts from its own registry and
returns the problems it found (tests.faults.harness)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from tandem.bundle import Bundle
from tandem.registry.artifacts import STALE_INCOMING_S
from tandem.registry.registry import Registry
from tandem.testing.processes import until
from tests.faults.harness import (
    cli_env,
    database_problems,
    finished,
    kill_when,
    killed,
    settings_of,
    spawn,
    store_problems,
    tmpfs,
    verified_versions,
    versions_of,
)
from tests.integration.server.serving import populate, running, test_settings

# Where a push is killed: while it writes a big object into the store (a partial .incoming file),
# after every object is stored but inside the transaction that records the version, and while it
# waits for the registry's write lock that another writer holds.
PUSH_POINTS = ("object", "transaction", "lock")
# Where an alias move is killed: after each statement of its transaction, and while it waits for the lock.
ALIAS_POINTS = ("update aliases", "insert into alias_history", "update registry_state", "lock")


def _writing_an_object(objects: Path, at_least: int) -> bool:
    return any(p.stat().st_size >= at_least for p in objects.glob(".incoming-*") if p.exists())


class _WriteLock:
    """Another writer holding the SQLite registry's write lock (as a long push would)."""

    def __init__(self, home: Path) -> None:
        self.db = sqlite3.connect(home / "registry.db", isolation_level=None, timeout=30)

    def __enter__(self) -> _WriteLock:
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


def push_killed(root: Path, big: Path, name: str, at: str) -> list[str]:
    """Kill `tandem push BIG` at ``at``: no version may appear, no partial object may be visible, and
    the same push run again must record version 1, whose files verify."""
    home = root / "home"
    settings = settings_of(home)
    Registry.open(settings).close()  # the database exists, so the lock scenario has something to lock
    env = cli_env(home)
    if at == "object":
        proc = spawn(["push", str(big)], env)
        problems = [] if kill_when(proc, lambda: _writing_an_object(home / "objects", 1 << 20)) else \
            [f"push ended before it wrote an object: {finished(proc)}"]
    elif at == "transaction":
        problems = killed(spawn(["push", str(big)], env, kill_after_sql="insert into versions"), "push")
    else:
        with _WriteLock(home):
            proc = spawn(["push", str(big)], env)
            # Its files are stored without the lock; then it waits for the lock to record the version.
            files = len(Bundle.load(big, verify=False).manifest.files)
            until(lambda: proc.poll() is not None or len(list((home / "objects").glob("??/*"))) >= files,
                  "the push to store its files", 120)
            time.sleep(0.3)
            problems = [] if kill_when(proc, lambda: True) else [f"push ended before the kill: {finished(proc)}"]
    if versions_of(settings, name):
        problems.append(f"a push killed at {at!r} left versions {versions_of(settings, name)} of {name} visible")
    problems += store_problems(home / "objects") + database_problems(settings)
    partial = list((home / "objects").glob(".incoming-*"))
    if at == "object" and not partial:
        problems.append("the push was killed mid-write, yet no partial file shows it")
    for p in partial:  # as if the kill was long ago: the next push sweeps what it left
        os.utime(p, (time.time() - 2 * STALE_INCOMING_S,) * 2)
    code, output = finished(spawn(["push", str(big)], env))
    if any(p.exists() for p in partial):
        problems.append("a later push left the killed push's stale partial file in the store")
    if code != 0:
        problems.append(f"the push after the kill failed ({code}): {output[-500:]}")
    elif versions_of(settings, name) != [1]:
        problems.append(f"the push after the kill recorded versions {versions_of(settings, name)}, not [1]")
    return problems + verified_versions(settings, name) + store_problems(home / "objects")


def alias_killed(root: Path, bundles: list[Path], name: str, at: str, server_url: str | None = None,
                 predict_key: str | None = None) -> list[str]:
    """Kill `tandem alias NAME production 2` (it points at 1) at ``at``: the alias must point at 1 or 2
    with a history that agrees, a server following it must serve what it points at, and the move
    run again must land."""
    home = root / "home"
    settings = settings_of(home)
    env = cli_env(home)
    move = ["alias", name, "production", "2"]
    if at == "lock":
        with _WriteLock(home):
            proc = spawn(move, env)
            time.sleep(3)  # started, parsed its arguments and opened the registry: it waits for the lock now
            problems = [] if kill_when(proc, lambda: True) else [f"alias ended before the kill: {finished(proc)}"]
    else:
        problems = killed(spawn(move, env, kill_after_sql=at), "alias")
    problems += _alias_consistent(settings, name, {1, 2}) + database_problems(settings)
    if server_url is not None:
        problems += _served_as_registered(settings, name, server_url, predict_key)
    code, output = finished(spawn(move, env))
    if code != 0:
        problems.append(f"the alias move after the kill failed ({code}): {output[-500:]}")
    problems += _alias_consistent(settings, name, {2})
    if server_url is not None:
        problems += _served_as_registered(settings, name, server_url, predict_key)
    return problems


def _alias_consistent(settings, name: str, allowed: set[int]) -> list[str]:  # type: ignore[no-untyped-def]
    with Registry.open(settings) as reg:
        alias = next((a for a in reg.aliases(name) if a.alias == "production"), None)
        with reg.db.read() as s:
            from sqlalchemy import select

            from tandem.registry.schema import AliasMove

            last = s.scalars(select(AliasMove.version).where(AliasMove.alias == "production")
                             .order_by(AliasMove.id.desc()).limit(1)).first()
    if alias is None or alias.version not in allowed:
        return [f"{name}:production points at {alias.version if alias else None}, not one of {sorted(allowed)}"]
    if last != alias.version:
        return [f"{name}:production points at {alias.version} but its history ends at {last}"]
    return []


def _served_as_registered(settings, name: str, url: str, key: str | None) -> list[str]:  # type: ignore[no-untyped-def]
    import httpx

    with Registry.open(settings) as reg:
        want = next(a.version for a in reg.aliases(name) if a.alias == "production")

    def serves() -> bool:
        r = httpx.get(f"{url}/v1/models/{name}/labels/production", headers={"authorization": f"Bearer {key}"},
                      timeout=10)
        return r.status_code == 200 and r.json()["model_version_status"][0]["version"] == str(want)

    try:
        until(serves, f"the server to serve {name} v{want} as production", 60)
    except AssertionError as e:
        return [str(e)]
    return []


def push_disk_full(root: Path, big: Path, small: Path, name: str) -> list[str] | None:
    """Push BIG onto a registry whose disk is too small for it: a clear error, no version, no partial
    object; then SMALL (which fits) must push. None where no small disk can be mounted here."""
    total = sum(p.stat().st_size for p in big.rglob("*") if p.is_file())
    size_mb = max(4, int(total / (1 << 20) * 0.6))
    with tmpfs(root / "disk", f"{size_mb}m") as disk:
        if disk is None:
            return None
        home = disk / "home"
        settings = settings_of(home)
        Registry.open(settings).close()
        env = cli_env(home)
        code, output = finished(spawn(["push", str(big)], env))
        problems = []
        if code == 0:
            problems.append(f"a push of {total >> 20} MiB onto a {size_mb} MiB disk succeeded")
        elif "out of space" not in output or "Traceback" in output:
            problems.append(f"a full disk did not give a clear error ({code}): {output[-800:]}")
        if versions_of(settings, name):
            problems.append(f"the failed push left versions {versions_of(settings, name)} visible")
        leftovers = [p.name for p in (home / "objects").glob(".incoming-*")]
        if leftovers:
            problems.append(f"the failed push left partial files in the store: {leftovers}")
        problems += store_problems(home / "objects") + database_problems(settings)
        code, output = finished(spawn(["push", str(small)], env))
        if code != 0:
            problems.append(f"a push that fits failed after the full disk ({code}): {output[-500:]}")
        return problems + verified_versions(settings, name)


@contextlib.contextmanager
def serving_two_versions(root: Path, bundles: list[Path]) -> Iterator[tuple[str, str]]:
    """A registry under ``root`` with versions 1 and 2 of the bundles' model, production on 1, and a
    real server following it: (its URL, a predict key)."""
    settings = test_settings(root / "home", alias_poll_s=0.1, preload=False)
    keys = populate(settings, bundles, production=1)
    with running(settings) as server:
        yield server.url, keys.predict
