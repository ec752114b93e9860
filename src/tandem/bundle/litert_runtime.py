"""A bundle's LiteRT variant (``.tflite``) run by ai-edge-litert's interpreter: no torch, no ONNX Runtime.

The same answers as ``runtime.OnnxModel`` from the same pixels (uint8 RGB, NHWC; normalisation is in the
graph), one photo a call: Tandem's LiteRT files have a batch of 1, as phones run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tandem.bundle.batch_one import BatchOneModel
from tandem.bundle.manifest import Variant
from tandem.bundle.native_output import native_stderr
from tandem.bundle.preprocess import PreprocessSpec
from tandem.errors import ConfigError, ModelError

RUNTIME = "ai-edge-litert"


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ConfigError(f"running a LiteRT model needs {RUNTIME}: pip install 'tandem[litert]' "
                          "(make install does)") from e
    return Interpreter


class LiteRtModel(BatchOneModel):
    """One LiteRT variant of a bundle with its preprocessing and labels, ready to run on pixels."""

    FORMAT = "litert"
    RUNTIME_NAME = "LiteRT"

    def __init__(self, source: Path | bytes, variant: Variant, spec: PreprocessSpec, labels: list[str],
                 threads: int | None = None, label: str | None = None):
        super().__init__(source, variant, spec, labels, threads, label)
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

    def _one(self, pixels: np.ndarray) -> list[np.ndarray]:
        out = self._run(**{"pixels": pixels})
        return [np.asarray(out[n]) for n in self.output_names]
