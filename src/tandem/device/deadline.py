"""A per-call deadline: how long one ``predict`` may take, whatever the network does.

httpx's timeouts bound each operation (the connect, every read, every write), so a server that
answers a byte at a time, or a call that retries with backoff, can run far past any one of them.
A ``Deadline`` is the absolute end of a call: each request gets at most the time left, a retry
that would start past it is not made, and the caller stops waiting at the deadline even if a
request is still under way (:func:`within` runs it in a worker thread that is then abandoned).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from tandem.errors import ServerUnreachable

T = TypeVar("T")


class DeadlineExceeded(ServerUnreachable):
    """No answer before the call's deadline (``timeout_s`` of ``predict`` or of the model)."""


@dataclass(frozen=True)
class Deadline:
    budget_s: float  # the whole call's budget as given, for messages
    at: float  # time.monotonic() at which the call must have answered
    setting: str = "timeout_s"  # the setting that gave the budget, for messages

    @classmethod
    def after(cls, seconds: float, setting: str = "timeout_s") -> Deadline:
        return cls(seconds, time.monotonic() + seconds, setting)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def sooner(self, seconds: float) -> Deadline:
        """The same budget ending ``seconds`` earlier: the time kept back for a fallback."""
        return replace(self, at=self.at - max(0.0, seconds))

    def exceeded(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"{what}: no answer within this call's deadline ({self.budget_s:g} s, {self.setting}); "
                                "the server is slow or hanging")


def within(deadline: Deadline, fn: Callable[[], T], what: str,
           on_abandon: Callable[[], None] | None = None) -> T:
    """``fn()``, or DeadlineExceeded once ``deadline`` passes. ``fn`` runs in a daemon thread (a
    daemon, so that a request still under way never holds up the process's exit); when the deadline
    passes first, ``on_abandon`` runs and whatever ``fn`` returns later is dropped."""
    if deadline.expired():
        raise deadline.exceeded(what)
    box: list[T] = []
    error: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            box.append(fn())
        except BaseException as e:  # handed to the caller's thread, which raises it
            error.append(e)
        finally:
            done.set()

    threading.Thread(target=work, name="tandem-cloud-call", daemon=True).start()
    if not done.wait(deadline.remaining()):
        if on_abandon is not None:
            on_abandon()
        raise deadline.exceeded(what)
    if error:
        raise error[0]
    return box[0]
