"""The server under attack: a real `tandem serve` subprocess on a free port, over a registry set up
in-process (pushed bundles, releases, one key per scope)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tandem.registry.ota import Ota
from tandem.registry.registry import Registry
from tandem.settings import Settings
from tandem.testing.served import serve
from tests.integration.server.serving import test_settings


@dataclass
class Target:
    url: str
    env: dict[str, str]
    settings: Settings  # the same registry, seen in-process
    keys: dict[str, str]  # scope -> API key (predict, device: the fleet's, admin)
    proc: Any = field(repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    @contextlib.contextmanager
    def ota(self) -> Iterator[Ota]:
        with Registry.open(self.settings) as reg:
            yield Ota(reg, self.settings)

    def register(self, key: str | None = None) -> tuple[str, str]:
        """A new device, registered with the fleet's key (or ``key``): (device id, credential)."""
        with self.client(key or self.keys["device"]) as http:
            r = http.post("/v1/devices")
        assert r.status_code == 201, r.text
        return r.json()["device_id"], r.json()["credential"]


def environment(home: Path, **settings: object) -> dict[str, str]:
    """The environment of a `tandem` process on ``home``: none of this machine's TANDEM_* settings
    (TANDEM_DATA_HOME aside), ``settings`` as TANDEM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") or k == "TANDEM_DATA_HOME"}
    env.update({"TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0"})
    env.update({f"TANDEM_{k.upper()}": str(v) for k, v in settings.items()})
    return env


Release = tuple[str, int] | tuple[str, int, dict[str, Any]]


@contextlib.contextmanager
def target(home: Path, bundles: list[Path], releases: tuple[Release, ...] = (("faces", 1),),
           **settings: object) -> Iterator[Target]:
    """`tandem serve` over a registry holding ``bundles`` (pushed in order), ``releases`` ((name,
    version[, Releases.release keywords]), production unless a channel is given), and one key per scope;
    ``settings`` as TANDEM_* variables of the server."""
    local = test_settings(home, preload=False)
    with Registry.open(local) as reg:
        for b in bundles:
            reg.push(b)
        keys = {scope: reg.create_key(scope, f"red team {scope}")[0] for scope in ("predict", "device", "admin")}
        ota = Ota(reg, local)
        for name, version, *rules in releases:
            ota.releases.release(name, version, **(rules[0] if rules else {}))
    env = environment(home, **settings)
    served = serve(env=env)
    try:
        yield Target(served.url, env, local, keys, served.proc)
    finally:
        served.stop()
