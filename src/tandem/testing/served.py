"""``tandem serve`` as a real subprocess on a free port: the CLI end to end, as a user starts it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tandem.testing.processes import free_port, stop

READY = "/v2/health/ready"  # 200 once the models that production points at are loaded


@dataclass
class Served:
    proc: subprocess.Popen[Any] = field(repr=False)
    url: str  # http://127.0.0.1:PORT

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGINT, grace_s: float = 30.0) -> tuple[Any, Any]:
        """Ctrl-C, as a user stops it (processes.stop)."""
        return stop(self.proc, sig, grace_s)


def serve(*args: str, env: dict[str, str] | None = None, port: int | None = None, log_level: str = "warning",
          ready: str = READY, timeout_s: float = 120.0, log: Path | None = None, cwd: Path | None = None) -> Served:
    """``python -m tandem serve --port PORT --log-level LOG_LEVEL ARGS...`` (this interpreter's Tandem), returned
    once ``ready`` answers 200. Its output (stdout and stderr together) is a pipe, or the file ``log``; either is quoted
    when it exits during start-up. Not ready within ``timeout_s``: stopped, and RuntimeError."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "tandem", "serve", "--port", str(port), "--log-level", log_level, *args]
    out: IO[bytes] | int = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115 - the child keeps it
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=log is None)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    served = Served(proc, f"http://127.0.0.1:{port}")
    try:
        wait_ready(served.url, proc, ready, timeout_s, log)
    except BaseException:
        served.stop()
        raise
    return served


def wait_ready(url: str, proc: subprocess.Popen[Any], path: str = READY, timeout_s: float = 120.0,
               log: Path | None = None, headers: dict[str, str] | None = None) -> float:
    """Seconds until ``url + path`` answered 200. RuntimeError with the server's output if ``proc`` exits
    first (its piped stdout, or the tail of ``log``), or if it is not ready within ``timeout_s``."""
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited ({proc.returncode}) during start-up:\n{_output(proc, log)}")
        try:
            if httpx.get(url + path, headers=headers, timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{url}{path} did not answer 200 within {timeout_s:.0f} s")
        time.sleep(0.1)


def _output(proc: subprocess.Popen[Any], log: Path | None) -> str:
    if log is not None:
        return "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    return str(proc.stdout.read()) if proc.stdout else ""
