"""A real S3-compatible server for tests and benchmarks: moto's standalone server (``moto[server]``, the
dev extra) as its own process on a free loopback port. Tandem's store talks to it over HTTP with the
same client code as to AWS; each test takes a bucket of its own."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from tandem.testing.processes import free_port, stop, until

# moto takes any credentials; these only have to be present (without them a client would look for an
# instance role on the network).
ACCESS_KEY_ID = "tandem-test"
SECRET_ACCESS_KEY = "tandem-test-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[Any] = field(repr=False)

    def new_bucket(self, prefix: str = "tandem") -> str:
        """A fresh, empty bucket; its name. (moto takes an unsigned CreateBucket: Tandem creates no buckets.)"""
        name = f"{prefix}-{secrets.token_hex(6)}"
        r = httpx.put(f"{self.endpoint}/{name}", timeout=10.0)
        if r.status_code != 200:
            raise RuntimeError(f"moto's S3 server did not create bucket {name}: HTTP {r.status_code} {r.text[:500]}")
        return name

    def settings(self, bucket: str, prefix: str = "objects") -> dict[str, str]:
        """The registry settings that put artifacts in ``bucket`` under ``prefix`` on this server."""
        return {"artifacts": f"s3://{bucket}/{prefix}", "s3_endpoint_url": self.endpoint, "s3_region": REGION,
                "s3_access_key_id": ACCESS_KEY_ID, "s3_secret_access_key": SECRET_ACCESS_KEY}

    def env(self, bucket: str, prefix: str = "objects") -> dict[str, str]:
        """The same as TANDEM_* variables, for a `tandem` subprocess."""
        return {f"TANDEM_{k.upper()}": v for k, v in self.settings(bucket, prefix).items()}


@contextlib.contextmanager
def s3_server(timeout_s: float = 60.0) -> Iterator[S3Server]:
    """moto's server on 127.0.0.1, stopped on exit."""
    port = free_port()
    # Its log (a line per request) goes to a file: a pipe nobody reads would fill and stall the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        endpoint = f"http://127.0.0.1:{port}"
        try:
            until(lambda: _answers(endpoint, proc, log), "moto's S3 server to answer", timeout=timeout_s, every=0.1)
            yield S3Server(endpoint, proc)
        finally:
            stop(proc, grace_s=10)


def _answers(endpoint: str, proc: subprocess.Popen[Any], log: IO[bytes]) -> bool:
    if proc.poll() is not None:
        log.seek(0)
        raise RuntimeError(f"moto's S3 server exited with {proc.returncode}: "
                           f"{log.read().decode(errors='replace')[-2000:]} (is moto[server] installed? `make install` "
                           "puts it in the dev extra)")
    try:
        return httpx.get(f"{endpoint}/moto-api/", timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False
