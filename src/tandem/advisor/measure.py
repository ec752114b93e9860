"""Measure a real link and a real server instead of assuming them.

- **Link** (``--measure URL``): the round trip is the median time of ``GET /v2/health/ready`` (a
  route that does no work); the uplink is timed with a POST of ``probe_bytes`` to the model's infer
  route, naming an input the model does not have, so that the server reads the whole body and
  refuses it without running anything; the downlink with ``GET /openapi.json``, the largest
  document every Tandem server serves. Each transfer time is the request's time minus the round
  trip. A downlink too small to time is taken equal to the uplink.
- **Server** (``--server-url URL``): the median time of ``POST /v2/models/{name}/infer`` with one
  image (binary tensor extension), less the model's compute at the server's speed factor and the
  round trip, is the server's per-request overhead.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from tandem.advisor.networks import NetworkProfile, Radio
from tandem.advisor.placement import ServerProfile
from tandem.errors import InvalidRequest, ServerUnreachable

HEADER_LENGTH = "Inference-Header-Content-Length"
# A timed transfer shorter than this is mostly noise: its bandwidth is not reported.
MIN_TRANSFER_MS = 2.0


@dataclass(frozen=True)
class LinkMeasurement:
    url: str
    rtt_ms: float
    up_mbps: float
    down_mbps: float
    up_probe_bytes: int
    down_probe_bytes: int

    def network(self, name: str = "measured", radio: Radio = "lte") -> NetworkProfile:
        return NetworkProfile(name, self.rtt_ms, self.up_mbps, self.down_mbps, 0.0, radio,
                              f"measured against {self.url}: RTT {self.rtt_ms:.1f} ms, "
                              f"{self.up_mbps:.2f} Mbps up, {self.down_mbps:.2f} Mbps down")

    def to_dict(self) -> dict:
        return asdict(self)


def _client(url: str, api_key: str | None, timeout_s: float) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)


def _timed(call: Callable[[], httpx.Response], url: str) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    try:
        resp = call()
    except httpx.HTTPError as e:
        raise ServerUnreachable(f"{url}: {type(e).__name__}: {e}; is the server running?") from e
    return (time.perf_counter() - t0) * 1000.0, resp


def _binary_request(name: str, arr: np.ndarray, datatype: str) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": name, "shape": list(arr.shape), "datatype": datatype,
                                     "parameters": {"binary_data_size": int(arr.nbytes)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + arr.tobytes(), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def round_trip_ms(client: httpx.Client, url: str, repeats: int, idle_gap_s: float = 0.0) -> float:
    times = []
    for _ in range(repeats + 1):
        time.sleep(idle_gap_s)
        ms, resp = _timed(lambda: client.get("/v2/health/ready"), url)
        if resp.status_code >= 500:
            raise ServerUnreachable(f"{url}/v2/health/ready answered {resp.status_code}; the server is not ready")
        times.append(ms)
    return float(statistics.median(times[1:]))  # the first opens the connection


def measure_link(url: str, model: str, *, api_key: str | None = None, repeats: int = 10,
                 probe_bytes: int = 1 << 20, timeout_s: float = 60.0) -> LinkMeasurement:
    """RTT, uplink and downlink bandwidth between this machine and the server at ``url``."""
    with _client(url, api_key, timeout_s) as client:
        rtt = round_trip_ms(client, url, repeats)
        body, headers = _binary_request("__tandem_bandwidth_probe__", np.zeros(probe_bytes, np.uint8), "UINT8")
        ups = []
        for _ in range(max(2, repeats // 3)):
            ms, resp = _timed(lambda: client.post(f"/v2/models/{model}/infer", content=body, headers=headers), url)
            if resp.status_code in (401, 403, 404, 413):
                raise InvalidRequest(f"{url}: the uplink probe was refused ({resp.status_code}: {resp.text[:200]}); "
                                     "pass --api-key with a predict key and --model with a served model's name")
            ups.append(ms)
        up_ms = statistics.median(ups) - rtt
        up_mbps = len(body) * 8 / (max(up_ms, MIN_TRANSFER_MS) * 1000.0)
        downs, size = [], 0
        for _ in range(max(2, repeats // 3)):
            ms, resp = _timed(lambda: client.get("/openapi.json"), url)
            if resp.status_code != 200:
                break
            downs.append(ms)
            size = len(resp.content)
        down_ms = (statistics.median(downs) - rtt) if downs else 0.0
        down_mbps = size * 8 / (down_ms * 1000.0) if down_ms >= MIN_TRANSFER_MS else up_mbps
    return LinkMeasurement(url, round(rtt, 3), round(up_mbps, 3), round(down_mbps, 3), len(body), size)


@dataclass(frozen=True)
class ServerMeasurement:
    url: str
    model: str
    infer_ms: float  # median time of one infer request, this side
    rtt_ms: float

    def server(self, whole_ms: float, speed_factor: float = 1.0) -> ServerProfile:
        """The server profile these times imply, for a model that takes ``whole_ms`` here."""
        overhead = max(0.0, self.infer_ms - self.rtt_ms - whole_ms * speed_factor)
        return ServerProfile(speed_factor, round(overhead, 3),
                             f"measured against {self.url}: {self.infer_ms:.2f} ms per request with a "
                             f"{self.rtt_ms:.2f} ms round trip; speed factor {speed_factor:g} assumed")

    def to_dict(self) -> dict:
        return asdict(self)


def measure_server(url: str, model: str, pixels: np.ndarray, *, api_key: str | None = None, repeats: int = 20,
                   timeout_s: float = 30.0, idle_gap_s: float = 0.0) -> ServerMeasurement:
    """Time ``POST /v2/models/{model}/infer`` with ``pixels`` (one image, uint8) on the server at ``url``.
    ``idle_gap_s``: idle before each request, for a server that answers one request now and then
    (both sides start each request from idle: cold caches, clocked-down cores)."""
    body, headers = _binary_request("pixels", np.ascontiguousarray(pixels, np.uint8), "UINT8")
    with _client(url, api_key, timeout_s) as client:
        rtt = round_trip_ms(client, url, max(3, repeats // 2), idle_gap_s)
        times = []
        for _ in range(repeats + 2):
            time.sleep(idle_gap_s)
            ms, resp = _timed(lambda: client.post(f"/v2/models/{model}/infer", content=body, headers=headers), url)
            if resp.status_code != 200:
                raise InvalidRequest(f"{url}/v2/models/{model}/infer answered {resp.status_code}: {resp.text[:300]}")
            times.append(ms)
    return ServerMeasurement(url, model, round(float(statistics.median(times[2:])), 3), round(rtt, 3))
