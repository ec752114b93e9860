"""bench/soak.py's driver, briefly: its paced mix (OIP JSON, OIP binary, image endpoint, OTA checks)
against a real server answers every request of every kind with a 2xx. The long run is the bench's."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.integration.server.serving import running, test_settings

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _soak():
    spec = importlib.util.spec_from_file_location("soak_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_soak_mix_runs_paced_without_an_error(tmp_path):
    soak = _soak()
    prep = soak.prepare(tmp_path / "home", None)
    jpegs, pixels = soak.photos(prep.bundle, n=4)
    settings = test_settings(prep.home, ota_master_key=None, rate_limit_per_s=100_000, rate_limit_burst=100_000)
    with running(settings) as server:
        plan = soak.build_plan(server.url, prep.model, prep.input_name, prep.predict_key, prep.device_key,
                               prep.version, jpegs, pixels, n=100)
        record = soak.open_loop(plan, rate=40, seconds=4)
    assert record.errors == 0, record.failures
    assert len(record.ok) == 160
    assert {soak.KINDS[k] for k in record.kind} == set(soak.KINDS)
    summary = soak.summarise(record, 4, 2)
    assert all(v["requests"] > 0 and v["errors"] == 0 for v in summary["by_kind"].values()), summary["by_kind"]


def test_a_503_with_retry_after_counts_as_shed_not_as_an_error():
    """The driver's bookkeeping against a bare HTTP server answering by path: a 503 with Retry-After
    (a budget turning the request away) is shed; one without it, like any other failure, an error."""
    soak = _soak()
    answers = {b"/shed": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\n{}",
               b"/down": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}",
               b"/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"}

    handled = asyncio.Event()

    async def handle(reader, writer):
        try:
            with contextlib.suppress(asyncio.IncompleteReadError):  # the client closed the connection
                while head := await reader.readuntil(b"\r\n\r\n"):
                    writer.write(answers[head.split(b" ")[1]])
                    await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()
            handled.set()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn, rec = soak.Connection("127.0.0.1", port), soak.Record()
        for i, path in enumerate(["/ok", "/shed", "/down", "/shed", "/ok"]):
            status, what = await conn.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            rec.add(i * 0.5, i % len(soak.KINDS), 0.001, status, what)
        conn.close()
        await handled.wait()
        server.close()
        await server.wait_closed()
        return rec

    rec = asyncio.run(asyncio.wait_for(main(), 30))
    assert rec.errors == 1 and rec.shed_count == 2 and sum(rec.ok) == 2
    assert rec.failures == {f"{soak.KINDS[2]}: 503": 1}
    summary = soak.summarise(rec, 2.5, 1.25)
    assert (summary["errors"], summary["shed"], summary["requests"]) == (1, 2, 5)
    assert [(w["errors"], w["shed"]) for w in summary["windows"]] == [(1, 1), (0, 1)]
