"""Which formats `tandem export` writes: ``--formats onnx,litert`` parsed, and the default (what is installed).

ONNX is always written (the bundle's `models`, which every Tandem runtime reads); the others become
`variants` (docs/bundle.md). A format names every precision Tandem makes of it (``litert``: fp32 and int8);
``litert-fp32`` names one.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from tandem.errors import ConfigError

# Per format, the precisions `--formats FORMAT` writes.
PRECISIONS: dict[str, tuple[str, ...]] = {"onnx": ("fp32", "int8"), "litert": ("fp32", "int8")}
NOT_YET = ("executorch", "coreml")
# Where `make install` puts LiteRT's converter: a venv beside Tandem's own (Makefile, .venv-litert).
LITERT_VENV = ".venv-litert"


def default_litert_python() -> Path:
    """The converter venv's Python beside the venv Tandem runs in (make install's layout)."""
    return Path(sys.prefix).parent / LITERT_VENV / "bin" / "python"


@dataclass(frozen=True)
class Tools:
    """What this machine can convert and check: the converter venv's Python, and ai-edge-litert here."""

    litert_python: Path

    @classmethod
    def find(cls, litert_python: Path | None = None) -> Tools:
        return cls(litert_python or default_litert_python())

    def litert_missing(self) -> str | None:
        """Why LiteRT variants cannot be made here, or None."""
        if not self.litert_python.is_file():
            return (f"the LiteRT converter's venv is not there ({self.litert_python}); `make install` makes it "
                    f"({LITERT_VENV}), or set TANDEM_LITERT_PYTHON to a Python that has litert-torch")
        if importlib.util.find_spec("ai_edge_litert") is None:
            return "ai-edge-litert (LiteRT's interpreter, which checks each variant) is not installed: " \
                   "pip install 'tandem[litert]' (make install does)"
        return None


def parse_formats(text: str | None, tools: Tools, litert_ok: bool) -> frozenset[str]:
    """The variants (``litert-fp32`` …) to write besides ONNX. ``text`` None: every format whose tools are
    installed and that supports the model (``litert_ok``: a classifier, for now)."""
    if text is None:
        return frozenset(f"litert-{p}" for p in PRECISIONS["litert"]) if litert_ok and not tools.litert_missing() \
            else frozenset()
    keys: set[str] = set()
    for word in (w.strip().lower() for w in text.split(",")):
        fmt, _, precision = word.partition("-")
        if fmt in NOT_YET:
            raise ConfigError(f"--formats {word}: this Tandem does not write {fmt} yet; it writes "
                              f"{', '.join(PRECISIONS)}")
        if fmt not in PRECISIONS or (precision and precision not in PRECISIONS[fmt]):
            known = ", ".join(f"{f}, " + ", ".join(f"{f}-{p}" for p in ps) for f, ps in PRECISIONS.items())
            raise ConfigError(f"--formats: unknown format {word!r}; choose from {known} (comma-separated)")
        if fmt != "onnx":
            keys |= {f"{fmt}-{p}" for p in ((precision,) if precision else PRECISIONS[fmt])}
    if keys and not litert_ok:
        raise ConfigError("--formats litert: LiteRT variants are made for image classifiers so far; "
                          "export this run with --formats onnx")
    if keys and (why := tools.litert_missing()):
        raise ConfigError(f"--formats litert: {why}")
    return frozenset(keys)
