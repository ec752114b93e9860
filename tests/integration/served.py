"""`tandem serve` as a real subprocess on a free port, for tests that need the whole server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.integration.server.serving import free_port


def until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Wait for ``condition()`` to be truthy (the server picks up registry changes by polling)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tandem", "serve", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
        try:
            return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    until(ready, "tandem serve to become ready", 120)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    """SIGINT, as Ctrl-C would; kill only if it does not stop within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
