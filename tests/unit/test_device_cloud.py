"""The cloud client's failure handling and the auto policy, with an injected clock and transport: no sleeping."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tandem.device.cloud_client import CircuitBreaker, CircuitOpen, CloudClient, backoff_delay
from tandem.device.hybrid import HybridModel, LatencyRule
from tandem.errors import InvalidRequest, ServerUnreachable, Unavailable


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_n_failures_then_half_opens_one_probe() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    assert b.allow()
    b.failure()
    assert b.state == "open" and not b.allow() and b.retry_in() == 10
    clock.t += 9.9
    assert not b.allow()
    clock.t += 0.1
    assert b.state == "half_open"
    assert b.allow()          # the probe
    assert not b.allow()      # only one at a time
    b.failure()               # the probe failed: open again for a full cool-down
    assert b.state == "open" and b.retry_in() == 10
    clock.t += 10
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.consecutive == 0 and b.allow()


def test_success_resets_the_count() -> None:
    b = CircuitBreaker(failures=2, clock=Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert [backoff_delay(a, 0.1, 1.0, rng=lambda: 1.0) for a in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_delay(3, 0.1, 1.0, rng=lambda: 0.0) == 0.0
    assert 0 <= backoff_delay(2, 0.1, 1.0) < 0.4


class Flaky:
    """A transport failing with ``error`` the first ``fails`` times, then answering ``ok``."""

    def __init__(self, error: Exception | int, fails: int, ok: httpx.Response | None = None) -> None:
        self.error, self.fails, self.calls = error, fails, 0
        self.ok = ok or httpx.Response(200, json={"name": "m", "inputs": [], "outputs": []})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.fails:
            if isinstance(self.error, int):
                return httpx.Response(self.error, json={"error": "busy"})
            raise self.error
        return self.ok


def client(flaky: Flaky, **kw) -> tuple[CloudClient, list[float]]:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    kw.setdefault("breaker", CircuitBreaker(failures=10, clock=Clock()))
    c = CloudClient("http://cloud", "m", transport=httpx.MockTransport(flaky), sleep=slept.append,
                    rng=lambda: 1.0, backoff_base_s=0.1, **kw)
    return c, slept


OIP_OK = httpx.Response(200, json={"model_name": "m", "model_version": "7", "outputs": [
    {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]})


@pytest.mark.parametrize("error", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut"), 503])
def test_idempotent_get_is_retried_with_backoff(error) -> None:  # type: ignore[no-untyped-def]
    flaky = Flaky(error, fails=2)
    c, slept = client(flaky, retries=2)
    assert c.metadata()["name"] == "m"
    assert flaky.calls == 3 and slept == [0.1, 0.2]


def test_retries_run_out() -> None:
    flaky = Flaky(httpx.ReadTimeout("slow"), fails=5)
    c, _slept = client(flaky, retries=2)
    with pytest.raises(ServerUnreachable, match="no answer within the timeout"):
        c.metadata()
    assert flaky.calls == 3 and c.breaker.consecutive == 1  # one failed call for the breaker, not three


@pytest.mark.parametrize("error", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut"), 503])
def test_infer_post_is_not_retried_once_sent(error) -> None:  # type: ignore[no-untyped-def]
    flaky = Flaky(error, fails=1, ok=OIP_OK)
    c, slept = client(flaky, retries=3, binary=False)
    with pytest.raises((ServerUnreachable, Unavailable)):
        c.infer({"x": np.zeros((1, 2), np.float32)})
    assert flaky.calls == 1 and slept == []


def test_infer_post_is_retried_on_connection_refused() -> None:
    flaky = Flaky(httpx.ConnectError("refused"), fails=1, ok=OIP_OK)
    c, slept = client(flaky, retries=3, binary=False)
    r = c.infer({"x": np.zeros((1, 2), np.float32)})
    assert flaky.calls == 2 and slept == [0.1]
    assert (r.model, r.version) == ("m", 7) and r.outputs["y"].tolist() == [[0.25, 0.75]]


def test_open_breaker_fails_fast_without_calling() -> None:
    flaky = Flaky(httpx.ConnectError("refused"), fails=99)
    c, _ = client(flaky, retries=0, breaker=CircuitBreaker(failures=2, cooldown_s=5, clock=Clock()))
    for _ in range(2):
        with pytest.raises(ServerUnreachable):
            c.metadata()
    with pytest.raises(CircuitOpen, match=r"5\.0 s"):
        c.metadata()
    assert flaky.calls == 2


def test_garbage_answers_are_clear_errors() -> None:
    c, _ = client(Flaky(0, fails=0, ok=httpx.Response(200, content=b"<html>")), binary=False)
    with pytest.raises(Unavailable, match="not JSON"):
        c.infer({"x": np.zeros((1, 2), np.float32)})
    c, _ = client(Flaky(0, fails=0, ok=httpx.Response(200, json={"foo": 1})))
    with pytest.raises(Unavailable, match="no 'outputs'"):
        c.infer({"x": np.zeros((1, 2), np.float32)})


def test_binary_request_layout() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        header = b'{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[2],' \
                 b'"parameters":{"binary_data_size":8}}]}'
        return httpx.Response(200, content=header + np.array([1.5, -2], "<f4").tobytes(),
                              headers={"Inference-Header-Content-Length": str(len(header))})

    c = CloudClient("http://cloud", "m", version=3, api_key="sekrit", transport=httpx.MockTransport(handler))
    x = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    r = c.infer({"x": x})
    req = seen[0]
    assert req.url.path == "/v2/models/m/versions/3/infer" and req.headers["authorization"] == "Bearer sekrit"
    n = int(req.headers["inference-header-content-length"])
    assert req.content[n:] == x.tobytes()
    assert b'"binary_data_size":6' in req.content[:n] and b'"binary_data_output":true' in req.content[:n]
    assert r.outputs["y"].tolist() == [1.5, -2.0] and r.version is None


def test_bad_arguments() -> None:
    with pytest.raises(InvalidRequest, match="protocol"):
        CloudClient("http://c", "m", protocol="grpc")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="policy"):
        HybridModel(None, None, policy="sometimes")  # type: ignore[arg-type]


def test_latency_rule_measures_both_then_prefers_faster_and_reprobes() -> None:
    rule = LatencyRule(alpha=0.5, probe_every=5)
    both = ["device", "cloud"]
    assert rule.choose(both) == "device"  # type: ignore[arg-type]
    rule.observe("device", 0.010, ok=True)
    assert rule.choose(both) == "cloud"  # type: ignore[arg-type]
    rule.observe("cloud", 0.050, ok=True)
    picks = [rule.choose(both) for _ in range(8)]  # type: ignore[arg-type]
    assert picks == ["device", "device", "cloud", "device", "device", "device", "device", "cloud"]
    rule.observe("device", 1.0, ok=False)  # a failure counts as the penalty
    assert rule.ewma["device"] > rule.ewma["cloud"]
    assert rule.choose(["device"]) == "device"  # type: ignore[list-item]
