"""The registry's PostgreSQL going away under load and coming back, two ways:

- cut: the server reaches the shared PostgreSQL through a TCP relay (test_postgres.Proxy) that the
  scenario cuts (every connection broken, new ones refused) and restores; the shared server itself
  is never touched;
- stopped: a private cluster of the test's own (private_postgres.py) really stopped with
  ``pg_ctl stop -m fast`` (clients told to go, a clean shutdown) or ``-m immediate`` (the processes
  quit as in a crash; the next start replays the WAL), then started again.

Either way the same load runs through it (``under_load``): while the database is gone, every request
gets its answer or a 503 with a numeric Retry-After (the key check asks the database on every
request here), never another 5xx nor a broken connection; once it is back, requests succeed again
without restarting the server, and the registry holds what it held before.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tandem.registry.registry import Registry
from tandem.settings import Settings
from tests.faults.private_postgres import private_postgres
from tests.integration.registry_backends import postgres_schema
from tests.integration.server.serving import populate, running, test_settings
from tests.integration.server.test_postgres import relayed

CLIENTS = 4
RECOVERY_LIMIT_S = 30
STOP_MODES = ("fast", "immediate")


@dataclass
class Outage:
    """What one outage amid steady traffic showed."""

    problems: list[str] = field(default_factory=list)
    answers: Counter = field(default_factory=Counter)  # status -> count, over the whole run
    during: Counter = field(default_factory=Counter)  # status -> count, while the database was away
    down_s: float = 0.0  # from the cut starting to the database being back
    recovered_s: float | None = None  # from the database being back to the first 200 (None: never)


Fault = tuple[str, Callable[[], None], Callable[[], None]]  # (name, cut, restore)


def under_load(settings: Settings, key: str, faults: list[Fault], down_s: float = 2.0) -> list[Outage]:
    """Serve from ``settings``'s database with steady traffic and, for each fault in turn, ``cut()`` it,
    wait ``down_s``, ``restore()`` it (both return once done) and see how the server came through.
    One server process throughout: recovering must not need a restart."""
    outages = [Outage() for _ in faults]
    state = {"phase": "before", "outage": outages[0]}
    stop = threading.Event()

    def client(url: str) -> None:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.get("/v2/models/faces")
                except httpx.TransportError as e:
                    now, out = state["phase"], state["outage"]
                    out.problems.append(f"{now} the outage: no answer ({e!r})")
                    time.sleep(0.01)
                    continue
                # The phase when the answer came: a request sent just before the cut may see it.
                now, out = state["phase"], state["outage"]
                out.answers[r.status_code] += 1
                if now == "during":
                    out.during[r.status_code] += 1
                if r.status_code == 503:
                    if now == "before" or not r.headers.get("retry-after", "").isdigit():
                        out.problems.append(f"{now} the outage: 503 {dict(r.headers)} {r.text[:200]}")
                elif r.status_code != 200:
                    out.problems.append(f"{now} the outage: {r.status_code} {r.text[:200]}")
                time.sleep(0.01)

    with running(settings) as server:
        threads = [threading.Thread(target=client, args=(server.url,), daemon=True) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            for (_, cut, restore), out in zip(faults, outages, strict=True):
                before = registry_state(settings)
                state.update(phase="before", outage=out)
                time.sleep(1.0)
                state["phase"] = "during"
                t0 = time.monotonic()
                try:
                    cut()
                    time.sleep(down_s)
                finally:
                    restore()
                out.down_s = time.monotonic() - t0
                state["phase"] = "after"
                out.recovered_s = _recovers(server.url, key, RECOVERY_LIMIT_S)
                time.sleep(0.5)
                if out.during[503] == 0:
                    out.problems.append(f"the outage never showed: no 503 while the database was away "
                                        f"({dict(out.during)})")
                if out.recovered_s is None:
                    out.problems.append(f"requests still fail {RECOVERY_LIMIT_S} s after the database came back")
                after = registry_state(settings)
                if after != before:
                    out.problems.append(f"the registry changed across the outage: {before} -> {after}")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    for (name, _, _), out in zip(faults, outages, strict=True):
        out.problems = [f"{name}: {p}" for p in out.problems]
    return outages


def outage_under_load(root: Path, bundles: list[Path], down_s: float = 2.0) -> Outage:
    """The shared PostgreSQL cut off behind a relay for ``down_s`` seconds, then reachable again."""
    with postgres_schema() as url, relayed(url) as (proxy, via_proxy):
        keys = populate(test_settings(root / "home", database_url=url), bundles)
        settings = test_settings(root / "home", database_url=via_proxy, key_cache_s=0)
        return under_load(settings, keys.predict, [("relay cut", proxy.stop, proxy.start)], down_s)[0]


def stopped_under_load(root: Path, bundles: list[Path], modes: tuple[str, ...] = ("fast",),
                       down_s: float = 2.0) -> list[Outage]:
    """A private PostgreSQL cluster stopped (``pg_ctl stop -m MODE``) and started again, once per
    mode, under the same server process (it is never restarted between outages)."""
    with private_postgres() as pg:
        settings = test_settings(root / "home", database_url=pg.url, key_cache_s=0)
        keys = populate(settings, bundles)
        faults = [(f"pg_ctl stop -m {mode}", lambda mode=mode: pg.stop(mode), pg.start) for mode in modes]
        return under_load(settings, keys.predict, faults, down_s)


def registry_state(settings: Settings) -> list[tuple]:
    """Each model's version count, latest version and aliases: what an outage must leave as it was."""
    with Registry.open(settings) as reg:
        return [(m.name, m.versions, m.latest, dict(m.aliases)) for m in reg.models()]


def _recovers(url: str, key: str, within_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        r = httpx.get(f"{url}/v2/models/faces", headers={"authorization": f"Bearer {key}"}, timeout=10)
        if r.status_code == 200:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None
