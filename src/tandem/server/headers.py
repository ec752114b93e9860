"""Security headers on every answer: a plain ASGI middleware that adds them as the response starts.

Every response says ``X-Content-Type-Options: nosniff`` (a JSON error that quotes client text is
never sniffed into HTML) and ``Referrer-Policy: no-referrer``; responses under a path prefix get
more (the browser app's Content-Security-Policy, see webapp.py). A header the route set itself wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

EVERYWHERE = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, under: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """``under``: extra headers by path prefix ("/app" matches /app and /app/..., not /apps)."""
        self.app = app
        self.everywhere = _encoded(EVERYWHERE)
        self.under = [(prefix.rstrip("/"), _encoded(h)) for prefix, h in (under or {}).items()]

    def _headers_for(self, path: str) -> list[tuple[bytes, bytes]]:
        extra = [h for prefix, hs in self.under if path == prefix or path.startswith(prefix + "/") for h in hs]
        return [*self.everywhere, *extra]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        add = self._headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                have = {k.lower() for k, _ in headers}
                message["headers"] = headers + [(k, v) for k, v in add if k not in have]
            await send(message)

        await self.app(scope, receive, send_with_headers)
