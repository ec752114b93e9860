"""A stream of frames over an emulated radio link, to check the advisor's video verdicts against.

``StreamLink`` is an httpx transport that delays each request as a link of the profile would carry a
stream: the uplink and the downlink are each one wire that carries one frame's bytes at a time at
the profile's bandwidth (frames in flight queue for it, as they do on one radio), plus half the
round trip each way. ``tc netem`` needs privileges the test machines do not give; this is the
advisor's own link arithmetic, so what a measurement through it checks is the rest — the bytes
really sent, the server's work, and that the stages overlap as the advisor assumes. Loss is not
emulated.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from tandem.advisor.networks import NetworkProfile


def _head_bytes(first_line: str, headers: httpx.Headers) -> int:
    return len(first_line) + 2 + sum(len(k) + 2 + len(v) + 2 for k, v in headers.raw) + 2


class StreamLink(httpx.BaseTransport):
    def __init__(self, network: NetworkProfile, inner: httpx.BaseTransport | None = None) -> None:
        self.network = network
        self.inner = inner or httpx.HTTPTransport()
        self._up, self._down = threading.Lock(), threading.Lock()

    def _send(self, wire: threading.Lock, nbytes: int, mbps: float) -> None:
        with wire:
            time.sleep(nbytes * 8 / (mbps * 1000.0) / 1000.0)  # 1 Mbps = 1,000 bits per ms

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        net = self.network
        up = len(request.read()) + _head_bytes(f"{request.method} {request.url.raw_path.decode()} HTTP/1.1",
                                               request.headers)
        self._send(self._up, up, net.up_mbps)
        time.sleep(net.rtt_ms / 2000.0)
        resp = self.inner.handle_request(request)
        content = resp.read()
        self._send(self._down, len(content) + _head_bytes(f"HTTP/1.1 {resp.status_code}", resp.headers),
                   net.down_mbps)
        time.sleep(net.rtt_ms / 2000.0)
        return httpx.Response(resp.status_code, headers=resp.headers, content=content, request=request,
                              extensions=resp.extensions)

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class StreamResult:
    frames: int
    seconds: float
    latency_ms: float  # median, one frame from sending to its answer

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def stream(send: Callable[[bytes], object], frames: Sequence[bytes], in_flight: int = 4) -> StreamResult:
    """Send every frame through ``send`` with up to ``in_flight`` frames outstanding (a pipelined stream)."""

    def one(frame: bytes) -> float:
        t0 = time.perf_counter()
        send(frame)
        return (time.perf_counter() - t0) * 1000.0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        latencies = list(pool.map(one, frames))
    return StreamResult(len(frames), time.perf_counter() - t0, statistics.median(latencies))
