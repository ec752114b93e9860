"""Which split tails the server has: asked before ``auto`` offers a split, so that a server without
tails never gets a split request.

A bundle cut at K holds the head; the server serves its tail as OIP model ``NAME.tail.K`` only once
a split bundle of that version was pushed (docs/serving.md). The answer comes from the tail's model
metadata, ``GET /v2/models/NAME.tail.K/versions/V`` (V: the local model's version, whose head the
tail must match): an answer means it is there, 404 that it is not. Each (K, V) is asked once; a
"no" is asked again after ``recheck_s`` (a split bundle may be pushed later), a question that got
no answer at all (no network, a server error) after ``retry_s``. Each question is bounded by
``ask_s``, so that it costs a call little even against a hanging server. TF-Serving cannot address
a tail: there, no split is served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tandem.bundle import tail_name
from tandem.device.deadline import Deadline
from tandem.errors import NotFound, TandemError

if TYPE_CHECKING:
    from tandem.device.cloud_client import CloudClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Answer:
    served: bool
    asked_at: float
    good_for_s: float


class ServedTails:
    """``served(k, version)``: whether the cloud serves the tail of the split at ``k`` for ``version``."""

    def __init__(self, cloud: CloudClient, *, ask_s: float = 2.0, recheck_s: float = 300.0, retry_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cloud = cloud
        self.ask_s = ask_s
        self.recheck_s = recheck_s
        self.retry_s = retry_s
        self.clock = clock
        self._answers: dict[tuple[int, int | str | None], _Answer] = {}
        self._lock = threading.Lock()

    def served(self, k: int, version: int | str | None) -> bool:
        cloud = self.cloud
        if not cloud.protocol.addresses_other_models:
            return False
        version = version if version is not None else cloud.version
        key = (k, version)
        with self._lock:  # one question at a time: concurrent calls wait for its answer rather than ask again
            known = self._answers.get(key)
            now = self.clock()
            if known is not None and now - known.asked_at < known.good_for_s:
                return known.served
            name = tail_name(cloud.model, k)
            try:
                cloud.metadata(name, version, deadline=Deadline.after(self.ask_s, "ask_s of the split tails' question"))
                answer = _Answer(True, now, float("inf"))
            except NotFound:
                log.info("%s has no %s for v%s: split@%d is not offered", cloud.url, name, version, k)
                answer = _Answer(False, now, self.recheck_s)
            except TandemError as e:
                log.info("cannot tell whether %s serves %s (%s); asking again in %g s", cloud.url, name, e,
                         self.retry_s)
                answer = _Answer(False, now, self.retry_s)
            self._answers[key] = answer
            return answer.served
