"""A key's own rate limit and expiry in the registry, on a real SQLite file and the real PostgreSQL
server: stored, listed, changed, refused when they make no sense; an expired key's record still comes
back from verify (so the server can say why it refuses it); keys from before the columns existed keep
working with the server's defaults. And `tandem keys create|update|list` with them, in a subprocess."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tandem.errors import Conflict, InvalidRequest, NotFound
from tandem.registry import migrate
from tandem.registry.db import Database
from tandem.registry.registry import Registry
from tandem.security import apikeys
from tests.integration.cli import tandem, tandem_json
from tests.integration.registry_backends import Backend, backend

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Backend:
    with backend(request.param, tmp_path / "home") as b:
        yield b


@pytest.fixture()
def reg(db):
    with Registry.open(db.settings()) as r:
        yield r


def test_a_keys_own_limits_and_expiry_are_stored_and_listed(reg):
    expires = datetime.now(UTC).replace(microsecond=123456) + timedelta(days=30)
    token, info = reg.create_key("predict", "limited", rate_per_s=5, burst=5, expires=expires)
    assert (info.rate_per_s, info.burst, info.expires) == (5.0, 5, expires)
    assert reg.verify_key(token) == info and reg.list_keys() == [info]
    assert reg.list_keys()[0].expires.tzinfo is not None  # aware UTC on both databases
    # A rate alone: two seconds' worth at once; a burst alone: the server's default rate.
    assert reg.create_key("predict", rate_per_s=2.5)[1].burst == 5
    assert reg.create_key("device", burst=9)[1].rate_per_s is None
    plain = reg.create_key("admin")[1]
    assert (plain.rate_per_s, plain.burst, plain.expires) == (None, None, None)
    for bad, says in (({"rate_per_s": 0}, "rate 0 is not one"), ({"burst": 0}, "burst 0 is not one"),
                      ({"expires": datetime.now(UTC) - timedelta(seconds=1)}, "has already passed"),
                      ({"expires": datetime(2030, 1, 1)}, "names no time zone")):
        with pytest.raises(InvalidRequest, match=says):
            reg.create_key("predict", **bad)
    assert len(reg.list_keys()) == 4  # nothing stored by a refused create


def test_an_expired_keys_record_comes_back_marked_expired(reg):
    token, info = reg.create_key("device", expires=datetime.now(UTC) + timedelta(seconds=0.5))
    assert not reg.verify_key(token).expired(datetime.now(UTC))
    time.sleep(max(0.0, (info.expires - datetime.now(UTC)).total_seconds()) + 0.01)
    got = reg.verify_key(token)
    assert got is not None and got.expired(datetime.now(UTC)) and got.expires == info.expires
    # A wrong secret for that key is still nothing at all.
    assert reg.verify_key(f"tdm_{info.key_id}_{'A' * 43}") is None
    with pytest.raises(Conflict, match=f"key {info.key_id} expired at .* UTC; create a new one with `tandem keys create`"):
        reg.update_key(info.key_id, expires=datetime.now(UTC) + timedelta(days=1))  # expired stays expired


def test_update_changes_a_live_keys_limits_and_expiry(reg):
    _, info = reg.create_key("predict", "app", rate_per_s=5, burst=5)
    later = datetime.now(UTC) + timedelta(days=7)
    assert (reg.update_key(info.key_id, burst=20).burst, reg.list_keys()[0].rate_per_s) == (20, 5.0)
    changed = reg.update_key(info.key_id, rate_per_s=50, expires=later)
    assert (changed.rate_per_s, changed.burst, changed.expires) == (50.0, 100, later)
    back = reg.update_key(info.key_id, default_limits=True, never_expires=True)
    assert (back.rate_per_s, back.burst, back.expires) == (None, None, None) and reg.list_keys() == [back]
    for kw, says in (({}, "nothing to change"), ({"rate_per_s": 1, "default_limits": True}, "not both"),
                     ({"expires": later, "never_expires": True}, "not both"), ({"rate_per_s": -1}, "is not one"),
                     ({"expires": datetime.now(UTC)}, "has already passed")):
        with pytest.raises(InvalidRequest, match=says):
            reg.update_key(info.key_id, **kw)
    with pytest.raises(NotFound, match="no API key with id 'nope'"):
        reg.update_key("nope", burst=1)
    reg.revoke_key(info.key_id)
    with pytest.raises(Conflict, match=f"key {info.key_id} is revoked; create a new one"):
        reg.update_key(info.key_id, burst=1)
    assert reg.list_keys()[0].burst is None  # refused changes change nothing


def test_keys_from_before_limits_existed_keep_working_with_the_defaults(db):
    """A registry at 0006 (no limits, no expiry) with a key in it, opened by this Tandem: upgraded in place."""
    from alembic import command

    database = Database(db.settings().registry_url)
    try:
        cfg = migrate.alembic_config()
        with database.write_connection() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0006")
        token, parsed = apikeys.new_token()
        with database.write_connection() as conn:
            conn.execute(text("INSERT INTO api_keys (key_id, secret_hash, scope, label, created) "
                              "VALUES (:k, :h, 'predict', 'old', :c)"),
                         {"k": parsed.key_id, "h": apikeys.hash_secret(parsed.secret), "c": datetime.now(UTC)})
    finally:
        database.close()
    with Registry.open(db.settings()) as reg:
        assert migrate.current(reg.db) == migrate.HEAD
        info = reg.verify_key(token)
        assert info is not None and (info.label, info.rate_per_s, info.burst, info.expires) == ("old", None, None, None)


def test_the_cli_creates_updates_and_lists_limits_and_expiry(tmp_path):
    env = {"TANDEM_HOME": str(tmp_path / "home"), "TANDEM_DATABASE_URL": ""}
    made = tandem_json("keys", "create", "--scope", "predict", "--rate", "5", "--burst", "5", "--expires", "30d",
                       env=env)
    assert (made["rate_per_s"], made["burst"]) == (5.0, 5) and made["key"].startswith(f"tdm_{made['key_id']}_")
    in_30_days = datetime.fromisoformat(made["expires"]) - datetime.now(UTC)
    assert timedelta(days=29, hours=23) < in_30_days <= timedelta(days=30)
    refused = tandem("keys", "create", "--scope", "predict", "--expires", "yesterday", env=env, ok=False)
    assert refused.returncode == InvalidRequest.exit_code
    assert "expiry 'yesterday' is not one: give a duration from now (90m, 12h, 30d" in " ".join(refused.stderr.split())
    changed = tandem_json("keys", "update", made["key_id"], "--rate", "0.5", "--never-expires", env=env)
    assert (changed["rate_per_s"], changed["burst"], changed["expires"]) == (0.5, 1, None)
    listed = tandem("keys", "list", env=env).stdout
    assert all(word in listed for word in ("rate/s", "burst", "expires", "0.5", "never"))
