"""Model scopes on device keys (docs/ota.md §0): a device registered with a key that names models (or
apps) sees those and nothing else over the air. Another model answers exactly as a model that does not
exist (404, the same words), on every route: check, data key, report, downloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tandem.bundle import Bundle, write_manifest
from tandem.errors import InvalidRequest
from tandem.registry.ota.devices import Devices
from tandem.registry.records import ModelScope
from tandem.registry.registry import Registry
from tests.integration.cli import tandem_json
from tests.integration.ota.server.helpers import DeviceSide, synced
from tests.integration.registry_backends import Backend
from tests.integration.server.serving import running

pytestmark = pytest.mark.integration


def renamed(src: Path, dst: Path, name: str, apps: dict | None = None) -> Path:
    """A copy of bundle ``src`` as model ``name`` (and declaring ``apps``)."""
    shutil.copytree(src, dst)
    manifest = Bundle.load(dst).manifest.model_copy(update={"name": name, "apps": apps or {}})
    write_manifest(dst, manifest)
    return dst


def register(server, key: str) -> DeviceSide:
    with server.client(key) as http:
        r = http.post("/v1/devices")
    assert r.status_code == 201, r.text
    return DeviceSide(server, r.json()["credential"])


def same_as_unknown(r, unknown, name: str) -> None:
    """``r`` answers as ``unknown`` (about a model that does not exist) did: status and words."""
    assert r.status_code == unknown.status_code == 404, r.text
    assert r.json()["error"] == unknown.json()["error"].replace("nosuch", name)


def test_a_scoped_device_sees_only_its_models(env, ota_bundles, tmp_path):
    with Registry.open(env.settings) as reg:
        reg.push(renamed(ota_bundles[0], tmp_path / "secret", "secret"))
        reg.push(renamed(ota_bundles[0], tmp_path / "shop", "shopmodel", {"shop": {"note": "an app's model"}}))
        scoped, info = reg.create_key("device", "scoped", ModelScope(("faces",), ("shop",)))
    assert info.model_scope == ModelScope(("faces",), ("shop",))
    with env.ota() as ota:
        for name in ("faces", "secret", "shopmodel"):
            ota.releases.release(name, 1)
    with running(env.settings) as server:
        synced(server)
        me = register(server, scoped)
        anyone = DeviceSide(server, env.keys.registered)  # enrolled with the unscoped fleet key
        admin = DeviceSide(server, env.keys.admin)
        try:
            assert me.check(None)["model"] == "faces"  # named by the key
            assert me.check_raw(None, model="shopmodel").status_code == 200  # its manifest lists app shop
            assert me.check_raw(None, model="secret").status_code == 404
            assert anyone.check_raw(None, model="secret").status_code == 200  # it exists, and others see it

            unknown = {route: me.http.post(route, json={"model": "nosuch", "version": 1})
                       for route in ("/v1/ota/check", "/v1/ota/keys", "/v1/ota/report")}
            for route, first in unknown.items():
                for channel in ("production", "beta"):  # nor does a channel question tell it apart
                    r = me.http.post(route, json={"model": "secret", "version": 1, "channel": channel})
                    same_as_unknown(r, first, "secret")

            # Its files too: a URL another device was given is no object at all for this one.
            payload = admin.check("someone", None, model="secret")
            key = admin.data_key("someone", 1, model="secret")
            for name, entry in payload["files"].items():
                r = me.http.get(entry["url"])
                assert r.status_code == 404 and "no downloadable object" in r.json()["error"], name
                assert anyone.download(entry, key)
            faces = me.check(None)
            assert me.http.get(faces["files"]["manifest.json"]["url"]).status_code == 200
        finally:
            for side in (me, anyone, admin):
                side.close()
    with Registry.open(env.settings) as reg:
        listed = {d.enrolled_by: d for d in Devices(reg).registered()}
    assert listed[info.key_id].model_scope == ModelScope(("faces",), ("shop",))  # inherited at registration


def test_only_device_keys_take_a_model_scope(env):
    with Registry.open(env.settings) as reg:
        for scope in ("predict", "admin"):
            with pytest.raises(InvalidRequest, match="has no model scope"):
                reg.create_key(scope, "x", ModelScope(("faces",)))
        with pytest.raises(InvalidRequest, match="is not one"):
            reg.create_key("device", "x", ModelScope(("../faces",)))
        _, info = reg.create_key("device", "x", ModelScope(("faces", "faces"), ("b", "a")))
    assert info.model_scope == ModelScope(("faces",), ("a", "b"))


def test_keys_create_names_models_and_apps(tmp_path):
    env = Backend("sqlite", tmp_path / "home", None).env()
    made = tandem_json("keys", "create", "--scope", "device", "--model", "faces", "--model", "cats", "--app",
                       "celebmatch", env=env)
    assert made["model_scope"] == {"models": ["cats", "faces"], "apps": ["celebmatch"]}
    listed = {k["key_id"]: k for k in tandem_json("keys", "list", env=env)}
    assert listed[made["key_id"]]["model_scope"]["apps"] == ["celebmatch"]
    plain = tandem_json("keys", "create", "--scope", "device", env=env)
    assert plain["model_scope"] == {"models": [], "apps": []}
