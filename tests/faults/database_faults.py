"""The registry's PostgreSQL going away under load and coming back, without touching the shared
PostgreSQL server itself: the server reaches it through a TCP relay (test_postgres.Proxy) that the
scenario cuts (every connection broken, new ones refused) and restores.

While it is gone, every request gets its answer or a 503 with Retry-After (the key check asks the
database on every request here); once it is back, requests succeed again without a restart."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from tests.integration.registry_backends import postgres_schema
from tests.integration.server.serving import populate, running, test_settings
from tests.integration.server.test_postgres import Proxy

CLIENTS = 4


def outage_under_load(root: Path, bundles: list[Path], down_s: float = 2.0) -> tuple[list[str], Counter]:
    """(problems, answers by status) of one outage of ``down_s`` seconds amid steady traffic."""
    with postgres_schema() as url:
        keys = populate(test_settings(root / "home", database_url=url), bundles)
        direct = make_url(url)
        proxy = Proxy((direct.host or "127.0.0.1", direct.port or 5432))
        proxy.start()
        via_proxy = direct.set(port=proxy.port).render_as_string(hide_password=False)
        settings = test_settings(root / "home", database_url=via_proxy, key_cache_s=0)
        answers: Counter = Counter()
        problems: list[str] = []
        phase = {"now": "before"}
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {keys.predict}"},
                              timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.get("/v2/models/faces")
                    except httpx.TransportError as e:
                        problems.append(f"{phase['now']} the outage: no answer ({e})")
                        continue
                    answers[r.status_code] += 1
                    if r.status_code == 503:
                        if phase["now"] == "before" or not r.headers.get("retry-after", "").isdigit():
                            problems.append(f"{phase['now']} the outage: 503 {dict(r.headers)} {r.text[:200]}")
                    elif r.status_code != 200:
                        problems.append(f"{phase['now']} the outage: {r.status_code} {r.text[:200]}")
                    time.sleep(0.01)

        try:
            with running(settings) as server:
                threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
                for t in threads:
                    t.start()
                time.sleep(1.0)
                phase["now"] = "during"
                proxy.stop()
                time.sleep(down_s)
                proxy.start()
                phase["now"] = "after"
                recovered = _recovers(server.url, keys.predict, 30)
                time.sleep(0.5)
                stop.set()
                for t in threads:
                    t.join(30)
        finally:
            proxy.stop()
        if answers[503] == 0:
            problems.append("the outage never showed: no 503 while the database was away")
        if recovered is None:
            problems.append("requests still fail 30 s after the database came back")
        return problems, answers


def _recovers(url: str, key: str, within_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        r = httpx.get(f"{url}/v2/models/faces", headers={"authorization": f"Bearer {key}"}, timeout=10)
        if r.status_code == 200:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None
