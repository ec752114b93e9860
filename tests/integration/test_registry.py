"""The registry against a real SQLite file and the real PostgreSQL server, and with its artifacts in a
bucket of a real S3-compatible server (with PostgreSQL: servers on several machines): push, aliases,
keys, failures part way, gc, concurrent pushes from several processes, and the CLI in subprocesses."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from tandem.bundle import Bundle
from tandem.errors import BundleError, Conflict, InvalidRequest, NotFound, RegistryError
from tandem.registry import migrate
from tandem.registry.registry import Registry
from tandem.settings import Settings
from tests.integration.cli import tandem, tandem_json
from tests.integration.registry_backends import Backend, backend_fixture, make_bundle

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+s3"])
def db(request, tmp_path) -> Backend:
    with backend_fixture(request, tmp_path / "home") as b:
        yield b


class StoreWith:
    """The registry's own store (a folder or a bucket alike), with one of its methods wrapped by a test."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture()
def reg(db):
    with Registry.open(db.settings()) as r:
        yield r


def reg_settings(reg: Registry) -> Settings:
    """The settings ``reg`` was opened with (the OTA side's master key is a file under its home)."""
    return Settings(home=reg.home, database_url=reg.db.url.render_as_string(hide_password=False))


@pytest.fixture()
def bundles(tmp_path) -> tuple[Path, Path]:
    return make_bundle(tmp_path / "v1", seed=b"one"), make_bundle(tmp_path / "v2", seed=b"two")


def test_migrations_build_exactly_the_orm_schema(reg):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from tandem.registry.schema import Base

    assert ScriptDirectory.from_config(migrate.alembic_config()).get_current_head() == migrate.HEAD
    assert migrate.current(reg.db) == migrate.HEAD
    with reg.db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert reg.generation() == 0


def test_push_records_versions_and_models(reg, bundles):
    v1 = reg.push(bundles[0])
    v2 = reg.push(bundles[1])
    assert (v1.name, v1.version, v2.version) == ("faces", 1, 2)
    assert set(v1.files) == {"model.onnx", "model.int8.onnx", "extra/gallery.npz"}
    assert v1.files["extra/gallery.npz"] == v2.files["extra/gallery.npz"]  # same content, one object
    assert v1.files["model.onnx"] != v2.files["model.onnx"]
    assert v1.size == Bundle.load(bundles[0]).total_bytes
    assert [v.version for v in reg.versions("faces")] == [1, 2]
    assert reg.get("faces", 2) == reg.versions("faces")[1]
    [model] = reg.models()
    assert (model.name, model.versions, model.latest, model.aliases) == ("faces", 2, 2, {})
    assert reg.generation() == 2
    # The pushed bundle folder is untouched; the stored manifest carries the version number.
    assert Bundle.load(bundles[0]).manifest.version is None
    stored = Bundle.load(reg.bundle_dir("faces", 2))
    assert stored.manifest.version == 2 and stored.manifest.files == Bundle.load(bundles[1]).manifest.files


def test_aliases_resolve_and_roll_back(reg, bundles):
    for _ in range(3):
        reg.push(bundles[0])
    assert reg.resolve("faces", None).version == 3  # no production alias yet: the latest
    gen = reg.generation()
    a = reg.set_alias("faces", "production", 1)
    assert (a.alias, a.version, a.previous) == ("production", 1, None)
    assert reg.resolve("faces", None).version == 1
    a = reg.set_alias("faces", "production", 2)
    assert (a.version, a.previous) == (2, 1)
    a = reg.set_alias("faces", "production", 3)
    assert (a.version, a.previous) == (3, 2)
    assert reg.generation() == gen + 3
    assert reg.set_alias("faces", "production", 3).previous == 2  # no move: no history, no new generation
    assert reg.generation() == gen + 3
    reg.set_alias("faces", "beta", 3)

    assert reg.resolve("faces", "production").version == 3
    assert reg.resolve("faces", "2").version == 2 and reg.resolve("faces", 1).version == 1
    assert reg.resolve("faces", "latest").version == 3
    assert [v.aliases for v in reg.versions("faces")] == [(), (), ("beta", "production")]
    assert reg.models()[0].aliases == {"beta": 3, "production": 3}

    a = reg.rollback("faces", "production")
    assert (a.version, a.previous) == (2, 1)
    assert reg.resolve("faces", None).version == 2
    a = reg.rollback("faces", "production")
    assert (a.version, a.previous) == (1, None)
    with pytest.raises(Conflict, match="points at version 1, where it was first set: no earlier move is left"):
        reg.rollback("faces", "production")
    assert [(x.alias, x.version) for x in reg.aliases("faces")] == [("beta", 3), ("production", 1)]
    assert reg.generation() == gen + 6

    for bad in ("123", "Production", "latest", "", "a b", "x" * 65):
        with pytest.raises(InvalidRequest, match="alias"):
            reg.set_alias("faces", bad, 1)


