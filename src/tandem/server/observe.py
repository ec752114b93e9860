"""The outermost layer: one JSON access-log line and the request metrics for every request.

A plain ASGI middleware (no BaseHTTPMiddleware: that one copies bodies through a queue) that
watches the response go out. The Authorization header is never read here, let alone logged; the
key is identified by its public key id only.

Access lines go out a batch at a time (TANDEM_ACCESS_LOG_FLUSH_MS, nginx's ``access_log ... flush=``):
a line through the logging module and a write of its own cost 0.05 ms of the event loop's CPU a request,
a sixth of the whole stack's (bench/serving_standin.py: a LogRecord a line about 0.02 ms, a write a line
about 0.025 ms, building the line 0.005 ms), so while the ``tandem.access`` logger prints to stderr as
``setup_access_log`` made it, lines are gathered and written together once the flush interval has passed
(and at shutdown). A logger given other handlers (a file, a test's capture) gets each line as a record
at once, as before.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import secrets
import sys
import time
import weakref
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


FLUSH_LINES = 512  # gathered lines written at once even before the interval is over: memory stays bounded


class AccessLines:
    """The access log's writer: lines gathered for ``flush_s`` on the event loop, then written in one go to the
    stderr ``setup_access_log`` set up; 0: each line at once. Only the event loop's thread calls ``write``."""

    def __init__(self, flush_s: float) -> None:
        self.flush_s = flush_s
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        _WRITERS.add(self)

    def write(self, line: str) -> None:
        handlers = access_log.handlers
        if (self.flush_s <= 0 or len(handlers) != 1 or type(handlers[0]) is not _Stderr or access_log.filters
                or handlers[0].filters or not access_log.isEnabledFor(logging.INFO)):
            access_log.info(line)  # configured otherwise (or not batched): the logging module's way
            return
        self._lines.append(line)
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    def flush(self) -> None:
        """Write the gathered lines now (on the event loop's thread: the loop's timer is cancelled)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write()

    def _write(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError) as e:  # stderr closed or full: as logging.Handler.handleError, not the request's
            if sys.__stderr__ is not None and sys.__stderr__ is not sys.stderr:
                with contextlib.suppress(OSError, ValueError):
                    print(f"tandem.access: {len(text):,} bytes of access lines not written: {e}", file=sys.__stderr__)


_WRITERS: weakref.WeakSet[AccessLines] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """A worker stopped without its lifespan's end (create_app flushes there) still writes what it gathered; its
    loop is closed or closing by now, so its timers are left alone."""
    for writer in list(_WRITERS):
        writer._write()


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
    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool, lines: AccessLines | None = None) -> None:
        """``lines``: where access lines go (default: each at once through the ``tandem.access`` logger)."""
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.lines = lines or AccessLines(0)
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
                self.lines.write(access_line(rid, (scope.get("client") or ("", 0))[0], scope["method"], scope["path"],
                                             call, status, seconds, received, sent, error))


def access_line(rid: str, client: str, method: str, path: str, call: Call, status: int, seconds: float,
                received: int, sent: int, error: str) -> str:
    """One request's access-log line, JSON: the key appears only as its public key id (``call.key_id``)."""
    return orjson.dumps({
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": rid,
        "client": client,
        "method": method,
        "path": path,
        "route": call.route,
        "status": status,
        "ms": round(seconds * 1000, 2),
        "bytes_in": received,
        "bytes_out": sent,
        "model": call.model or None,
        "version": call.version or None,
        "key_id": call.key_id or None,
        "error": error or None,
    }).decode()
