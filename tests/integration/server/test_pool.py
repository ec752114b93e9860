"""The model pool against a real registry and real (tiny) models, with the order of events forced:
a load is held at a gate so that an alias moves while a request is still resolving it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tandem.errors import NotFound
from tandem.registry.registry import Registry
from tandem.server.pool import ModelPool
from tandem.server.prometheus import Metrics
from tandem.testing.bundles import H, W, make_bundle
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


def test_versions_loaded_on_demand_are_bounded_least_recently_used_first_and_aliases_stay(tmp_path):
    # A predict key asking for every old version in turn cannot make the worker hold them all.
    settings = test_settings(tmp_path / "home", preload=False, alias_poll_s=60, warmup_runs=0, max_loaded_versions=3)
    with Registry.open(settings) as reg:
        for seed in (1, 2, 3, 4, 5):
            reg.push(make_bundle(tmp_path / f"v{seed}", None, seed=seed))
        reg.set_alias("faces", "production", 1)
        reg.set_alias("faces", "beta", 5)

        async def main() -> list[list[int]]:
            pool = ModelPool(reg, settings, Metrics())
            await pool.start()
            seen = []
            try:
                for ref in (None, 2, 3, 2, 4):  # v1 (production), then 2 and 3; 2 again; 4 unloads 3, not 2
                    await pool.get("faces", ref)
                seen.append([m.version for m in pool.loaded("faces")])
                await pool.get("faces", "beta")  # v5: 2, the least recently used, goes; aliases (1, 5) never do
                seen.append([m.version for m in pool.loaded("faces")])
                await pool.get("faces", 3)  # past the bound: 4 goes, 3 comes back
                seen.append([m.version for m in pool.loaded("faces")])
                return seen
            finally:
                await pool.close()

        assert asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S)) == [[1, 2, 4], [1, 4, 5], [1, 3, 5]]


def test_a_version_archived_or_deleted_is_no_longer_served_by_number(tmp_path):
    settings = test_settings(tmp_path / "home", preload=False, alias_poll_s=60, warmup_runs=0)
    with Registry.open(settings) as reg:
        for seed in (1, 2, 3):
            reg.push(make_bundle(tmp_path / f"v{seed}", None, seed=seed))

        async def main() -> list[object]:
            pool = ModelPool(reg, settings, Metrics())
            await pool.start()
            seen: list[object] = []
            try:
                for ref in (1, 2, 3):
                    await pool.get("faces", ref)
                await asyncio.to_thread(reg.archive, "faces", 2)
                await asyncio.to_thread(reg.delete_version, "faces", 3)
                await pool.poll()  # the watcher sees the new generation: both are dropped
                seen.append([m.version for m in pool.loaded("faces")])
                for ref in (2, 3):
                    with pytest.raises(NotFound) as e:
                        await pool.get("faces", ref)
                    seen.append(str(e.value))
                await asyncio.to_thread(reg.unarchive, "faces", 2)
                seen.append((await pool.get("faces", 2)).version)
                return seen
            finally:
                await pool.close()

        loaded, archived, deleted, back = asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S))
    assert loaded == [1]
    assert "faces version 2 is archived" in archived and "tandem versions unarchive faces 2" in archived
    assert "has no version 3" in deleted
    assert back == 2


@pytest.mark.parametrize("lone_threads", [2, 1])
def test_a_lone_request_runs_on_a_session_with_more_threads_and_batches_on_single_thread_ones(tmp_path, lone_threads):
    # TANDEM_LONE_REQUEST_THREADS=1 (or ort_threads as many): no session apart, every call alike.
    settings = test_settings(tmp_path / "home", preload=False, alias_poll_s=60, warmup_runs=1,
                             lone_request_threads=lone_threads)
    with Registry.open(settings) as reg:
        reg.push(make_bundle(tmp_path / "v1", None))

        async def main() -> tuple[int, int, float | None, np.ndarray]:
            metrics = Metrics()
            pool = ModelPool(reg, settings, metrics)
            await pool.start()
            try:
                model = await pool.get("faces", 1)
                out = await model.batcher.submit({"pixels": np.zeros((1, H, W, 3), np.uint8)})
                lone_calls = metrics.registry.get_sample_value("tandem_lone_calls_total",
                                                               {"model": "faces", "version": "1"})
                batch_threads = model.onnx.session.get_session_options().intra_op_num_threads
                direct = model.onnx.session.run(["probabilities"], {"pixels": np.zeros((1, H, W, 3), np.uint8)})[0]
                assert np.allclose(out["probabilities"], direct, atol=1e-6)  # either session, the same answer
                return model.lone_threads, batch_threads, lone_calls, out["probabilities"]
            finally:
                await pool.close()

        lone, batch_threads, lone_calls, _ = asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S))
    assert batch_threads == 1 and lone == lone_threads
    assert lone_calls == (1.0 if lone_threads > 1 else 0.0)