def test_a_push_with_an_alias_moves_it_in_the_same_transaction(reg, bundles):
    """What a managed training does (POST /v1/trainings): the version and its alias appear together or not at all."""
    with pytest.raises(InvalidRequest, match="alias"):
        reg.push(bundles[0], alias="Production")
    assert reg.models() == []  # refused before anything was recorded
    v = reg.push(bundles[0], alias="production")
    assert v.aliases == ("production",) and reg.resolve("faces", None).version == 1
    gen = reg.generation()
    reg.push(bundles[1], alias="production")
    assert reg.resolve("faces", "production").version == 2
    assert reg.generation() == gen + 1  # one transaction: servers see the version and the move at once
    assert reg.rollback("faces", "production").version == 1  # recorded as any move is


def test_unknown_names_say_what_exists(reg, bundles):
    with pytest.raises(NotFound, match=r"no model named 'faces' in the registry \(models: none\)"):
        reg.resolve("faces", None)
    reg.push(bundles[0])
    reg.push(bundles[1])
    reg.set_alias("faces", "production", 2)
    with pytest.raises(NotFound, match=r"no model named 'nope' in the registry \(models: faces\)"):
        reg.versions("nope")
    with pytest.raises(NotFound, match=r"model faces has no version 7 \(versions: 1, 2\)"):
        reg.resolve("faces", 7)
    with pytest.raises(NotFound, match=r"model faces has no version 9 \(versions: 1, 2\)"):
        reg.set_alias("faces", "beta", 9)
    with pytest.raises(NotFound, match=r"model faces has no alias 'beta' \(aliases: production -> 2;"):
        reg.resolve("faces", "beta")
    with pytest.raises(NotFound, match="no alias 'staging'"):
        reg.rollback("faces", "staging")
    # Hostile references from a URL are a 404 like any other, never a database error.
    for name, ref in (("faces\x00", None), ("faces\n", None), ("x" * 500, None), ("faces", "9" * 30),
                      ("faces", 2**40), ("faces", "\u00b2"), ("faces", "beta\x00"), ("faces", "beta\n"), ("faces", 0)):
        with pytest.raises(NotFound):
            reg.resolve(name, ref)


def test_a_bundle_that_fails_verification_is_refused(reg, bundles):
    (bundles[0] / "model.onnx").write_bytes(b"changed after export")
    with pytest.raises(BundleError, match=r"model\.onnx"):
        reg.push(bundles[0])
    assert reg.models() == [] and reg.generation() == 0


def test_an_interrupted_push_leaves_no_visible_version(reg, db, bundles):
    reg.push(bundles[0])
    # A real failure inside the push's transaction, after the files went to the store.
    with reg.db.engine.begin() as c:
        if db.kind == "sqlite":
            c.execute(text("CREATE TRIGGER fail_push BEFORE INSERT ON versions "
                           "BEGIN SELECT RAISE(ABORT, 'injected failure before commit'); END"))
        else:
            c.execute(text("CREATE FUNCTION fail_push() RETURNS trigger LANGUAGE plpgsql AS "
                           "$$ BEGIN RAISE EXCEPTION 'injected failure before commit'; END $$"))
            c.execute(text("CREATE TRIGGER fail_push BEFORE INSERT ON versions FOR EACH ROW EXECUTE FUNCTION fail_push()"))
    with pytest.raises(RegistryError, match="injected failure before commit"):
        reg.push(bundles[1])
    assert [v.version for v in reg.versions("faces")] == [1]
    assert reg.generation() == 1
    # What is left are store objects no version refers to.
    for rel, entry in Bundle.load(bundles[1]).manifest.files.items():
        assert reg.store.exists(entry.sha256), rel
    with reg.db.engine.begin() as c:
        c.execute(text("DROP TRIGGER fail_push" + ("" if db.kind == "sqlite" else " ON versions")))
    assert reg.push(bundles[1]).version == 2


