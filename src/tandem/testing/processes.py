"""Subprocesses, ports and waiting: the pieces every test or benchmark that starts a server needs."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, grace_s: float = 30.0) -> tuple[Any, Any]:
    """Stop ``proc`` as Ctrl-C does (``sig``: SIGINT; SIGTERM as a service manager does) and kill it only if it
    is still running after ``grace_s``. Reads what is left in the pipes while it stops (a child blocked on a
    full pipe would not stop) and closes them: ``(stdout, stderr)``, None for those not piped. A process that
    has already ended is only reaped."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick; another process may take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until(condition: Callable[[], T], what: str, timeout: float = 60.0, every: float = 0.1) -> T:
    """Wait for ``condition()`` to be truthy and return its value; AssertionError naming ``what`` after
    ``timeout`` seconds (a server picks up registry changes by polling, a process starts in its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(every)
