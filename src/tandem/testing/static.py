"""A tiny static file server standing in for a CDN in tests and benchmarks: it serves a folder (what
`tandem serve` publishes with TANDEM_OTA_DOWNLOADS=cdn, laid out ab/cdef…) on a free loopback port, in
threads, answering GET and HEAD with single ``bytes=N-``/``bytes=N-M`` ranges as a CDN does, and
counting what it served."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class StaticServer:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    root: Path
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)


class _Handler(SimpleHTTPRequestHandler):
    served: StaticServer

    def log_message(self, format: str, *args: Any) -> None:  # the test's output stays its own
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self.served.requests.append((self.command, self.path, code))
        super().send_response(code, message)

    def do_GET(self) -> None:
        m = _RANGE.match(self.headers.get("range", ""))
        path = Path(self.translate_path(self.path))
        if m is None or not path.is_file():
            return super().do_GET()
        size = path.stat().st_size
        start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else size - 1
        if start >= size:
            self.send_response(416)
            self.send_header("content-range", f"bytes */{size}")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        end = min(end, size - 1)
        with path.open("rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-range", f"bytes {start}-{end}/{size}")
        self.send_header("content-length", str(len(body)))
        self.send_header("accept-ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[StaticServer]:
    """Serve ``root`` on 127.0.0.1 until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    served = StaticServer("", root)
    handler = type("Handler", (_Handler,), {"served": served})  # a class per server: its own record
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    httpd.daemon_threads = True
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
