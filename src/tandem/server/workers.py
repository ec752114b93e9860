"""The server's worker processes as /metrics shows them: each one's process metrics (CPU seconds,
resident memory, open files, start time), labelled with its ``pid``, and the clean-up after a worker
that is gone.

With one process these come from /proc/self. With several uvicorn workers (prometheus_client's
multiprocess mode, PROMETHEUS_MULTIPROC_DIR) a collector only runs in the worker that answers the
scrape, so each worker leaves a marker file in that folder when it starts, and the answering worker
reads every live worker's /proc/<pid> with prometheus_client's own ProcessCollector. Read from outside
at scrape time, the numbers are current, also for a worker too busy or stuck to write anything itself
(the alternative, gauges each worker writes for itself now and then, would freeze exactly then, and
would turn the CPU counter into a gauge).

A marker whose process is gone (or is no longer a child of the same supervisor: its pid was reused)
is removed together with that worker's ``live*`` gauges (``mark_process_dead``), so a crashed or
replaced worker's queue depths and loaded models stop counting. Its counters and histograms stay:
they are totals, and the sums over workers must not go down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

PROC = "/proc"
# Not *.db: MultiProcessCollector reads those as metric files.
_MARKER = re.compile(r"worker_(\d+)\.pid")


def register_worker(folder: str) -> None:
    """Mark this process as one of the server's workers in the multiprocess ``folder``."""
    Path(folder, f"worker_{os.getpid()}.pid").touch()


def _parent(pid: int, proc: str) -> int | None:
    """The parent pid of a running ``pid``; None when it is gone or a zombie (dead, not yet reaped)."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as f:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")".
            state, ppid = f.read().rsplit(b")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return None if state in (b"Z", b"X") else int(ppid)


def _bury(folder: str, pid: int) -> None:
    """Remove the live gauges of a worker that is gone."""
    for _ in range(3):
        try:
            mark_process_dead(pid, folder)
            return
        except FileNotFoundError:  # another worker is removing the same files now: look again
            continue


class WorkerProcesses(Collector):
    """``process_*`` metrics of each live worker, labelled ``pid``. ``folder``: the multiprocess folder
    (None: this process alone); ``supervisor``: the pid of the workers' parent (default: this process's)."""

    def __init__(self, folder: str | None, proc: str = PROC, supervisor: int | None = None) -> None:
        self._folder = folder
        self._proc = proc
        self._supervisor = supervisor
        self._collectors: dict[int, ProcessCollector] = {}

    def pids(self) -> list[int]:
        """The live workers' pids; a worker found gone is cleaned up on the way (see the module's doc)."""
        if self._folder is None:
            return [os.getpid()]
        if not os.path.isdir(os.path.join(self._proc, "self")):
            return []  # no /proc (not Linux): nothing to read, and no way to tell a live worker from a dead one
        supervisor = self._supervisor or os.getppid()
        live = []
        for marker in Path(self._folder).iterdir():
            found = _MARKER.fullmatch(marker.name)
            if found is None:
                continue
            pid = int(found[1])
            if _parent(pid, self._proc) == supervisor:
                live.append(pid)
            else:
                _bury(self._folder, pid)
                marker.unlink(missing_ok=True)
        return sorted(live)

    def _collector(self, pid: int) -> ProcessCollector:
        return ProcessCollector(pid=lambda: pid, proc=self._proc, registry=None)

    def collect(self) -> Iterable[Metric]:
        pids = self.pids()
        self._collectors = {pid: self._collectors.get(pid) or self._collector(pid) for pid in pids}
        families: dict[str, Metric] = {}
        for pid, collector in self._collectors.items():
            for family in collector.collect():  # nothing, or less, for a worker that ended since the listing
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for s in family.samples:
                    merged.add_sample(s.name, {**s.labels, "pid": str(pid)}, s.value)
        return list(families.values())
