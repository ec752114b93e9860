"""A bundle's LiteRT variant (``.tflite``) run by ai-edge-litert's interpreter: no torch, no ONNX Runtime.

The same answers as ``runtime.OnnxModel`` from the same pixels (uint8 RGB, NHWC; normalisation is in the
graph), one photo a call: Tandem's LiteRT files have a batch of 1, as phones run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tandem.bundle.manifest import Bundle, Variant
from tandem.bundle.native_output import native_stderr
from tandem.bundle.preprocess import PreprocessSpec, check_pixels
from tandem.errors import ConfigError, ModelError

RUNTIME = "ai-edge-litert"


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ConfigError(f"running a LiteRT model needs {RUNTIME}: pip install 'tandem[litert]' "
                          "(make install does)") from e
    return Interpreter


class LiteRtModel:
    """One LiteRT variant of a bundle with its preprocessing and labels, ready to run on pixels."""

    def __init__(self, source: Path | bytes, variant: Variant, spec: PreprocessSpec, labels: list[str],
                 threads: int | None = None, label: str | None = None):
        self.path = None if isinstance(source, bytes) else source
        self.label = label or (self.path.name if self.path is not None else "the LiteRT model in memory")
        self.variant = variant
        self.precision = variant.precision
        self.spec = spec
        self.labels = labels
        self.output_names = [t.name for t in variant.outputs]
        interpreter = _interpreter_class()
        said: list[str] = []
        try:
            with native_stderr(said):
                kw = {"model_content": source} if isinstance(source, bytes) else {"model_path": str(source)}
                self._interpreter = interpreter(**kw, num_threads=threads or None)
                self._run = self._interpreter.get_signature_runner(variant.signature or "serving_default")
                # LiteRT applies its CPU delegate (and says so on fd 2) at the first call: made here, on zeros.
                self._run(**{"pixels": np.zeros(variant.inputs[0].shape, np.uint8)})
        except Exception as e:  # the interpreter raises ValueError and RuntimeError of its own wording
            raise ModelError(f"{self.label}: LiteRT cannot load this model ({e}; {' '.join(said)[:500]}); "
                             "re-export the bundle") from e

    @classmethod
    def open(cls, bundle: Bundle, precision: str = "fp32", threads: int | None = None,
             label: str | None = None) -> LiteRtModel:
        key = f"litert-{precision}"
        path = bundle.variant_path(key)
        m = bundle.manifest
        return cls(path, m.variants[key], m.preprocessing, m.labels, threads, label)

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """``pixels``: N×H×W×3 (or H×W×3) uint8; the outputs by name, N rows each."""
        x = check_pixels(pixels, self.spec)
        rows = []
        for i in range(len(x)):
            try:
                out = self._run(**{"pixels": x[i : i + 1]})
            except Exception as e:  # as above
                raise ModelError(f"{self.label}: LiteRT failed on pixels of shape {x[i : i + 1].shape}: {e}") from e
            rows.append(out)
        if not rows:
            return {t.name: np.zeros((0, *t.shape[1:]), np.float32) for t in self.variant.outputs}
        return {n: np.concatenate([np.asarray(r[n]) for r in rows]) for n in self.output_names}
