"""Triton's statistics extension: what one loaded model version has done in this worker
(``GET /v2/models[/NAME[/versions/V]]/stats``).

Counted since the version was loaded in this worker (an unloaded version starts again from zero), as
Triton counts since its model was loaded. Per request, as Triton's ``inference_stats``: ``success``
and ``fail`` (the request's time from reading its body to its outputs), and for successes ``queue``
(waiting in the batcher), ``compute_input`` (decoding the tensors, or the photo and its
preparation), ``compute_infer`` (the model call it ran in) and ``compute_output`` (encoding the
answer); there is no response cache (``cache_hit``/``cache_miss`` stay 0). ``inference_count``: the
rows (batch items) answered; ``execution_count``: model calls, several requests' rows in one call
when the batcher merged them, with ``batch_stats`` per batch size. Durations are nanoseconds.
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_statistics.md
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tandem.server.batching import BatchObserver, Timing


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class InferenceStats:
    """One model version's counts; the event loop alone updates them (no lock)."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    by_batch_size: dict[int, Duration] = field(default_factory=dict)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0  # since the epoch, as Triton gives it

    def succeeded(self, rows: int, seconds: float, input_s: float, timing: Timing | None) -> None:
        self.success.add(seconds)
        self.compute_input.add(input_s)
        if timing is not None:
            self.queue.add(timing.queue_s)
            self.compute_infer.add(timing.compute_s)
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def failed(self, seconds: float) -> None:
        self.fail.add(seconds)

    def answered(self, seconds: float) -> None:
        """The answer was encoded (compute_output)."""
        self.compute_output.add(seconds)

    def executed(self, rows: int, seconds: float) -> None:
        self.execution_count += 1
        self.by_batch_size.setdefault(rows, Duration()).add(seconds)

    def json(self, name: str, version: int) -> dict[str, Any]:
        return {
            "name": name, "version": str(version), "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count, "execution_count": self.execution_count,
            "inference_stats": {"success": self.success.json(), "fail": self.fail.json(),
                                "queue": self.queue.json(), "compute_input": self.compute_input.json(),
                                "compute_infer": self.compute_infer.json(),
                                "compute_output": self.compute_output.json(),
                                "cache_hit": Duration().json(), "cache_miss": Duration().json()},
            "batch_stats": [{"batch_size": size, "compute_infer": d.json()}
                            for size, d in sorted(self.by_batch_size.items())],
        }


class CountingObserver:
    """A batcher's observer that counts model calls into ``stats`` as well as telling ``inner``."""

    def __init__(self, stats: InferenceStats, inner: BatchObserver) -> None:
        self.stats = stats
        self.inner = inner

    def batch(self, rows: int, requests: int, seconds: float, cpu_seconds: float) -> None:
        self.stats.executed(rows, seconds)
        self.inner.batch(rows, requests, seconds, cpu_seconds)

    def queue(self, depth: int) -> None:
        self.inner.queue(depth)

    def shed(self, reason: str) -> None:
        self.inner.shed(reason)
