"""The outermost layer: one JSON access-log line and the request metrics for every request.

A plain ASGI middleware (no BaseHTTPMiddleware: that one copies bodies through a queue) that
watches the response go out. The Authorization header is never read here, let alone logged; the
key is identified by its public key id only.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem.server.endpoint import CALL, Call
from tandem.server.prometheus import Metrics, error_kind

access_log = logging.getLogger("tandem.access")
REQUEST_ID = b"x-request-id"


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_access_log() -> None:
    """Access lines are JSON already: print them as they are, on stderr."""
    if not any(isinstance(h, _Stderr) for h in access_log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class _Ids:
    """Request ids for requests that bring none: a random 64-bit prefix per process and a counter, 32 hex digits
    as uuid4().hex was, without a system call for 16 random bytes on every request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


def _request_id(scope: Scope, ids: _Ids) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            rid = value.decode("latin-1")[:128]
            if rid.isprintable():
                return rid
    return ids.next()


class Observe:
    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self._ids = _Ids()
        # Each label set's request counter and latency histogram, found once: prometheus_client's labels() takes
        # a lock and checks the values on every call. No label set is ever removed from these two metrics.
        self._children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        call = scope[CALL] = Call()
        rid = _request_id(scope, self._ids)
        status = 500
        sent = 0
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, rid.encode("latin-1"))]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - t0
            m = self.metrics
            key = (call.route, call.model, call.version, str(status))
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (m.requests.labels(*key), m.latency.labels(*key[:3]))
            children[0].inc()
            children[1].observe(seconds)
            error = (call.error or error_kind(status)) if status >= 400 else ""
            if error:
                m.errors.labels(call.route, error).inc()
            if self.log_requests:
                access_log.info(orjson.dumps({
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "request_id": rid,
                    "client": (scope.get("client") or ("", 0))[0],
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": call.route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "bytes_in": received,
                    "bytes_out": sent,
                    "model": call.model or None,
                    "version": call.version or None,
                    "key_id": call.key_id or None,
                    "error": error or None,
                }).decode())
