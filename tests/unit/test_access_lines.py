"""The access log's writer (server/observe.py): lines gathered on the event loop and written together, unless the
``tandem.access`` logger was given handlers of its own."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from tandem.server import observe
from tandem.server.observe import AccessLines, access_log, setup_access_log


@pytest.fixture()
def served(monkeypatch):
    """The access logger as `tandem serve` sets it up, with only its own handler, and a fresh stderr: a
    function to call in the test's body (pytest's output and log capture replace both once the fixtures are
    made); the logger is put back afterwards."""
    handlers, level, propagate = access_log.handlers[:], access_log.level, access_log.propagate

    def as_served() -> io.StringIO:
        access_log.handlers[:] = []
        setup_access_log()
        out = io.StringIO()
        monkeypatch.setattr("sys.stderr", out)
        return out

    yield as_served
    access_log.handlers[:] = handlers
    access_log.setLevel(level)
    access_log.propagate = propagate


def _line(i: int) -> str:
    return json.dumps({"request_id": f"r{i}", "status": 200})


def test_lines_are_written_together_once_the_interval_has_passed(served):
    stderr = served()

    async def main() -> list[str]:
        lines = AccessLines(0.05)
        for i in range(3):
            lines.write(_line(i))
        held = stderr.getvalue()
        await asyncio.sleep(0.2)
        return [held, stderr.getvalue()]

    held, written = asyncio.run(main())
    assert held == ""  # nothing yet: one write for the three
    assert [json.loads(x)["request_id"] for x in written.splitlines()] == ["r0", "r1", "r2"]


def test_flush_writes_at_once_and_a_full_batch_does_not_wait(served, monkeypatch):
    monkeypatch.setattr(observe, "FLUSH_LINES", 4)
    stderr = served()

    async def main() -> tuple[int, int]:
        lines = AccessLines(60)  # an interval no test waits for
        for i in range(4):
            lines.write(_line(i))
        full = len(stderr.getvalue().splitlines())
        lines.write(_line(4))
        lines.flush()  # what the app's shutdown does
        return full, len(stderr.getvalue().splitlines())

    assert asyncio.run(main()) == (4, 5)


def test_exit_writes_what_is_still_gathered(served):
    stderr = served()

    async def main() -> AccessLines:
        lines = AccessLines(60)
        lines.write(_line(0))
        return lines

    kept = asyncio.run(main())  # the loop is gone, its timer with it; held as an app holds its writer
    assert stderr.getvalue() == ""
    observe._flush_all()  # registered with atexit (it writes every live writer's lines: look for this one's)
    assert _line(0) in stderr.getvalue().splitlines()
    del kept


def test_a_logger_given_other_handlers_gets_every_line_as_a_record_at_once(served):
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    stderr = served()
    capture = Capture()
    access_log.addHandler(capture)
    try:
        async def main() -> None:
            AccessLines(60).write(_line(7))

        asyncio.run(main())
    finally:
        access_log.removeHandler(capture)
    assert records == [_line(7)]
    assert stderr.getvalue() == _line(7) + "\n"  # the stderr handler wrote it at once too


def test_zero_writes_each_line_at_once(served):
    stderr = served()

    async def main() -> None:
        AccessLines(0).write(_line(1))

    asyncio.run(main())
    assert stderr.getvalue() == _line(1) + "\n"


def test_a_stderr_that_cannot_be_written_loses_the_lines_not_the_request(served, monkeypatch, capfd):
    served()

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("sys.stderr", Full())

    async def main() -> None:
        lines = AccessLines(60)
        lines.write(_line(3))
        lines.flush()  # raises nothing: the answer was already sent, the log is what failed

    asyncio.run(main())
    assert "access lines not written: [Errno 28] No space left on device" in capfd.readouterr().err
