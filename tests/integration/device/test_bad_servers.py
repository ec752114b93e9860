"""A cloud that misbehaves: garbage, 5xx, slow, trickling or hanging servers on real sockets.
``only_cloud`` gets a clear error, ``prefer_cloud`` the device's answer with the reason, and both
within the timeout or the call's deadline (generous bounds: two cores shared with other work)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from tandem.device.cloud_client import CircuitBreaker, CircuitOpen, CloudClient
from tandem.device.deadline import DeadlineExceeded
from tandem.device.hybrid import HybridModel
from tandem.errors import InvalidRequest, ServerUnreachable, Unavailable
from tandem.testing.processes import free_port
from tests.integration.device.fakes import (
    Behaviour,
    fake_server,
    garbage,
    refuses_binary,
    slow,
    status,
    trickle,
    trickle_body,
)

pytestmark = pytest.mark.integration
TIMEOUT = 0.5
SLACK = 1.0  # a loaded 2-core machine, not the SDK, is what this allows for


def client(url: str, **kw) -> CloudClient:  # type: ignore[no-untyped-def]
    kw.setdefault("timeout_s", TIMEOUT)
    kw.setdefault("connect_timeout_s", TIMEOUT)
    kw.setdefault("breaker", CircuitBreaker(failures=100))
    return CloudClient(url, "faces", api_key="k", **kw)


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    try:
        return fn(), time.perf_counter() - start
    except Exception as e:
        return e, time.perf_counter() - start


BAD = {
    "garbage": (garbage(), Unavailable, "the answer is not JSON"),
    "http-500": (status(500), Unavailable, "HTTP 500: the model worker crashed"),
    "http-503": (status(503), Unavailable, "HTTP 503: the model worker crashed"),
    "slow": (slow(30), ServerUnreachable, "no answer within the timeout"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_server_is_a_clear_error_or_a_device_fallback_within_the_timeout(
        case: str, device_bundle: Path, lfw_photos: list[Path]) -> None:
    behave, error, text = BAD[case]
    with fake_server(behave) as url, client(url) as cloud:
        hm = HybridModel(device_bundle, cloud)
        failed, seconds = timed(lambda: hm.predict(lfw_photos[:1], policy="only_cloud"))
        assert isinstance(failed, error) and text in str(failed), repr(failed)
        assert seconds <= TIMEOUT + SLACK
        r, seconds = timed(lambda: hm.predict(lfw_photos[:1], policy="prefer_cloud"))
        assert seconds <= TIMEOUT + SLACK
    assert r.where == "device" and r.probabilities.shape == (1, 4)
    assert r.fallback is not None and r.fallback.startswith("cloud: ") and text in r.fallback


HANGING: dict[str, Behaviour] = {"slow": slow(30), "trickle": trickle()}


@pytest.mark.parametrize("case", [*HANGING, "blackhole"])
def test_a_deadline_bounds_the_call_whatever_the_server_does(case: str, blackhole: str, device_bundle: Path,
                                                              lfw_photos: list[Path]) -> None:
    """The client's own timeouts are 30 s; the deadline, 0.5 s. A trickling server beats any
    per-read timeout (each byte comes quickly), not the deadline."""
    with fake_server(HANGING.get(case, garbage())) as url, \
            client(blackhole if case == "blackhole" else url, timeout_s=30, connect_timeout_s=30) as cloud:
        hm = HybridModel(device_bundle, cloud, timeout_s=TIMEOUT)
        failed, seconds = timed(lambda: hm.predict(lfw_photos[:1], policy="only_cloud"))
        assert isinstance(failed, DeadlineExceeded), repr(failed)
        assert "deadline (0.5 s, timeout_s)" in str(failed)
        assert TIMEOUT * 0.9 <= seconds <= TIMEOUT + SLACK
        r, seconds = timed(lambda: hm.predict(lfw_photos[:1], policy="prefer_cloud"))
        assert seconds <= TIMEOUT + SLACK
    assert r.where == "device" and "deadline (0.5 s" in (r.fallback or "")


def test_a_call_deadline_overrides_the_model_default(blackhole: str, device_bundle: Path,
                                                     lfw_photos: list[Path]) -> None:
    with client(blackhole, timeout_s=30) as cloud:
        hm = HybridModel(device_bundle, cloud, policy="prefer_cloud", timeout_s=60)
        r, seconds = timed(lambda: hm.predict(lfw_photos[:1], timeout_s=0.3))
    assert r.where == "device" and "deadline (0.3 s" in (r.fallback or "") and seconds <= 0.3 + SLACK
    with pytest.raises(InvalidRequest, match="timeout_s=0"):
        hm.predict(lfw_photos[:1], timeout_s=0)
    with pytest.raises(InvalidRequest, match="timeout_s=-1"):
        HybridModel(device_bundle, timeout_s=-1)


def test_retries_never_run_past_the_deadline(device_bundle: Path, lfw_photos: list[Path]) -> None:
    """A refused connection is retried (nothing was sent), with backoff; 20 retries of 0.1 s would
    take 2 s, the deadline allows 0.35 s, and the error stays the real one."""
    with client(f"http://127.0.0.1:{free_port()}", retries=20, backoff_base_s=0.2, backoff_cap_s=0.2,
                rng=lambda: 0.5) as cloud:
        hm = HybridModel(device_bundle, cloud, policy="only_cloud", timeout_s=0.35)
        failed, seconds = timed(lambda: hm.predict(lfw_photos[:1]))
    assert isinstance(failed, ServerUnreachable) and "cannot connect" in str(failed), repr(failed)
    assert 0.2 <= seconds <= 0.35 + SLACK


def test_a_missed_deadline_counts_once_on_the_breaker(device_bundle: Path, lfw_photos: list[Path]) -> None:
    """The caller counts the failure when it stops waiting; the abandoned request, timing out just
    after, must not count it again, or the breaker would open at half its threshold."""
    with fake_server(slow(30)) as url, client(url, timeout_s=30, breaker=CircuitBreaker(failures=2)) as cloud:
        hm = HybridModel(device_bundle, cloud, policy="prefer_cloud", timeout_s=0.3)
        assert "deadline" in (hm.predict(lfw_photos[:1]).fallback or "")
        time.sleep(0.3)  # the abandoned request's own (capped) read timeout fires meanwhile
        assert (cloud.breaker.consecutive, cloud.breaker.state) == (1, "closed")
        assert "deadline" in (hm.predict(lfw_photos[:1]).fallback or "")
        assert cloud.breaker.state == "open"
        r, seconds = timed(lambda: hm.predict(lfw_photos[:1]))
    assert "circuit breaker open" in (r.fallback or "") and seconds < 0.2
    with pytest.raises(CircuitOpen):
        hm.predict(lfw_photos[:1], policy="only_cloud")


def test_a_healthy_server_answers_within_a_deadline(server, device_bundle: Path, lfw_photos: list[Path]) -> None:
    srv, keys = server
    with CloudClient(srv.url, "faces", api_key=keys.predict) as cloud:
        hm = HybridModel(device_bundle, cloud, policy="only_cloud", timeout_s=10)
        r = hm.predict(lfw_photos[:3])
        assert (r.where, r.fallback, r.probabilities.shape) == ("cloud", None, (3, 4))
        assert cloud.breaker.consecutive == 0


@pytest.mark.parametrize("call", ["infer", "metadata"])
def test_every_cloud_call_has_a_deadline_by_default(call: str) -> None:
    """A server that trickles its answer a byte at a time: per-read timeouts (30 s here) never fire,
    so without a deadline the call would hang as long as the server likes. The client's own
    ``deadline_s`` bounds it when the caller gives none."""
    x = {"x": np.zeros((1, 2), np.float32)}
    with fake_server(trickle_body()) as url, client(url, timeout_s=30, connect_timeout_s=30, deadline_s=0.5) as cloud:
        failed, seconds = timed(lambda: cloud.infer(x) if call == "infer" else cloud.metadata())
    assert isinstance(failed, DeadlineExceeded), repr(failed)
    assert "deadline (0.5 s, deadline_s of the CloudClient)" in str(failed)
    assert 0.45 <= seconds <= 0.5 + SLACK
    assert CloudClient("http://cloud", "m").deadline_s == 10.0  # the default: every call is bounded
    with pytest.raises(InvalidRequest, match="deadline_s=0"):
        CloudClient("http://cloud", "m", deadline_s=0)


@pytest.mark.parametrize("code", [400, 415])
def test_a_server_that_refuses_binary_tensors_gets_json_once_and_from_then_on(code: int) -> None:
    seen: list[str] = []
    x = {"x": np.zeros((1, 2), np.float32)}
    with fake_server(refuses_binary(code, seen)) as url, client(url) as cloud:
        answers = [cloud.infer(x) for _ in range(3)]
    assert seen == ["binary", "json", "json", "json"]  # one refusal, then JSON only: no double requests
    for r in answers:
        assert r.outputs["y"].tolist() == [[0.25, 0.75]] and r.version == 1
    assert cloud.breaker.consecutive == 0


def test_a_bad_input_to_a_server_that_takes_binary_tensors_is_not_sent_twice() -> None:
    """Once a binary request was answered, a 400 is the input's fault: raised, not asked again in JSON."""
    seen: list[str] = []
    ok = refuses_binary(400, [])

    def answers_once(h: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        seen.append("binary" if h.headers.get("Inference-Header-Content-Length") else "json")
        if len(seen) == 1:
            del h.headers["Inference-Header-Content-Length"]  # answered as the JSON request it is not
            ok(h, stopping)
        else:
            status(400)(h, stopping)

    x = {"x": np.zeros((1, 2), np.float32)}
    with fake_server(answers_once) as url, client(url) as cloud:
        assert cloud.infer(x).outputs["y"].shape == (1, 2)
        with pytest.raises(InvalidRequest, match="HTTP 400"):
            cloud.infer(x)
    assert seen == ["binary", "binary"]
