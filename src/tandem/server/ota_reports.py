"""Device health reports, added up in memory and written to the registry in batches.

A report costs the check route's budget nothing but a dictionary update; every
``TANDEM_OTA_REPORT_FLUSH_S`` one transaction adds the sums to their releases (and applies the health
gate). A batch that cannot be written (database down) is kept and merged into the next one; at
shutdown what is left is written before the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from tandem.registry.records import ReleaseInfo
from tandem.registry.releases import HealthKey, HealthReport

log = logging.getLogger(__name__)


class HealthReports:
    def __init__(self, record: Callable[[Mapping[HealthKey, HealthReport]], list[ReleaseInfo]], flush_s: float,
                 on_tripped: Callable[[list[ReleaseInfo]], Awaitable[None]]) -> None:
        self._record = record
        self._flush_s = flush_s
        self._on_tripped = on_tripped
        self._pending: dict[HealthKey, HealthReport] = {}
        self._lock = asyncio.Lock()  # one flush at a time: the loop's, a test's, or the final one
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return sum(r.reports for r in self._pending.values())

    def add(self, key: HealthKey, report: HealthReport) -> None:
        have = self._pending.get(key)
        self._pending[key] = report if have is None else have + report

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
                for key, report in batch.items():
                    self.add(key, report)
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
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await self.flush()
        except Exception as e:
            log.error("could not write %d device health reports at shutdown: %s", self.pending, e)
