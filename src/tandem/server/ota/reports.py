"""Device health reports, kept in memory (one per device and release: a later one replaces it) and
written to the registry in batches.

A report costs the route nothing but a dictionary update; every ``TANDEM_OTA_REPORT_FLUSH_S`` one
transaction upserts each device's latest report and its release's figures over distinct devices
(and applies the health gate). A batch that cannot be written (database down) is kept and merged
into the next one (where a device reported again meanwhile, its newer report wins); at shutdown what
is left is written before the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from tandem.registry.ota.records import ReleaseInfo
from tandem.registry.ota.releases import DeviceReport, HealthBatch, HealthKey

log = logging.getLogger(__name__)


class HealthReports:
    def __init__(self, record: Callable[[HealthBatch], list[ReleaseInfo]], flush_s: float,
                 on_tripped: Callable[[list[ReleaseInfo]], Awaitable[None]]) -> None:
        self._record = record
        self._flush_s = flush_s
        self._on_tripped = on_tripped
        self._pending: dict[HealthKey, dict[str, DeviceReport]] = {}
        self._lock = asyncio.Lock()  # one flush at a time: the loop's, a test's, or the final one
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Reports held, replaced ones included."""
        return sum(r.reports for devices in self._pending.values() for r in devices.values())

    def add(self, key: HealthKey, device_id: str, report: DeviceReport) -> None:
        """Hold ``report`` for the next write; it replaces one the device sent on the same release."""
        devices = self._pending.setdefault(key, {})
        earlier = devices.get(device_id)
        devices[device_id] = report if earlier is None else report.replacing(earlier)

    def _keep(self, batch: Mapping[HealthKey, Mapping[str, DeviceReport]]) -> None:
        """Put back a batch that was not written, behind whatever arrived since."""
        for key, reports in batch.items():
            devices = self._pending.setdefault(key, {})
            for device_id, report in reports.items():
                newer = devices.get(device_id)
                devices[device_id] = report if newer is None else newer.replacing(report)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ota-health-reports")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
            except Exception as e:  # kept for the next flush; the database may be back by then
                log.warning("device health reports not written yet (%d kept): %s", self.pending, e)

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                tripped = await asyncio.to_thread(self._record, batch)
            except Exception:
                self._keep(batch)
                raise
        for release in tripped:
            log.warning("health gate rolled back %s v%d on %s: %s", release.name, release.version, release.channel,
                        release.note)
        if tripped:
            await self._on_tripped(tripped)

    async def close(self) -> None:
        if self._task is not None:
            # Cancelled only outside a flush: a write cancelled half way may still commit in its thread,
            # and its batch must then not be written a second time.
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush()
        except Exception as e:
            log.error("could not write %d device health reports at shutdown: %s", self.pending, e)
