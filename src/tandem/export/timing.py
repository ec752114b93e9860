"""How long each model file of an export took to make, said on the exporting module's debug log.

Each record carries ``(key, seconds)`` in its ``variant_seconds`` attribute, so a caller that wants the figures
(bench/formats.py) attaches a handler to ``tandem.export`` instead of the exporter returning them.
"""

from __future__ import annotations

import logging

ATTRIBUTE = "variant_seconds"


def log_seconds(log: logging.Logger, key: str, seconds: float) -> None:
    """``key`` (``executorch-int8`` …) took ``seconds`` to convert (and, for ONNX int8, to quantise)."""
    log.debug("%s: made in %.2f s", key, seconds, extra={ATTRIBUTE: (key, seconds)})
