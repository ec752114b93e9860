"""The model pool against a real registry and real (tiny) models, with the order of events forced:
a load is held at a gate so that an alias moves while a request is still resolving it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tandem.registry.registry import Registry
from tandem.server.metrics import Metrics
from tandem.server.models import ModelPool
from tests.integration.server.bundles import make_bundle
from tests.integration.server.serving import test_settings

pytestmark = pytest.mark.integration
HANG_GUARD_S = 30  # only stops a broken pool from hanging the suite; never reached when it works


class GatedPool(ModelPool):
    """A pool whose loads say when they begin and wait for ``gate``: the test decides when a load finishes."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.loading = threading.Event()
        self.gate = threading.Event()

    def _load_and_warm(self, resolved):  # type: ignore[no-untyped-def]
        self.loading.set()
        self.gate.wait(HANG_GUARD_S)
        return super()._load_and_warm(resolved)


def test_an_alias_moved_while_a_request_resolves_it_is_still_followed(tmp_path):
    settings = test_settings(tmp_path / "home", preload=False, alias_poll_s=60, warmup_runs=0)
    with Registry.open(settings) as reg:
        for seed in (1, 2):
            reg.push(make_bundle(tmp_path / f"v{seed}", None, seed=seed))
        reg.set_alias("faces", "beta", 1)

        async def main() -> tuple[int, int]:
            pool = GatedPool(reg, settings, Metrics())
            await pool.start()
            try:
                first = asyncio.create_task(pool.get("faces", "beta"))  # resolves beta -> v1, then waits
                await asyncio.to_thread(pool.loading.wait, HANG_GUARD_S)
                await asyncio.to_thread(reg.set_alias, "faces", "beta", 2)
                await pool.poll()  # the watcher sees the move before the request has remembered beta
                pool.gate.set()
                started_on = (await first).version
                await pool.poll()
                return started_on, (await pool.get("faces", "beta")).version
            finally:
                await pool.close()

        started_on, now = asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S))
    assert started_on == 1  # the request began before the move: v1 is a right answer for it
    assert now == 2


def test_every_use_keeps_a_version_from_being_unloaded_as_idle(tmp_path):
    # Any route counts as a use (TF-Serving and the image endpoint too, not only OIP infer): they all
    # get their model from the pool.
    settings = test_settings(tmp_path / "home", preload=False, alias_poll_s=60, warmup_runs=0, model_idle_s=1.0)
    with Registry.open(settings) as reg:
        for seed in (1, 2):
            reg.push(make_bundle(tmp_path / f"v{seed}", None, seed=seed))

        async def main() -> list[int]:
            pool = ModelPool(reg, settings, Metrics())
            await pool.start()
            try:
                await pool.get("faces", 2)
                await asyncio.sleep(settings.model_idle_s + 0.05)  # idle for longer than model_idle_s ...
                await pool.get("faces", 2)  # ... then used again
                await pool.poll()
                return [m.version for m in pool.loaded("faces")]
            finally:
                await pool.close()

        assert asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S)) == [2]
