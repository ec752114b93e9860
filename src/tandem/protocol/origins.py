"""The origin of a download URL (scheme, host and port), as OTA payloads name them: the signed
``download_origins`` list says where a device may fetch bytes besides the update server (docs/ota.md,
"Downloads from storage or a CDN"), and both sides must compute an origin the same way.

The rule, for a client in any language: lowercase the scheme and the host, leave out the port when it
is the scheme's default (80 for http, 443 for https), and write ``scheme://host`` or
``scheme://host:port`` (an IPv6 host in brackets). A URL with user information (``user:pass@``), a
fragment, or a scheme other than http or https has no origin a payload may name.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SCHEMES = {"http": 80, "https": 443}
MAX_URL = 4096  # a presigned URL is about 600 characters


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute http(s) URL; ValueError saying what is wrong otherwise."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise ValueError(f"a download URL must be a string of at most {MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() or c == "\\" for c in url):
        raise ValueError(f"the download URL {url[:80]!r} holds a space, a backslash or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"the download URL {url[:80]!r} does not parse ({e})") from e
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"the download URL {url[:80]!r} is not http(s)://…")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError(f"the download URL {url[:80]!r} names a user: credentials never go in a download URL")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"the download URL {url[:80]!r} has a fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"the download URL {url[:80]!r} names no host")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None or port == SCHEMES[scheme] else f"{scheme}://{host}:{port}"


def is_origin(value: str) -> bool:
    """Whether ``value`` is an origin written as ``origin()`` writes it (what a payload's list may hold)."""
    try:
        return origin(value) == value
    except ValueError:
        return False
