"""The browser app as a device (docs/browser.md): it registers once with the fleet's device key,
keeps the per-device credential in IndexedDB (never in the URL or localStorage), asks for payload
schema 2 and checks what the Python SDK checks (device id, expiry, decision, signature), and shows
how stale its last signed answer is. Real server, real Chromium."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.integration.cli import tandem_json
from tests.integration.web.test_browser_app import model_status

pytestmark = [pytest.mark.integration, pytest.mark.redteam("browser")]

REGISTRATION = "() => window.tandem.updater().registration()"
LAST_ANSWER = "() => window.tandem.updater().lastSignedAnswer()"


def another_devices_answer(server, version: int | None = None) -> dict:
    """A genuine signed answer, issued by the server to another registered device."""
    with httpx.Client(base_url=server.url) as http:
        enrol = http.post("/v1/devices", headers={"authorization": f"Bearer {server.device_key}"})
        assert enrol.status_code == 201, enrol.text
        r = http.post("/v1/ota/check", headers={"authorization": f"Bearer {enrol.json()['credential']}"},
                      json={"model": "faces", "version": version, "schema": 2, "platform": "web", "app_version": "1.0.0"})
        assert r.status_code == 200, r.text
        return r.json()


def test_the_page_registers_once_and_keeps_its_credential_in_indexeddb(web_server, browser):
    context = browser.new_context()
    page = context.new_page()
    sent: list[tuple[str, str]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization", ""))))
    try:
        web_server.open(page)
        status = model_status(page, "works offline")
        assert re.search(r"server's last signed answer: \d+ s ago", status), status
        me = page.evaluate(REGISTRATION)
        assert re.fullmatch(r"[0-9a-f]{20}", me["device_id"])
        assert me["credential"].startswith(f"tdd_{me['device_id']}_")
        # The credential is in IndexedDB only: not in the address, not in localStorage.
        assert "tdd_" not in page.url
        kept = page.evaluate("() => Object.values(localStorage).join(' ')")
        assert "tdd_" not in kept and web_server.device_key in kept  # the fleet key the user gave stays a setting
        # The fleet key went to POST /v1/devices alone; every OTA call carried the device's own credential.
        enrolled = [a for u, a in sent if u.endswith("/v1/devices")]
        assert enrolled == [f"Bearer {web_server.device_key}"]
        ota = [a for u, a in sent if "/v1/ota/" in u]
        assert ota and set(ota) == {f"Bearer {me['credential']}"}
        answer = page.evaluate(LAST_ANSWER)
        assert (answer["action"], answer["reason"], answer["version"]) == ("install", "release", 1)

        # The server knows it as a device; a reload registers nothing new and gets a signed "stay".
        listed = tandem_json("devices", "list", env=web_server.env)
        assert me["device_id"] in {d["device_id"] for d in listed}
        sent.clear()
        page.reload()
        assert "from this browser's cache" in model_status(page, "works offline")
        assert not [u for u, _ in sent if u.endswith("/v1/devices")]
        assert page.evaluate(REGISTRATION)["device_id"] == me["device_id"]
        stay = page.evaluate(LAST_ANSWER)
        assert (stay["action"], stay["reason"], stay["version"]) == ("stay", "current", 1)
    finally:
        context.close()


def test_the_page_refuses_another_devices_answer_and_shows_a_freeze(web_server, browser):
    context = browser.new_context()
    page = context.new_page()
    try:
        web_server.open(page)
        model_status(page, "works offline")
        signed = page.evaluate(LAST_ANSWER)

        # A genuine, signed answer meant for another device, replayed to this one: refused.
        replay = another_devices_answer(web_server)
        page.route("**/v1/ota/check", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                  body=json.dumps(replay)))
        page.reload()
        status = model_status(page, "not available on this device")
        assert "was issued to device" in status and "not to this one" in status, status
        assert page.evaluate(LAST_ANSWER) == signed  # nothing of it was kept

        # Someone in between answers "nothing new", unsigned (a freeze): the cached model runs, and the
        # page says the answer is unsigned and how old the last signed one is (not refreshed by it).
        page.unroute("**/v1/ota/check")
        page.route("**/v1/ota/check", lambda route: route.fulfill(status=204))
        page.reload()
        status = model_status(page, "works offline")
        assert "an unsigned answer since, not trusted" in status, status
        assert page.evaluate(LAST_ANSWER) == signed
    finally:
        context.close()


CLAIMS = """async ([payload, patch, installed, lastSequence, nowShiftS]) => {
  const u = window.tandem.updater();
  const me = await u.deviceId();
  const p = { ...payload, device_id: me, ...patch };
  try {
    u._checkClaims(p, installed, me, lastSequence, Date.now() + nowShiftS * 1000);
    return "accepted";
  } catch (e) {
    return e.message;
  }
}"""


def test_the_page_checks_the_claims_the_python_sdk_checks(web_server, browser):
    """Each rule of tandem.device.payload.check_claims, on a genuine payload changed one field at a time."""
    context = browser.new_context()
    page = context.new_page()
    try:
        web_server.open(page)
        model_status(page, "works offline")
        envelope = another_devices_answer(web_server)
        payload = page.evaluate("(b) => JSON.parse(atob(b))", envelope["payload"])
        v1 = {"version": 1}

        def claims(patch: dict, installed: dict | None = None, last: int = 0, shift_s: float = 0) -> str:
            return page.evaluate(CLAIMS, [payload, patch, installed, last, shift_s])

        assert claims({}) == "accepted"
        assert "issued to device" in claims({"device_id": "0" * 20})
        assert "for model" in claims({"model": "other"})
        assert "for channel" in claims({"channel": "beta"})
        assert "payload schema 1 is not 2" in claims({"schema": 1})
        assert "expired" in claims({}, shift_s=2 * 3600)  # replayed two hours later (1 h lifetime, 5 min skew)
        assert claims({}, shift_s=3600 + 200) == "accepted"  # within the skew allowance
        assert "older than" in claims({}, last=payload["sequence"] + 1)  # an older sequence: a replay
        # A downgrade needs a rollback the server recorded; a stay must name what the device runs.
        v2 = {"version": 2}
        assert "without a rollback" in claims({"version": 1, "action": "install"}, installed=v2)
        assert "not a rollback or pin recorded" in claims({"version": 1, "action": "rollback",
                                                          "reason": "no_recorded_rollback"}, installed=v2)
        assert claims({"version": 1, "action": "rollback", "reason": "rolled_back"}, installed=v2) == "accepted"
        stay = {"action": "stay", "reason": "current", "files": {}, "version": 1}
        assert claims(stay, installed=v1) == "accepted"
        assert "says stay on version 1, but this browser runs 2" in claims(stay, installed=v2)
        assert "names no zone" in claims({"expires_at": "2099-01-01T00:00:00"})
    finally:
        context.close()
