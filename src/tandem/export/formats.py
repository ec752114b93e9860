"""Which formats `tandem export` writes: ``--formats onnx,litert,executorch,coreml`` parsed, and the default
(every format whose tools are installed).

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
PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "int8"), "litert": ("fp32", "int8"), "executorch": ("fp32", "int8"), "coreml": ("fp16",),
}
# Where `make install` puts LiteRT's converter: a venv beside Tandem's own (Makefile, .venv-litert).
LITERT_VENV = ".venv-litert"


def default_litert_python() -> Path:
    """The converter venv's Python beside the venv Tandem runs in (make install's layout)."""
    return Path(sys.prefix).parent / LITERT_VENV / "bin" / "python"


@dataclass(frozen=True)
class Tools:
    """What this machine can convert and check: the LiteRT converter venv's Python, and the packages here."""

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

    def missing(self, fmt: str) -> str | None:
        """Why variants of ``fmt`` cannot be made here, or None."""
        if fmt == "litert":
            return self.litert_missing()
        # ExecuTorch converts and runs in Tandem's own venv; Core ML converts here and runs only on Apple's systems.
        package = {"executorch": "executorch", "coreml": "coremltools"}.get(fmt)
        if package is not None and importlib.util.find_spec(package) is None:
            return f"{package} is not installed: pip install 'tandem[{fmt}]' (make install does)"
        return None


def parse_formats(text: str | None, tools: Tools, variants_ok: bool) -> frozenset[str]:
    """The variants (``litert-fp32`` …) to write besides ONNX. ``text`` None: every format whose tools are
    installed, when the model supports variants (``variants_ok``: a classifier, for now)."""
    if text is None:
        return frozenset(f"{f}-{p}" for f, ps in PRECISIONS.items() if f != "onnx" for p in ps
                         if variants_ok and not tools.missing(f))
    keys: set[str] = set()
    for word in (w.strip().lower() for w in text.split(",")):
        fmt, _, precision = word.partition("-")
        if fmt not in PRECISIONS or (precision and precision not in PRECISIONS[fmt]):
            known = ", ".join(f"{f}, " + ", ".join(f"{f}-{p}" for p in ps) for f, ps in PRECISIONS.items())
            raise ConfigError(f"--formats: unknown format {word!r}; choose from {known} (comma-separated)")
        if fmt != "onnx":
            keys |= {f"{fmt}-{p}" for p in ((precision,) if precision else PRECISIONS[fmt])}
    formats = sorted({k.partition("-")[0] for k in keys})
    if keys and not variants_ok:
        raise ConfigError(f"--formats {','.join(formats)}: variants other than ONNX are made for image classifiers "
                          "so far; export this run with --formats onnx")
    for fmt in formats:
        if why := tools.missing(fmt):
            raise ConfigError(f"--formats {fmt}: {why}")
    return frozenset(keys)
