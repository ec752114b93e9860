"""Misbehaving inference servers on real sockets: what a broken proxy, an overloaded host or a hung
process looks like from the device. Each answers every request the same way."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Behaviour = Callable[[BaseHTTPRequestHandler, threading.Event], None]


def answer(status: int, body: bytes, content_type: str = "application/json") -> Behaviour:
    def behave(h: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return behave


def garbage() -> Behaviour:
    """200 with an HTML page, as a captive portal or a misrouted proxy sends."""
    return answer(200, b"<html><body>Welcome to Hotel Wi-Fi</body></html>", "text/html")


def status(code: int) -> Behaviour:
    return answer(code, b'{"error": "the model worker crashed"}')


def slow(seconds: float) -> Behaviour:
    """Answers (garbage) only after ``seconds``."""
    then = garbage()

    def behave(h: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        if not stopping.wait(seconds):
            then(h, stopping)
    return behave


def trickle(every_s: float = 0.05) -> Behaviour:
    """The status line and then one header byte every ``every_s``, never finishing: every single
    read is quick, so per-read timeouts never fire."""
    def behave(h: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        while not stopping.wait(every_s):
            h.wfile.write(b"X")
            h.wfile.flush()
    return behave


def trickle_body(every_s: float = 0.05) -> Behaviour:
    """A 200 whose headers come at once and whose body (said to be 1 MB of JSON) comes one byte every
    ``every_s``, never finishing: a per-read timeout never fires, only a deadline on the whole call."""
    def behave(h: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(1 << 20))
        h.end_headers()
        h.wfile.write(b"{")
        while not stopping.wait(every_s):
            h.wfile.write(b" ")
            h.wfile.flush()
    return behave


def refuses_binary(code: int, seen: list[str]) -> Behaviour:
    """An OIP server without the binary tensor data extension: ``code`` to a binary request (it has
    an Inference-Header-Content-Length header), a JSON answer (output ``y`` = [[0.25, 0.75]]) to a
    JSON one; ``seen`` gets "binary" or "json" for each request."""
    refuse = answer(code, b'{"error": "the request body is not valid JSON"}')
    ok = answer(200, json.dumps({"model_name": "faces", "model_version": "1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]}).encode())

    def behave(h: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        binary = h.headers.get("Inference-Header-Content-Length") is not None
        seen.append("binary" if binary else "json")
        (refuse if binary else ok)(h, stopping)
    return behave


@contextlib.contextmanager
def fake_server(behave: Behaviour) -> Iterator[str]:
    """A real HTTP server on a free port that treats every POST and GET with ``behave``; yields its URL."""
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(OSError):  # the client gave up and closed: that is the point
                behave(self, stopping)

        do_POST = do_GET = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