def test_concurrent_pushes_from_several_processes_get_distinct_versions(db, bundles):
    # Nothing has opened this registry yet: the processes also race to create its schema.
    n = 4
    env = {**os.environ, **db.env(), "COLUMNS": "200"}
    procs = [subprocess.Popen([sys.executable, "-m", "tandem", "push", str(bundles[i % 2]), "--force", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert sorted(json.loads(out)["version"] for out, _ in outs) == list(range(1, n + 1))
    with Registry.open(db.settings()) as reg:
        assert [v.version for v in reg.versions("faces")] == list(range(1, n + 1))
        assert reg.generation() == n
        for v in reg.versions("faces"):
            assert Bundle.load(reg.bundle_dir("faces", v.version)).manifest.version == v.version


def test_an_open_reader_does_not_block_a_writer(reg, db, bundles):
    # Server workers read while `tandem push` and `tandem alias` write (SQLite: WAL mode).
    if db.kind == "sqlite":
        with reg.db.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    reg.push(bundles[0])
    with Registry.open(db.settings()) as writer, reg.db.read() as s:
        assert s.execute(text("SELECT count(*) FROM versions")).scalar() == 1
        assert writer.push(bundles[1]).version == 2
        assert writer.set_alias("faces", "production", 2).version == 2
    assert reg.resolve("faces", None).version == 2 and reg.generation() == 3


def test_several_processes_materialise_one_bundle_folder_at_once(tmp_path, bundles):
    db = Backend("sqlite", tmp_path / "home", None)
    with Registry.open(db.settings()) as reg:
        reg.push(bundles[0])
    code = ("from tandem.registry.registry import Registry; from tandem.settings import Settings; "
            "print(Registry.open(Settings()).bundle_dir('faces', 1))")
    env = {**os.environ, **db.env()}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    [path] = {out.strip() for out, _ in outs}
    assert Bundle.load(path).manifest.version == 1
    assert not [p for p in Path(path).parent.iterdir() if p.name.startswith(".")]


def test_keys_create_verify_revoke(reg):
    token, info = reg.create_key("predict", "mobile app")
    assert token.startswith(f"tdm_{info.key_id}_") and len(token) >= 4 + 12 + 1 + 43
    assert (info.scope, info.label, info.revoked) == ("predict", "mobile app", None)
    assert reg.verify_key(token) == info
    admin_token, admin = reg.create_key("admin")
    assert reg.verify_key(admin_token).scope == "admin"

    secret = token.split("_", 2)[2]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    someone_elses_id = f"tdm_{admin.key_id}_{secret}"
    for bad in (tampered, someone_elses_id, token + "x", "", "Bearer " + token, token.replace("tdm_", "tdk_"),
                "tdm_zz_zz", f"tdm_{'0' * 12}_{secret}"):
        assert reg.verify_key(bad) is None, bad
    assert [k.key_id for k in reg.list_keys()] == [info.key_id, admin.key_id]

    revoked = reg.revoke_key(info.key_id)
    assert revoked.revoked is not None
    assert reg.verify_key(token) is None
    assert reg.revoke_key(info.key_id).revoked == revoked.revoked  # revoking again changes nothing
    assert reg.verify_key(admin_token) is not None
    with pytest.raises(NotFound, match="no API key with id 'nope'; `tandem keys list`"):
        reg.revoke_key("nope")
    with pytest.raises(InvalidRequest, match="scope 'root' is not one of predict, device, train, admin"):
        reg.create_key("root")
    # Only a hash of the secret is stored.
    with reg.db.engine.connect() as c:
        rows = c.execute(text("SELECT key_id, secret_hash FROM api_keys")).all()
    assert all(secret not in h and len(h) == 64 for _, h in rows)


def test_bundle_dir_is_built_once_from_hard_links_and_rebuilt_when_damaged(reg, bundles):
    v = reg.push(bundles[0])
    path = reg.bundle_dir("faces", 1)
    assert path == reg.resolve("faces", None).bundle_dir
    model = path / "model.onnx"
    assert os.path.samefile(model, reg.store.path(v.files["model.onnx"]))
    assert reg.bundle_dir("faces", 1) == path and os.path.samefile(path / "model.onnx", model)
    (path / "extra" / "gallery.npz").unlink()
    rebuilt = reg.bundle_dir("faces", 1)
    assert rebuilt == path and (path / "extra" / "gallery.npz").is_file()
    Bundle.load(rebuilt)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_the_cli_end_to_end_with_json(tmp_path, bundles):
    # On SQLite only, to keep the suite fast: the concurrent-push test runs the CLI on PostgreSQL too.
    db = Backend("sqlite", tmp_path / "home", None)
    env = db.env()
    assert tandem_json("models", env=env) == []
    pushed = tandem_json("push", bundles[0], env=env)
    assert (pushed["name"], pushed["version"]) == ("faces", 1)
    assert tandem_json("push", bundles[1], env=env)["version"] == 2
    again = tandem_json("push", bundles[0], env=env)  # the same bundle again: no copy stored
    assert (again["version"], again["identical_to_stored"]) == (1, True)
    assert "already holds this bundle" in " ".join(tandem("push", bundles[0], env=env).stdout.split())
    forced = tandem_json("push", bundles[0], "--force", env=env)
    assert (forced["version"], forced["identical_to_stored"]) == (3, False)
    assert tandem_json("alias", "faces", "production", "1", env=env)["version"] == 1
    moved = tandem_json("alias", "faces", "production", "2", env=env)
    assert (moved["version"], moved["previous"]) == (2, 1)
    tandem("alias", "faces", "production", "2", env=env)
    text = " ".join(tandem("rollback", "faces", "production", env=env).stdout.split())
    assert text == "faces:production rolled back from version 2 to version 1 (where it was first set: nothing earlier to roll back to)"
    refused = tandem("rollback", "faces", "production", env=env, ok=False)
    assert refused.returncode != 0 and "where it was first set" in " ".join(refused.stderr.split())
    [model] = tandem_json("models", env=env)
    assert model == {"name": "faces", "versions": 3, "latest": 3, "aliases": {"production": 1}}
    versions = tandem_json("versions", "faces", env=env)
    assert [(v["version"], v["aliases"]) for v in versions] == [(1, ["production"]), (2, []), (3, [])]
    # Lineage: where each version came from, as its manifest says, and when it was pushed.
    lineage = versions[0]["lineage"]
    assert (lineage["training"], lineage["metrics"]) == ({"data": "test bundle", "seed": 7, "epochs": 3},
                                                         {"test_top1_fp32": 0.5})
    assert {"fingerprint", "metrics", "created", "parent_version"} <= set(versions[0]["lineage"])
    assert versions[0]["lineage"]["pushed"] == versions[0]["created"]
    # `tandem info` takes a stored version as well as a folder.
    stored = tandem_json("info", "faces:production", env=env)
    assert (stored["name"], stored["stored"]["version"], stored["stored"]["aliases"]) == ("faces", 1, ["production"])
    assert "stored in the registry as faces version 2" in " ".join(tandem("info", "faces:2", env=env).stdout.split())
    assert "stored" not in tandem_json("info", bundles[0], env=env)  # a folder: its manifest only
    missing = tandem("info", "faces:9", env=env, ok=False)
    assert missing.returncode != 0 and "version 9" in missing.stderr

    created = tandem_json("keys", "create", "--scope", "device", "--label", "ci", env=env)
    assert created["scope"] == "device" and created["key"].startswith(f"tdm_{created['key_id']}_")
    human = tandem("keys", "create", "--scope", "predict", env=env)
    # The key alone on stdout, so that KEY=$(tandem keys create --scope predict) holds just the key (README).
    assert human.stdout.startswith("tdm_") and human.stdout.count("\n") == 1 and " " not in human.stdout
    assert "cannot be shown again" in human.stderr
    listed = tandem_json("keys", "list", env=env)
    assert [k["scope"] for k in listed] == ["device", "predict"] and "key" not in listed[0]
    assert tandem_json("keys", "revoke", created["key_id"], env=env)["revoked"] is not None
    with Registry.open(db.settings()) as reg:
        assert reg.verify_key(created["key"]) is None

    missing = tandem("versions", "nope", env=env, ok=False)
    assert missing.returncode == NotFound.exit_code and "no model named 'nope'" in missing.stderr
    table = tandem("models", env=env).stdout
    assert "faces" in table and "production → 1" in table


# --- version lifecycle: archive, delete, numbers never reused, gc, lineage (docs/registry.md) -------------


def test_an_archived_version_stays_listed_but_is_not_served_aliased_or_released(reg, bundles):
    from tandem.registry.ota import Ota

    for b in (*bundles, bundles[0]):
        reg.push(b)
    reg.set_alias("faces", "production", 2)
    with pytest.raises(Conflict, match=r"cannot archive faces version 2: alias production points at it .*"
                                       r"`tandem alias faces production VERSION`"):
        reg.archive("faces", 2)
    gen = reg.generation()
    archived = reg.archive("faces", 3)
    assert archived.archived is not None and reg.generation() == gen + 1
    assert reg.archive("faces", 3).archived == archived.archived and reg.generation() == gen + 1  # again: no change
    assert [(v.version, v.archived is not None) for v in reg.versions("faces")] == [(1, False), (2, False), (3, True)]
    assert reg.get("faces", 3).archived == archived.archived
    restore = r"faces version 3 is archived: .*restore it with `tandem versions unarchive faces 3`"
    with pytest.raises(NotFound, match=restore):  # what a server answers: 404
        reg.resolve("faces", 3)
    with pytest.raises(Conflict, match=restore):
        reg.set_alias("faces", "beta", 3)
    assert reg.resolve("faces", "latest").version == 2  # latest skips it
    assert reg.resolve("faces", 3, include_archived=True).version == 3  # `tandem info` may look at it
    [model] = reg.models()
    assert (model.versions, model.latest) == (3, 2)
    ota = Ota(reg, reg_settings(reg))
    with pytest.raises(Conflict, match=restore):
        ota.releases.release("faces", 3)
    with pytest.raises(Conflict, match=restore):
        ota.releases.pin("faces", "device-1", 3)
    # Rollback does not go back to an archived version either.
    reg.unarchive("faces", 3)
    reg.set_alias("faces", "beta", 3)
    reg.set_alias("faces", "beta", 1)
    reg.set_alias("faces", "production", 1)
    reg.archive("faces", 3)
    with pytest.raises(Conflict, match=restore):
        reg.rollback("faces", "beta")
    assert reg.resolve("faces", "beta").version == 1
    # A live release (or a pin) keeps a version in service.
    ota.releases.release("faces", 1, "beta")
    ota.releases.pin("faces", "device-1", 1)
    with pytest.raises(Conflict, match=r"it is released on channel beta \(active\): .*release-rollback faces "
                                       r"--channel beta.*1 device\(s\) are pinned to it \(device-1 on production"):
        reg.archive("faces", 1)
    # Unarchived, it is served again.
    gen = reg.generation()
    assert reg.unarchive("faces", 3).archived is None and reg.generation() == gen + 1
    assert reg.resolve("faces", 3).version == 3 and reg.resolve("faces", "latest").version == 3


def test_every_version_archived_says_so(reg, bundles):
    reg.push(bundles[0])
    reg.archive("faces", 1)
    with pytest.raises(NotFound, match=r"every version of model faces is archived \(1\); restore one with "
                                       r"`tandem versions unarchive faces VERSION`"):
        reg.resolve("faces", None)


def test_pushing_a_bundle_an_archived_version_holds_stores_a_new_version(reg, bundles):
    reg.push(bundles[0])
    assert reg.identical_version(bundles[0]).version == 1
    reg.archive("faces", 1)
    assert reg.identical_version(bundles[0]) is None


def test_deleting_the_newest_version_never_gives_its_number_again(reg, bundles):
    reg.push(bundles[0])
    v2 = reg.push(bundles[1])
    folder = reg.bundle_dir("faces", 2)
    gen = reg.generation()
    deleted = reg.delete_version("faces", 2)
    assert deleted == v2 and reg.generation() == gen + 1
    assert [v.version for v in reg.versions("faces")] == [1]
    assert not folder.exists()  # its bundle folder went with it
    with pytest.raises(NotFound, match=r"model faces has no version 2 \(versions: 1\)"):
        reg.resolve("faces", 2)
    assert reg.push(bundles[1]).version == 3  # not 2: that number meant another push
    reg.delete_version("faces", 3)
    reg.delete_version("faces", 1)
    assert reg.models()[0].versions == 0
    with pytest.raises(NotFound, match="model faces has no versions left: every version pushed was deleted"):
        reg.resolve("faces", None)
    assert reg.push(bundles[0]).version == 4
    with pytest.raises(NotFound, match=r"no version 2 \(versions: 4\)"):
        reg.delete_version("faces", 2)


def test_a_version_in_use_cannot_be_deleted(reg, bundles):
    from tandem.registry.ota import Ota

    for b in (*bundles, bundles[0]):
        reg.push(b)
    reg.set_alias("faces", "production", 1)
    reg.set_alias("faces", "beta", 1)
    with pytest.raises(Conflict, match=r"cannot delete faces version 1: aliases beta, production point at it"):
        reg.delete_version("faces", 1)
    ota = Ota(reg, reg_settings(reg))
    ota.releases.release("faces", 2, "beta")
    ota.releases.release("faces", 3, "beta")
    ota.releases.rollback("faces", "beta")  # 3 is rolled back: its record still sends devices back from it
    assert ota.keys.data_key("faces", 3)
    for number, state in ((2, "active"), (3, "rolled_back")):
        with pytest.raises(Conflict, match=rf"it is released on channel beta \({state}\): OTA keeps every release .*"
                                           rf"`tandem versions archive faces {number}`"):
            reg.delete_version("faces", number)
    assert [v.version for v in reg.versions("faces")] == [1, 2, 3]
    # What OTA recorded only for a version never released (its data key, encrypted files) goes with it.
    reg.push(bundles[1])
    ota.objects.prepare("faces", 4)
    ota.releases.pin("faces", "device-9", 4, "beta")
    with pytest.raises(Conflict, match=r"pinned to it \(device-9 on beta; unpin them first: `tandem unpin faces "
                                       r"device-9 --channel beta`\)"):
        reg.delete_version("faces", 4)
    ota.releases.unpin("faces", "device-9", "beta")
    reg.delete_version("faces", 4)
    with reg.db.engine.connect() as c:
        for table in ("data_keys", "ota_objects"):
            assert c.execute(text(f"SELECT count(*) FROM {table} WHERE version = 4")).scalar() == 0, table
        assert c.execute(text("SELECT count(*) FROM data_keys WHERE version = 3")).scalar() == 1


def test_deleting_a_version_takes_it_out_of_alias_history(reg, bundles):
    for b in (*bundles, bundles[0]):
        reg.push(b)
    for v in (1, 2, 3):
        reg.set_alias("faces", "production", v)
    reg.delete_version("faces", 2)
    assert reg.aliases("faces")[0].previous == 1  # rollback skips the deleted version
    assert reg.rollback("faces", "production").version == 1
    # Moves to one version that now follow each other are one: rollback has nothing to undo.
    reg.set_alias("faces", "beta", 1)
    reg.set_alias("faces", "beta", 3)
    reg.set_alias("faces", "beta", 1)
    reg.delete_version("faces", 3)
    assert reg.aliases("faces")[0].previous is None
    with pytest.raises(Conflict, match="where it was first set"):
        reg.rollback("faces", "beta")


def test_gc_removes_what_nothing_refers_to_and_keeps_the_rest(reg, bundles, tmp_path):
    from tandem.registry.ota import Ota

    v1 = reg.push(bundles[0])
    v2 = reg.push(bundles[1])
    reg.archive("faces", 1)  # archived versions keep their files
    made = Ota(reg, reg_settings(reg)).objects.prepare("faces", 2)  # encrypted copies for devices
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"left by a push that stopped before its transaction")
    orphan_sha = reg.store.put_file(orphan)
    v3 = reg.push(make_bundle(tmp_path / "v3", seed=b"three"))
    reg.bundle_dir("faces", 3)
    reg.delete_version("faces", 3)
    stray = reg.folders.root / "faces" / "9"  # as if a crash came between a delete's commit and its folder's removal
    shutil.copytree(reg.bundle_dir("faces", 2), stray)
    only_v3 = {v3.manifest_sha256, v3.files["model.onnx"], v3.files["model.int8.onnx"], orphan_sha}
    gone_bytes = sum(reg.store.size(sha) for sha in only_v3)

    young = reg.gc()  # everything above is younger than the default hour
    assert (young.objects, young.kept_young, young.kept_young_bytes) == (0, 4, gone_bytes)
    assert young.folders == 1 and stray.exists() is False
    gen = reg.generation()
    dry = reg.gc(min_age_s=0, dry_run=True)
    assert (dry.dry_run, dry.objects, dry.bytes) == (True, 4, gone_bytes)
    assert all(reg.store.exists(sha) for sha in only_v3)
    done = reg.gc(min_age_s=0)
    assert (done.objects, done.bytes, done.kept_young) == (4, gone_bytes, 0)
    assert not any(reg.store.exists(sha) for sha in only_v3)
    kept = {*v1.files.values(), v1.manifest_sha256, *v2.files.values(), v2.manifest_sha256, *(o.sha256 for o in made)}
    assert all(reg.store.exists(sha) for sha in kept) and done.referenced == len(kept)
    Bundle.load(reg.bundle_dir("faces", 2))
    Bundle.load(reg.resolve("faces", 1, include_archived=True).bundle_dir)
    assert reg.generation() == gen  # nothing a server serves changed
    assert reg.gc(min_age_s=0).objects == 0


def test_gc_during_a_push_loses_none_of_its_objects(reg, bundles):
    reg.push(bundles[0])
    reg.push(bundles[1])
    reg.delete_version("faces", 2)  # v2's model files: stored, referenced by nothing
    reports = []

    class GcBeforeCommit(StoreWith):
        """gc runs (taking everything nothing refers to, whatever its age) once the push has stored its
        files and before it records its version: the moment a push is most exposed."""

        armed = True

        def put_file(self, path, expected_sha256=None):
            sha = self.inner.put_file(path, expected_sha256)
            if self.armed and path.name == "model.onnx":  # the last file pushed (sorted)
                self.armed = False
                reports.append(Registry(reg.db, reg.store, reg.home).gc(min_age_s=0))
            return sha

    store = GcBeforeCommit(reg.store)
    pusher = Registry(reg.db, store, reg.home)
    again = pusher.push(bundles[1])  # v2's files again: already stored, so not even written anew
    [report] = reports
    assert report.objects == 3  # v2's manifest and both model files were taken ...
    assert again.version == 3
    assert Bundle.load(reg.bundle_dir("faces", 3)).manifest.version == 3  # ... and stored again before the commit
    fresh = make_bundle(bundles[1].parent / "fresh", seed=b"fresh")
    reports.clear()
    store.armed = True
    assert pusher.push(fresh).version == 4  # new files, gc with no grace period at all: the same
    assert reports[0].objects == 2
    Bundle.load(reg.bundle_dir("faces", 4))


def test_gc_while_an_ota_object_is_made_loses_nothing(reg, bundles):
    from tandem.registry.ota import Ota

    reg.push(bundles[0])
    reports = []

    class GcBeforeRecord(StoreWith):
        """gc runs once an encrypted file is stored and before its row is recorded."""

        armed = True

        def put_bytes(self, data):
            sha = self.inner.put_bytes(data)
            if self.armed:
                self.armed = False
                reports.append(Registry(reg.db, reg.store, reg.home).gc(min_age_s=0))
            return sha

    maker = Registry(reg.db, GcBeforeRecord(reg.store), reg.home)
    made = Ota(maker, reg_settings(reg)).objects.prepare("faces", 1)
    assert reports[0].objects == 1  # the encrypted file, referenced by nothing yet, was taken ...
    assert made and all(reg.store.exists(o.sha256) for o in made)  # ... and stored again before its row
    assert reg.gc(min_age_s=0).objects == 0


def test_gc_does_not_take_what_a_version_committed_meanwhile_refers_to(reg, bundles):
    reg.push(bundles[0])
    v2 = reg.push(bundles[1])
    reg.delete_version("faces", 2)

    class PushAfterListing(StoreWith):
        """A push commits a version naming the objects gc has just listed as unreferenced."""

        def objects(self):
            yield from self.inner.objects()
            self.pushed = reg.push(bundles[1])

    store = PushAfterListing(reg.store)
    report = Registry(reg.db, store, reg.home).gc(min_age_s=0)
    assert store.pushed.version == 3 and store.pushed.files == v2.files
    assert report.objects == 1  # v2's manifest only (v3's names version 3)
    Bundle.load(reg.bundle_dir("faces", 3))


def test_gc_refuses_a_store_that_belongs_to_another_database(db, bundles, tmp_path):
    with Registry.open(db.settings()) as reg:
        reg.push(bundles[0])
    other_db = dataclasses.replace(db, kind="sqlite", url=None if db.kind != "sqlite" else f"sqlite:///{tmp_path / 'other.db'}")
    with Registry.open(other_db.settings()) as other, \
            pytest.raises(Conflict, match=r"holds no models, but the artifact store .* holds objects"):
        other.gc(min_age_s=0)
    with Registry.open(db.settings()) as reg:
        assert Bundle.load(reg.bundle_dir("faces", 1)).manifest.version == 1


def test_lineage_says_who_pushed_and_from_which_commit(reg, bundles, tmp_path):
    from tandem.bundle import write_manifest

    v1 = reg.push(bundles[0], pushed_by="alice@example.com")
    assert v1.pushed_by == "alice@example.com" and reg.get("faces", 1).pushed_by == "alice@example.com"
    lineage = reg.lineage(v1)
    assert (lineage["pushed_by"], lineage["git_commit"], lineage["git_dirty"]) == ("alice@example.com", None, None)
    b = Bundle.load(bundles[1])
    code = {"git_commit": "a" * 40, "git_dirty": True}
    write_manifest(bundles[1], b.manifest.model_copy(update={"training": {**b.manifest.training, "code": code}}))
    v2 = reg.push(bundles[1])
    assert v2.pushed_by is None
    assert {k: reg.lineage(v2)[k] for k in ("git_commit", "git_dirty")} == code
    for bad in ("", "   ", "a\nb", "x" * 201):
        with pytest.raises(InvalidRequest, match="is not a name"):
            reg.push(bundles[0], pushed_by=bad)


def test_a_0005_registry_upgrades_keeping_its_versions(db, bundles):
    from alembic import command

    from tandem.registry.db import Database

    database = Database(db.settings().registry.registry_url)
    try:
        cfg = migrate.alembic_config()
        with database.write_connection() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0005")
        with database.write_connection() as conn:
            conn.execute(text("INSERT INTO models (id, name, created) VALUES (1, 'faces', CURRENT_TIMESTAMP)"))
            for number in (1, 3):
                conn.execute(text("INSERT INTO versions (model_id, number, manifest_sha256, size, created, files) "
                                  "VALUES (1, :n, :sha, 10, CURRENT_TIMESTAMP, '{}')"), {"n": number, "sha": "0" * 64})
    finally:
        database.close()
    with Registry.open(db.settings()) as reg:
        assert migrate.current(reg.db) == migrate.HEAD
        with reg.db.engine.connect() as c:
            assert c.execute(text("SELECT last_version FROM models WHERE name = 'faces'")).scalar() == 3
        assert [(v.version, v.archived, v.pushed_by) for v in reg.versions("faces")] == [(1, None, None), (3, None, None)]
        assert reg.push(bundles[0]).version == 4
        reg.archive("faces", 1)
        with reg.db.write_connection() as conn:  # and back down, keeping the versions (not what is new)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0005")
    with Registry.open(db.settings()) as reg:
        assert [(v.version, v.archived) for v in reg.versions("faces")] == [(1, None), (3, None), (4, None)]
