"""`tandem versions` (list, archive, unarchive, delete), `tandem gc` and `tandem push --by` as a user types
them: in process (CliRunner) against a real SQLite registry, and once in a real terminal for the
question `tandem versions delete` asks."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tandem.bundle import Bundle, write_manifest
from tandem.cli.main import app
from tandem.cli.registry import os_user
from tandem.errors import Conflict, InvalidRequest
from tandem.registry.registry import Registry
from tests.integration.registry_backends import Backend, make_bundle

pytestmark = pytest.mark.integration


def cli(*args: object, env: dict[str, str], ok: bool = True) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args], env={**env, "COLUMNS": "200"})
    if ok and result.exit_code != 0:
        raise AssertionError(f"tandem {' '.join(map(str, args))} failed: {result.output}") from result.exception
    return result


def cli_json(*args: object, env: dict[str, str]) -> Any:
    return json.loads(cli(*args, "--json", env=env).stdout)


@pytest.fixture()
def home(tmp_path) -> tuple[Backend, Path, Path]:
    return Backend("sqlite", tmp_path / "home", None), make_bundle(tmp_path / "v1", seed=b"one"), make_bundle(tmp_path / "v2", seed=b"two")


def test_versions_name_lists_as_before_and_the_group_archives_and_deletes(home):
    db, b1, b2 = home
    env = db.env()
    assert cli_json("push", b1, "--by", "ci-job-7", env=env)["pushed_by"] == "ci-job-7"
    assert cli_json("push", b2, env=env)["pushed_by"] == os_user()  # who runs it, by default
    # `tandem versions NAME` reads as it did before `versions` had commands, options before or after the name.
    for args in (("versions", "faces"), ("versions", "--json", "faces"), ("versions", "list", "faces")):
        listed = cli_json(*args, env=env)
        assert [(v["version"], v["archived"]) for v in listed] == [(1, None), (2, None)], args
    assert (listed[0]["lineage"]["pushed_by"], listed[0]["lineage"]["git_commit"]) == ("ci-job-7", None)
    assert "ci-job-7" in cli("versions", "faces", env=env).stdout

    archived = cli_json("versions", "archive", "faces", "1", env=env)
    assert archived["version"] == 1 and archived["archived"] is not None
    assert "archived 2" in cli("versions", "faces", env=env).stdout  # the status column, with its date
    refused = cli("alias", "faces", "production", "1", env=env, ok=False)
    assert isinstance(refused.exception, Conflict) and "tandem versions unarchive faces 1" in str(refused.exception)
    stored = cli_json("info", "faces:1", env=env)["stored"]  # an archived version can still be inspected
    assert (stored["version"], stored["pushed_by"], stored["archived"]) == (1, "ci-job-7", archived["archived"])
    shown = " ".join(cli("info", "faces:1", env=env).stdout.split())
    assert "pushed" in shown and "by ci-job-7" in shown and "restore it with `tandem versions unarchive faces 1`" in shown
    assert "can be served" in cli("versions", "unarchive", "faces", "1", env=env).stdout

    no_terminal = cli("versions", "delete", "faces", "2", env=env, ok=False)
    assert isinstance(no_terminal.exception, InvalidRequest) and "add --yes" in str(no_terminal.exception)
    assert cli_json("versions", "delete", "faces", "2", "--yes", env=env)["deleted"] is True
    assert [v["version"] for v in cli_json("versions", "faces", env=env)] == [1]
    dry = cli_json("gc", "--min-age", "0", "--dry-run", env=env)
    assert (dry["dry_run"], dry["objects"]) == (True, 3)  # v2's manifest and its two model files
    assert cli_json("gc", "--min-age", "0", env=env)["objects"] == 3
    kept = " ".join(cli("gc", env=env).stdout.split())
    assert kept.startswith("removed 0 unreferenced object(s)")
    assert cli_json("push", b2, env=env)["version"] == 3  # the deleted number is not given again


def test_what_people_typed_is_listed_as_written_never_as_markup(home):
    db, b1, _ = home
    env = db.env()
    cli("push", b1, "--by", "[/]ci [bold]job", env=env)
    assert "[/]ci [bold]job" in cli("versions", "faces", env=env).stdout
    cli("keys", "create", "--scope", "predict", "--label", "[/]ops [red]team", env=env)
    assert "[/]ops [red]team" in cli("keys", "list", env=env).stdout
    # A bundle's labels (folder names) and metric names, in `tandem info`.
    manifest = Bundle.load(b1).manifest
    write_manifest(b1, manifest.model_copy(update={"labels": ["[/]a", "[bold]b"], "metrics": {"[/]top1": 0.5}}))
    shown = cli("info", b1, env=env).stdout
    assert "[/]a, [bold]b" in shown and "[/]top1" in shown


def test_delete_asks_first_in_a_terminal(home):
    db, b1, b2 = home
    with Registry.open(db.settings()) as reg:
        reg.push(b1)
        reg.push(b2)
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tandem", "versions", "delete", "faces", "2"],
                                stdin=secondary, stdout=subprocess.PIPE, stderr=secondary,
                                env={**os.environ, **db.env(), "COLUMNS": "200"})
        asked = b""
        deadline = time.monotonic() + 60
        while b"for good?" not in asked and time.monotonic() < deadline and proc.poll() is None:
            if select.select([primary], [], [], 1)[0]:
                asked += os.read(primary, 4096)
        os.write(primary, b"n\n")
        proc.communicate(timeout=60)
    finally:
        os.close(primary)
        os.close(secondary)
    assert b"Delete faces version 2" in asked and b"cannot be restored" in asked
    assert proc.returncode == 1
    with Registry.open(db.settings()) as reg:
        assert [v.version for v in reg.versions("faces")] == [1, 2]  # declined: nothing deleted
