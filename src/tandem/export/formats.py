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
# Per kind of model, the variants (beside ONNX) Tandem makes of it, and whether an export without --formats
# makes them. A face embedding has no top class, so int8's bar (top-1 agreement) does not fit it: fp32 only so
# far (Core ML fp16 is checked by its spec, the same as a classifier's). Image-to-image bundles (deep art) take
# any height and width; their variants are fixed at the size the model was trained at: fp32, int8 (its bar a
# picture's PSNR against PyTorch's, variant_parity.INT8_PICTURE_DB) and Core ML's fp16 (its image_uint8 an RGB
# image output: coreml_export.py).
CLASSIFIER_VARIANTS = frozenset(f"{f}-{p}" for f, ps in PRECISIONS.items() if f != "onnx" for p in ps)
EMBEDDING_VARIANTS = frozenset({"litert-fp32", "executorch-fp32", "coreml-fp16"})


@dataclass(frozen=True)
class Supported:
    """What variants a model can have: ``keys``; ``what`` names the model in messages; ``by_default``: whether
    an export without --formats writes them (every one whose tools are installed)."""

    keys: frozenset[str]
    what: str
    by_default: bool = True


CLASSIFIER = Supported(CLASSIFIER_VARIANTS, "an image classifier")
# Opt-in for now (--formats): the demo and celebmatch's exports stay as quick as they were.
EMBEDDING = Supported(EMBEDDING_VARIANTS, "a face embedding", by_default=False)
# Opt-in as well: the size is fixed, so a phone app resizes to it (docs/bundle.md). Every variant a classifier gets.
IMAGE_TO_IMAGE = Supported(CLASSIFIER_VARIANTS, "an image-to-image model", by_default=False)

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


def parse_formats(text: str | None, tools: Tools, supported: Supported = CLASSIFIER) -> frozenset[str]:
    """The variants (``litert-fp32`` …) to write besides ONNX. ``text`` None: every variant the model
    ``supported`` whose tools are installed, when it makes them by default. A format without a precision
    (``litert``) names each precision of it the model supports; one it supports none of, or a precision it
    does not, is refused with what it does support."""
    if text is None:
        return frozenset(k for k in supported.keys if supported.by_default and not tools.missing(k.partition("-")[0]))
    keys: set[str] = set()
    unsupported: list[str] = []
    for word in (w.strip().lower() for w in text.split(",")):
        fmt, _, precision = word.partition("-")
        if fmt not in PRECISIONS or (precision and precision not in PRECISIONS[fmt]):
            known = ", ".join(f"{f}, " + ", ".join(f"{f}-{p}" for p in ps) for f, ps in PRECISIONS.items())
            raise ConfigError(f"--formats: unknown format {word!r}; choose from {known} (comma-separated)")
        if fmt == "onnx":
            continue
        wanted = {f"{fmt}-{p}" for p in ((precision,) if precision else PRECISIONS[fmt])}
        made = wanted & supported.keys if not precision else wanted
        if not made <= supported.keys or not made:
            unsupported.append(word)
        keys |= made
    if unsupported:
        have = ", ".join(sorted(supported.keys))
        made_here = f"Tandem makes only {have} of it so far" if have else "Tandem makes no variants but ONNX of it so far"
        keep = ",".join(["onnx", *sorted(keys & supported.keys)])
        raise ConfigError(f"--formats {','.join(unsupported)}: this is {supported.what}, and {made_here}; "
                          f"export with --formats {keep}")
    for fmt in sorted({k.partition("-")[0] for k in keys}):
        if why := tools.missing(fmt):
            raise ConfigError(f"--formats {fmt}: {why}")
    return frozenset(keys)
