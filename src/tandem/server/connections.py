"""What one client may hold of a server worker's connections: uvicorn's HTTP protocol with a header
deadline and a connection cap (STYLE 18: every edge has a budget).

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but never a connection that has
not finished sending a request's headers: a client that opens sockets and sends nothing, or a byte now
and then (slowloris), holds each of them for good, until the worker runs out of file descriptors and
nobody else gets in. And uvicorn's ``limit_concurrency`` counts those very connections, so with it set
they would turn every other client away with 503. Here instead:

- **Header deadline** (TANDEM_HEADER_TIMEOUT_S): a connection must send a request's complete headers
  within that time of opening, or of its previous answer; else it is closed (with a 408 if it had sent
  part of a request, silently if nothing: a browser's unused preconnect is no error).
- **Connection cap** (TANDEM_MAX_CONNECTIONS, and the process's file-descriptor limit less a reserve):
  at the cap, a new connection closes the oldest connections that are not in the middle of a request
  (idle keep-alives, clients still sending headers), a tenth of the cap at a time; a request being
  answered is never cut. Held sockets thus cost their holder, not the next client.

Requests in flight are bounded separately (server/admission.py). ``tandem serve`` runs uvicorn with
``http=protocol(header_timeout_s, max_connections)``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, cast

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors kept for the registry, model files, logs: never given to connections
EVICT_SHARE = 10  # at the cap, close this share (1/10) of the cap's idle connections at once
_TIMEOUT_BODY = b'{"error": "the request\'s headers did not arrive in time (TANDEM_HEADER_TIMEOUT_S)"}'
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"x-content-type-options: nosniff\r\nconnection: close\r\n"
                    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float  # TANDEM_HEADER_TIMEOUT_S
    max_connections: int  # TANDEM_MAX_CONNECTIONS

    def cap(self) -> int:
        """The connection cap in this process: also under its file-descriptor limit, less a reserve."""
        return _fd_capped(self.max_connections)


@cache  # per process: a worker's limit is the one it started with (raise_fd_limit runs before)
def _fd_capped(max_connections: int) -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(16, min(max_connections, soft - FD_RESERVE))


def raise_fd_limit() -> None:
    """Let this process (and the workers it starts) open as many files as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:  # some containers forbid it: the cap follows the soft limit then
            log.warning("cannot raise the open-file limit from %s to %s: %s", soft, hard, e)


class Guarded:
    """The header deadline and the connection cap, over one of uvicorn's HTTP protocols (a mixin: its
    methods call the protocol's own)."""

    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._opened = self.loop.time()
        self._header_timer: asyncio.TimerHandle | None = None
        self._sent = False  # bytes of a request not yet answered
        self._arm()
        cap = self._limits.cap()
        if len(self.connections) > cap:
            self._make_room(cap)

    def data_received(self, data: bytes) -> None:
        self._sent = True
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._sent = False
            self._arm()  # the next request's headers have the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _busy(self) -> bool:
        """A request whose headers arrived and whose answer is not complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self._limits.header_timeout_s, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._busy():
            return  # the headers came in time: the request's own time limit applies now
        if self._sent:
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()

    def _make_room(self, cap: int) -> None:
        idle = sorted((c for c in self.connections if c is not self and isinstance(c, Guarded) and not c._busy()
                       and not c.transport.is_closing()), key=lambda c: c._opened)
        for c in idle[: max(1, cap // EVICT_SHARE)]:
            c.transport.close()
        if idle:
            log.warning("%d connections open (TANDEM_MAX_CONNECTIONS: %d): closed the %d oldest idle ones",
                        len(self.connections), cap, min(len(idle), max(1, cap // EVICT_SHARE)))


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpTools
except ImportError:  # pragma: no cover - uvicorn without its [standard] extras
    _HttpTools = None  # type: ignore[assignment,misc]
from uvicorn.protocols.http.h11_impl import H11Protocol as _H11


class GuardedH11(Guarded, _H11):  # type: ignore[misc]
    pass


GuardedHttpTools: type[asyncio.Protocol] | None = (
    type("GuardedHttpTools", (Guarded, _HttpTools), {"__module__": __name__}) if _HttpTools is not None else None)


def protocol(header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """The guarded HTTP protocol for uvicorn's ``http=``: httptools' parser where installed, h11's else,
    with these limits bound. A partial of a module-level class, so that it survives the pickling that
    takes uvicorn's config to its worker processes (``--workers``)."""
    cls: Callable[..., asyncio.Protocol] = GuardedHttpTools if GuardedHttpTools is not None else GuardedH11
    # uvicorn only calls what it is given (config=, server_state=, ...), as it would a class.
    return cast("type[asyncio.Protocol]", partial(cls, limits=ConnectionLimits(header_timeout_s, max_connections)))
