"""Signing-key rotation with overlap, end to end: a real server and the real device SDK. Devices that trust only
the old key keep updating through a rotation — those that checked during the overlap and those that did not —
and a key slipped into an unsigned field, or vouched for by a forged endorsement, fools nobody."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tandem.device import ModelUpdater
from tandem.errors import SignatureError
from tandem.security.endorsement import endorse
from tandem.security.signing import PublicKey, SigningKey
from tests.integration.ota.server.helpers import Env, synced
from tests.integration.server.serving import Running

pytestmark = pytest.mark.integration

OVERLAP_S = 3  # long enough for a check inside it on a busy machine, short enough to wait out
ATTACKER = SigningKey.generate()


class Network(httpx.BaseTransport):
    """The real network, noting which key signed each check answer; ``tamper`` rewrites answers on the way."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.signers: list[str] = []
        self.tamper: Callable[[dict], dict] | None = None

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path != "/v1/ota/check" or response.status_code != 200:
            return response
        envelope = json.loads(response.read())
        if self.tamper is not None:
            envelope = self.tamper(envelope)
        self.signers.append(envelope["key_id"])
        return httpx.Response(200, headers={"content-type": "application/json"}, content=json.dumps(envelope).encode())


def device(server: Running, env: Env, store: Path, pinned: list[PublicKey], network: Network) -> ModelUpdater:
    return ModelUpdater(server.url, env.keys.device, "faces", trusted_keys=pinned, store_dir=store, transport=network,
                        app_version="2.4.0", platform="android", os_version="14", ram_mb=4096, timeout=30)


def inject_unsigned_keys(envelope: dict) -> dict:
    """A network in between adds the attacker's key: bare, and vouched for by the attacker itself."""
    now = datetime.now(UTC)
    bare = {"key_id": ATTACKER.public.key_id, "public_key": ATTACKER.public.to_b64(), "state": "next"}
    return {**envelope, "next_keys": [bare], "signing_keys": [bare],
            "endorsements": [*envelope.get("endorsements", []), endorse(ATTACKER, ATTACKER.public, now, now)]}


def resign_as(trusted_id: str) -> Callable[[dict], dict]:
    """The attacker signs the answer itself and forges the trusted key's endorsement of its own key."""
    def tamper(envelope: dict) -> dict:
        raw = base64.b64decode(envelope["payload"])
        now = datetime.now(UTC)
        forged = {**endorse(ATTACKER, ATTACKER.public, now, now), "key_id": trusted_id}
        return {"payload": envelope["payload"], "signature": base64.b64encode(ATTACKER.sign(raw)).decode(),
                "key_id": ATTACKER.public.key_id, "endorsements": [forged]}
    return tamper


def test_devices_that_trust_only_the_old_key_keep_updating_through_a_rotation(env, tmp_path):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        [old] = ota.keys.signing_keys()
    pinned = [PublicKey.from_b64(old.public_key)]  # what the app ships: the old key alone
    early, late, fooled = Network(), Network(), Network()
    with env.server() as server, server.client(env.keys.admin) as admin, \
            device(server, env, tmp_path / "early", pinned, early) as a, \
            device(server, env, tmp_path / "late", pinned, late) as b, \
            device(server, env, tmp_path / "fooled", pinned, fooled) as c:
        synced(server)
        assert a.update().version == 1 and b.update().version == 1

        with env.ota() as ota:
            nxt = ota.keys.rotate_signing_key(overlap=timedelta(seconds=OVERLAP_S))
        synced(server)
        listed = {k["key_id"]: k for k in admin.get("/v1/ota/signing-keys").json()["keys"]}
        assert (listed[nxt.key_id]["state"], listed[old.key_id]["state"]) == ("next", "current")
        # During the overlap the old key signs, and its answers teach the next key (device a checks; b does not).
        assert a.check() is None  # a signed "stay": v1 is what it should run
        assert early.signers[-1] == old.key_id, "the check came after the overlap: raise OVERLAP_S"
        assert set(a.trusted) == {old.key_id, nxt.key_id} and set(b.trusted) == {old.key_id}
        assert json.loads((tmp_path / "early" / "trust.json").read_text())["learned"][nxt.key_id]["endorsed_by"] \
            == old.key_id

        with env.ota() as ota:
            ota.releases.release("faces", 2)
        time.sleep(max(0.0, (nxt.activates - datetime.now(UTC)).total_seconds()))
        synced(server)
        # After the switch the new key signs (no scheduler: the server promoted it when it next signed or polled).
        assert a.update().version == 2 and early.signers[-1] == nxt.key_id
        # Device b missed the whole overlap: it follows through the old key's endorsement of the new one.
        assert b.update().version == 2 and late.signers[-1] == nxt.key_id
        assert set(b.trusted) == {old.key_id, nxt.key_id}

        # A key in an unsigned field, or vouched for only by itself, is not learned...
        fooled.tamper = inject_unsigned_keys
        assert c.update().version == 2
        assert set(c.trusted) == {old.key_id, nxt.key_id}
        # ...and an answer the attacker signs, with a forged endorsement "by" the old key, is refused.
        fooled.tamper = resign_as(old.key_id)
        with pytest.raises(SignatureError, match="signature does not match"):
            c.check()
        assert ATTACKER.public.key_id not in c.trusted and c.installed_version() == 2

        # The old key retired: devices are told, in signed answers, to drop it (and keep the key that told them).
        with env.ota() as ota:
            ota.keys.retire_signing_key(old.key_id)
        synced(server)
        assert a.check() is None
        assert set(a.trusted) == {nxt.key_id}
