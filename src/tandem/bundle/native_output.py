"""Keeping runtimes' and converters' own chatter off the user's terminal: native writes to file descriptor 2,
and log records they make while being imported.

LiteRT's interpreter ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.") and ExecuTorch's runtime
("[cpuinfo_utils.cpp:71] Reading file ...") write from C++ straight to fd 2, past Python's sys.stderr; what
they say matters only when loading a model fails, so it is kept and shown then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr(captured: list[str]) -> Iterator[None]:
    """Within the block, what is written to fd 2 is appended (its first 4000 bytes) to ``captured``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read(4000).decode("utf-8", "replace").strip())


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Within the block, the loggers ``names`` say only errors: what converters and runtimes log while they are
    imported (torchao: its CUDA kernels do not load on a CPU build; coremltools: untested torch versions, no
    Core ML framework off macOS) is nothing a Tandem user can act on."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
