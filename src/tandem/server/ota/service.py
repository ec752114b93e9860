"""A server worker's OTA side: the state it answers from, kept current with the registry's
generation, objects made on demand (once per worker at a time), and the health-report batches."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from tandem.errors import TandemError, Unavailable
from tandem.registry.ota import Ota
from tandem.registry.ota.records import OtaObjectInfo, ReleaseInfo
from tandem.registry.registry import Registry
from tandem.server.ota.downloads import Verified
from tandem.server.ota.mirrors import Mirrored, Mirrors, mirrored
from tandem.server.ota.reports import HealthReports
from tandem.server.ota.state import Files, OtaState
from tandem.server.prometheus import Metrics
from tandem.settings import OtaSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
SHUTDOWN_WAIT_S = 10
PUBLISH_RETRY_S = 60.0  # an object that could not be copied to the CDN's origin is tried again after this


class OtaService:
    def __init__(self, registry: Registry, settings: OtaSettings, poll_s: float, metrics: Metrics,
                 mirrors: Mirrors | None = None) -> None:
        """``poll_s``: how often the rules are looked at again (the server's TANDEM_ALIAS_POLL_S); ``mirrors``:
        where payloads also send devices for the bytes (TANDEM_OTA_DOWNLOADS; None: this server only)."""
        self.registry = registry
        self.settings = settings
        self.poll_s = poll_s
        self.metrics = metrics
        self.ota = Ota(registry, settings)
        self.verified = Verified()
        self.reports = HealthReports(self.ota.releases.record_health, settings.ota_report_flush_s, self._tripped)
        self._state: OtaState | None = None
        self._error: TandemError | None = None
        self._refreshing = asyncio.Lock()
        self._jobs: dict[tuple[object, ...], asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Deltas this worker could not make (no delta library, a patch that failed its check): not retried.
        self._no_delta: set[tuple[str, int, str, str]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._activation_failed = 0.0  # time.monotonic() of the last failed activation: retried a poll later
        self.mirrors = mirrors
        self._to_publish: dict[str, None] = {}  # objects to copy to the CDN's origin, in order
        self._publish_failed: dict[str, float] = {}  # sha256 -> time.monotonic() of its last failed copy
        self._publisher: asyncio.Task[None] | None = None

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> OtaState:
        if self._state is None:
            if self._error is not None:
                # A copy per request: raising one instance again and again would grow its traceback.
                raise copy.copy(self._error)
            raise Unavailable("the OTA rules are not loaded yet; try again shortly", retry_after=1)
        return self._state

    @property
    def generation(self) -> int | None:
        """The registry generation the rules in memory were read at (None before the first read)."""
        return self._state.generation if self._state is not None else None

    async def start(self) -> None:
        try:
            await self.refresh()
        except TandemError as e:  # inference must not go down with OTA: its routes answer with the error
            log.error("OTA routes unavailable: %s", e)
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="ota-watcher")
        self.reports.start()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.activate_due()
                await self.refresh()
            except Exception as e:  # keep the last rules; the next poll may find the database back
                log.warning("OTA rules not refreshed: %s", e)

    async def refresh(self) -> None:
        """Reload the rules if the registry's generation moved since they were read."""
        async with self._refreshing:
            gen = await asyncio.to_thread(self.registry.generation)
            if self._state is not None and self._state.generation == gen:
                return
            try:
                self._state = await asyncio.to_thread(self._build)
                self._error = None
            except TandemError as e:
                self._error = e
                raise
            # Everything this generation serves goes to the CDN's origin now, not at its first check.
            self.publish_soon([*self._state.served, *(s.sha256 for s in self._state.delta_urls.values())])

    async def activate_due(self) -> None:
        """If the next signing key's time has come, make it current (in the registry: whichever worker or
        server is first does it, the others find it done) and answer from the new state. Called before
        signing and at every poll, so a rotation needs no scheduler. Should the registry be unreachable, the
        current key goes on signing (devices trust both) and this is tried again a poll later."""
        state = self._state
        if state is None or not state.activation_due(datetime.now(UTC)) \
                or time.monotonic() - self._activation_failed < self.poll_s:
            return
        try:
            await self._once(("activate",), self.ota.keys.activate_due)
            await self.refresh()
        except Exception as e:
            self._activation_failed = time.monotonic()
            log.warning("the next OTA signing key is due but could not be made current yet: %s", e)

    def _build(self) -> OtaState:
        snap = self.ota.snapshot()
        return OtaState(snap, self.ota.objects.manifest, self.registry.store.size)

    async def _tripped(self, releases: list[ReleaseInfo]) -> None:
        for r in releases:
            self.metrics.ota_gate_trips.labels(r.name, str(r.version)).inc()
        await self.refresh()  # this worker stops offering the release at once; the others on their next poll

    async def close(self) -> None:
        if self._watcher is not None:
            # Cancelled between refreshes only: a refresh's thread would go on using a database
            # connection after the registry closed its pool.
            async with self._refreshing:
                self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.reports.close()
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        # Objects being made finish (their threads cannot be stopped), within the shutdown's patience.
        jobs = [*self._jobs.values(), *self._background]
        if jobs:
            await asyncio.wait(jobs, timeout=SHUTDOWN_WAIT_S)

    # --- objects made on demand ---------------------------------------------------------------

    async def _once(self, key: tuple[object, ...], fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread; concurrent callers with the same key share one run."""
        task: asyncio.Task[T] | None = self._jobs.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(fn))
            self._jobs[key] = task
            task.add_done_callback(lambda _t: self._jobs.pop(key, None))
        return await asyncio.shield(task)

    async def files(self, state: OtaState, name: str, version: int, variant: str, installed: int | None) -> Files:
        """A payload's files, with the model of ``variant``. Encrypted objects a release should have made but
        did not (a lost store object, a version released by an older Tandem, a variant it held back before)
        are made now; deltas not made yet are made in the background and offered from the next check on."""
        out = state.files(name, version, variant, installed, self._no_delta)
        if out.missing:
            made, key = await self._once(("version", name, version), lambda: self._make_version(name, version))
            state.data_keys[(name, version)] = key
            state.add_objects(made)  # state is only changed here, on the event loop, never from a thread
            out = state.files(name, version, variant, installed, self._no_delta)
        for path, from_version, from_sha in out.wanted:
            if ("delta", name, version, path, from_sha) in self._jobs:
                continue
            task = asyncio.get_running_loop().create_task(
                self._delta(state, name, version, path, from_version, from_sha))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return out

    def _make_version(self, name: str, version: int) -> tuple[list[OtaObjectInfo], tuple[str, bytes]]:
        return self.ota.objects.prepare(name, version), self.ota.keys.data_key(name, version)

    async def _delta(self, state: OtaState, name: str, version: int, path: str, from_version: int,
                     from_sha: str) -> None:
        def make() -> OtaObjectInfo | None:
            target, source = self.registry.get(name, version), self.registry.get(name, from_version)
            return self.ota.objects.delta_object(target, path, source)

        try:
            made = await self._once(("delta", name, version, path, from_sha), make)
        except Exception as e:  # e.g. the database is down: a later check asks again
            log.warning("no delta for %s v%d %s from v%d yet: %s", name, version, path, from_version, e)
            return
        if made is None:  # cannot be made (no delta library, a patch that failed its check): not retried
            self._no_delta.add((name, version, path, from_sha))
        else:
            state.add_objects([made])

    async def data_key(self, state: OtaState, name: str, version: int) -> tuple[str, bytes]:
        key = state.data_keys.get((name, version))
        if key is None:
            key = await self._once(("key", name, version), lambda: self.ota.keys.data_key(name, version))
            state.data_keys[(name, version)] = key
        return key


    # --- downloads from storage or a CDN (mirrors.py) ---------------------------------------------

    def mirrored(self, files: dict[str, Any]) -> Mirrored | None:
        """A payload's ``files`` with the URLs TANDEM_OTA_DOWNLOADS adds (None: this server's routes only).
        Objects the CDN cannot serve yet are published in the background."""
        if self.mirrors is None:
            return None
        out = mirrored(files, self.mirrors)
        for kind, n in out.counts.items():
            self.metrics.ota_mirrored.labels(kind, self.mirrors.mode).inc(n)
        self.publish_soon(out.unpublished)
        return out

    def publish_soon(self, shas: list[str]) -> None:
        """Copy these objects to the CDN's origin in the background, one at a time (a no-op without a CDN)."""
        if self.mirrors is None or self.mirrors.mode != "cdn":
            return
        now = time.monotonic()
        for sha in shas:
            if self.mirrors.url(sha) is None and now - self._publish_failed.get(sha, -PUBLISH_RETRY_S) >= PUBLISH_RETRY_S:
                self._to_publish[sha] = None
        if self._to_publish and (self._publisher is None or self._publisher.done()):
            self._publisher = asyncio.get_running_loop().create_task(self._publish(), name="ota-publisher")

    async def _publish(self) -> None:
        mirrors = self.mirrors
        assert mirrors is not None
        while self._to_publish:
            sha = next(iter(self._to_publish))
            try:
                if await asyncio.to_thread(mirrors.publish, sha):
                    log.info("published OTA object %s… for the CDN", sha[:12])
                self._publish_failed.pop(sha, None)
            except Exception as e:  # devices download it from this server meanwhile; tried again later
                self._publish_failed[sha] = time.monotonic()
                log.warning("could not publish OTA object %s… for the CDN (devices download it from this server "
                            "meanwhile; tried again in %.0f s): %s", sha[:12], PUBLISH_RETRY_S, e)
            self._to_publish.pop(sha, None)
