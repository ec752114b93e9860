"""The per-call deadline on its own: what `within` hands back, and when it stops waiting."""

from __future__ import annotations

import threading
import time

import pytest

from tandem.device.deadline import Deadline, DeadlineExceeded, within
from tandem.errors import NotFound, ServerUnreachable


def test_within_returns_the_answer_or_raises_the_error_of_the_call() -> None:
    assert within(Deadline.after(5), lambda: 42, "x") == 42
    with pytest.raises(NotFound, match="no such"):
        within(Deadline.after(5), lambda: (_ for _ in ()).throw(NotFound("no such model")), "x")


def test_within_stops_waiting_at_the_deadline_and_says_so() -> None:
    release = threading.Event()
    abandoned: list[bool] = []
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"http://h: no answer within this call's deadline \(0.2 s, timeout_s\)"):
        within(Deadline.after(0.2), lambda: release.wait(30), "http://h", lambda: abandoned.append(True))
    assert 0.15 <= time.monotonic() - start < 2 and abandoned == [True]
    release.set()
    assert issubclass(DeadlineExceeded, ServerUnreachable)  # apps that catch "no answer" catch this too


def test_an_expired_deadline_starts_nothing() -> None:
    ran: list[bool] = []
    with pytest.raises(DeadlineExceeded):
        within(Deadline.after(0.5).sooner(1.0), lambda: ran.append(True), "x")
    assert ran == []
    d = Deadline.after(10)
    assert 8.9 < d.sooner(1).remaining() <= 9 and d.sooner(-5).at == d.at
