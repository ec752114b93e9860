"""What the parser fuzzers count: inputs tried and crashes, per target.

A crash is anything but a clean result or one of the errors the target may raise (Tandem's own,
tandem.errors): a stray IndexError, a RecursionError, a hang. bench/hardening.py reads the counts
from the file TANDEM_FUZZ_TALLY names (written at the end of the pytest session, see conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tandem.errors import TandemError

T = TypeVar("T")
# Every target answers in milliseconds; this only catches an input that makes a parser loop. It is
# generous because two shared cores can stall any process for a while.
HANG_S = 20.0
COUNTS: dict[str, dict[str, int]] = {}


class Hang(BaseException):
    """An input ran past HANG_S. A BaseException, so that no ``except Exception`` in the code under
    test can turn it into an ordinary error."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hang(signum: int, frame: Any) -> None:
        raise Hang(f"no answer after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(target: str, fn: Callable[[], T], allowed: tuple[type[BaseException], ...] = (TandemError,)) -> T | None:
    """``fn()``, counted under ``target``: its result, or None when it raised an ``allowed`` error.
    Anything else is counted as a crash and raised again, for Hypothesis to report and shrink."""
    counts = COUNTS.setdefault(target, {"inputs": 0, "crashes": 0})
    counts["inputs"] += 1
    try:
        with _alarm(HANG_S):
            return fn()
    except allowed:
        return None
    except BaseException:
        counts["crashes"] += 1
        raise


def add(target: str, inputs: int, crashes: int) -> None:
    """Count inputs tried elsewhere (the API fuzzer sends its own requests): a crash is a 5xx there."""
    counts = COUNTS.setdefault(target, {"inputs": 0, "crashes": 0})
    counts["inputs"] += inputs
    counts["crashes"] += crashes


def write(path: Path) -> None:
    path.write_text(json.dumps(COUNTS, indent=2, sort_keys=True) + "\n")


def budget(n: int) -> int:
    """``n`` examples in the normal suite, TANDEM_FUZZ_SCALE times as many for a longer run."""
    return max(1, int(n * float(os.environ.get("TANDEM_FUZZ_SCALE", "1"))))
