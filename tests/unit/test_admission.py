"""The in-flight limit's shares (server/admission.py), driven through ASGI: each admitted request is held
in the app until the test lets it go, so what is in flight is exactly what the test says."""

from __future__ import annotations

import asyncio

import orjson

from tandem.server.admission import InFlightLimit, ota_share

HANG_GUARD_S = 30


class Held:
    """An ASGI app that answers 200 once ``release`` is set, counting the requests inside it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.inside = 0

    async def __call__(self, scope, receive, send):
        self.inside += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(limit: InFlightLimit, path: str, client: str = "10.0.0.1") -> tuple[int, dict[bytes, bytes], dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "client": (client, 1234), "method": "GET", "headers": []}
    await limit(scope, receive, send)
    body = sent[1]["body"]
    return sent[0]["status"], dict(sent[0]["headers"]), orjson.loads(body) if sent[0]["status"] != 200 else {}


def test_ota_share_defaults_to_a_quarter_and_leaves_the_others_a_slot():
    assert ota_share(128) == 32 and ota_share(128, 50) == 50 and ota_share(8) == 2
    assert ota_share(4, 10) == 3 and ota_share(2) == 1 and ota_share(1) == 0


def test_downloads_fill_their_share_not_inferences_and_inference_not_theirs():
    async def main():
        app = Held()
        refused: list[int] = []
        limit = InFlightLimit(app, limit=8, per_client=100, ota=3, refused=lambda: refused.append(1))
        clients = iter(f"10.0.0.{i}" for i in range(100))
        # A burst of downloads: three get slots, the fourth is refused at once.
        downloads = [asyncio.create_task(call(limit, "/v1/ota/files/abc", next(clients))) for _ in range(3)]
        await asyncio.sleep(0)
        ota_refused = await call(limit, "/v1/ota/files/abc", next(clients))
        enrol_refused = await call(limit, "/v1/devices", next(clients))  # the fleet's enrolments share it
        # Inference still has its five.
        infers = [asyncio.create_task(call(limit, "/v2/models/faces/infer", next(clients))) for _ in range(5)]
        await asyncio.sleep(0)
        infer_refused = await call(limit, "/v2/models/faces/infer", next(clients))
        health = asyncio.create_task(call(limit, "/v2/health/ready", next(clients)))  # never counted
        await asyncio.sleep(0)
        inside = app.inside
        app.release.set()
        done = await asyncio.gather(*downloads, *infers, health)
        after = await call(limit, "/v1/ota/check", next(clients))
        return ota_refused, enrol_refused, infer_refused, inside, done, after, refused, limit.in_flight

    ota_refused, enrol_refused, infer_refused, inside, done, after, refused, left = asyncio.run(
        asyncio.wait_for(main(), HANG_GUARD_S))
    for status, headers, body in (ota_refused, enrol_refused):
        assert status == 503 and headers[b"retry-after"] == b"1"
        assert "TANDEM_MAX_IN_FLIGHT_OTA" in body["error"] and "(3," in body["error"]
    status, headers, body = infer_refused
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "5 of TANDEM_MAX_IN_FLIGHT=8" in body["error"]
    assert inside == 3 + 5 + 1 and all(s == 200 for s, _, _ in done) and after[0] == 200
    assert refused == [1, 1, 1] and left == 0


def test_inference_refused_at_its_share_leaves_downloads_their_slots():
    async def main():
        app = Held()
        limit = InFlightLimit(app, limit=4, per_client=100)  # default: 1 slot for OTA, 3 for the rest
        infers = [asyncio.create_task(call(limit, "/v2/models/faces/infer", f"10.0.1.{i}")) for i in range(3)]
        await asyncio.sleep(0)
        refused = await call(limit, "/v1/apps/classify/faces:predict", "10.0.1.9")
        download = asyncio.create_task(call(limit, "/v1/ota/deltas/a/b", "10.0.1.10"))
        await asyncio.sleep(0)
        inside = app.inside
        app.release.set()
        return refused, inside, await asyncio.gather(*infers, download)

    refused, inside, done = asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S))
    assert refused[0] == 503 and "TANDEM_MAX_IN_FLIGHT_OTA" in refused[2]["error"]  # it says where the rest went
    assert inside == 4 and all(s == 200 for s, _, _ in done)


def test_a_limit_of_one_is_not_split_and_the_client_share_still_holds():
    async def main():
        app = Held()
        one = InFlightLimit(app, limit=1)
        held = asyncio.create_task(call(one, "/v1/ota/files/x"))
        await asyncio.sleep(0)
        refused = await call(one, "/v2/models/faces/infer", "10.0.2.1")
        two = InFlightLimit(app, limit=8, per_client=2)
        mine = [asyncio.create_task(call(two, "/v2/models/faces/infer", "10.0.3.1")) for _ in range(2)]
        await asyncio.sleep(0)
        share = await call(two, "/v1/ota/check", "10.0.3.1")  # the client's share counts both kinds
        app.release.set()
        await asyncio.gather(held, *mine)
        return refused, share

    refused, share = asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S))
    assert refused[0] == 503 and "(1, TANDEM_MAX_IN_FLIGHT)" in refused[2]["error"]
    assert share[0] == 503 and "TANDEM_MAX_IN_FLIGHT_PER_CLIENT" in share[2]["error"]
