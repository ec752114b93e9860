"""On-device inference with ONNX Runtime alone: no torch import anywhere on this path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tandem.bundle.manifest import Bundle, Precision
from tandem.bundle.preprocess import PreprocessSpec, check_pixels, decode_image, to_input
from tandem.errors import ModelError


@dataclass(frozen=True)
class Guess:
    label: str
    probability: float


def session_options(threads: int | None = None, config: dict[str, str] | None = None) -> ort.SessionOptions:
    """``threads``: intra-op threads; None or 0 lets ONNX Runtime choose (one per core). ``config``: ONNX
    Runtime session config entries (e.g. ``session.force_spinning_stop``)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 0
    # One model call at a time per session; parallelism comes from intra-op threads.
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    return so


def load_session(source: Path | bytes, threads: int | None = None,
                 config: dict[str, str] | None = None) -> ort.InferenceSession:
    """A session from a model file, or from the model's bytes (a decrypted OTA model never touches disk)."""
    what = f"{len(source)} bytes of model" if isinstance(source, bytes) else str(source)
    try:
        return ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                    session_options(threads, config), providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own unexported exception types
        raise ModelError(f"{what}: ONNX Runtime cannot load this model ({e}); re-export the bundle") from e


class OnnxModel:
    """One ONNX model file with its preprocessing and labels, ready to run on pixels or files."""

    def __init__(self, path: Path | bytes, spec: PreprocessSpec, labels: list[str], precision: Precision = "fp32",
                 threads: int | None = None, label: str | None = None):
        # bytes: a model decrypted in memory (tandem.device); it has no path then.
        self.path = None if isinstance(path, bytes) else path
        # How errors name this model: the server's "NAME vN", else the file.
        self.label = label or (self.path.name if self.path is not None else "the model in memory")
        self.precision = precision
        self.spec = spec
        self.labels = labels
        self.session = load_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        # An image-to-image model's input has a free height and width (a name or None in ONNX Runtime's
        # shape, where a fixed size is a number): it takes a photo as large as it is.
        shape = self.session.get_inputs()[0].shape
        self.any_size = len(shape) == 4 and not any(isinstance(d, int) for d in shape[1:3])

    @classmethod
    def open(cls, bundle: Bundle, precision: Precision = "fp32", threads: int | None = None,
             label: str | None = None) -> OnnxModel:
        m = bundle.manifest
        return cls(bundle.model_path(precision), m.preprocessing, m.labels, precision, threads, label)

    def infer(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None,
              session: ort.InferenceSession | None = None) -> dict[str, np.ndarray]:
        """The one way Tandem runs a model (CLI, device, server): ``feeds`` by input name, ``outputs``
        by name (default: all), on ``session`` (default: this model's; the server also has a session
        with more threads for lone requests)."""
        names = list(self.output_names if outputs is None else outputs)
        try:
            outs = (session or self.session).run(names, feeds)
        except Exception as e:  # ONNX Runtime raises its own unexported exception types
            shapes = {k: v.shape for k, v in feeds.items()}
            raise ModelError(f"{self.label}: ONNX Runtime failed on inputs of shape {shapes}: {e}") from e
        return dict(zip(names, outs, strict=True))

    def run(self, pixels: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
        x = check_pixels(pixels, self.spec, self.any_size)
        if len(x) <= batch:  # the usual case on a device: no split, and no copy of the outputs to join them
            return self.infer({self.input_name: x})
        parts = [self.infer({self.input_name: x[i : i + batch]}) for i in range(0, len(x), batch)]
        return {n: np.concatenate([p[n] for p in parts]) for n in self.output_names}

    def pixels_from_files(self, paths: list[Path]) -> np.ndarray:
        return np.stack([to_input(decode_image(p), self.spec) for p in paths])

    def top_k(self, probabilities: np.ndarray, k: int = 5) -> list[list[Guess]]:
        k = max(1, min(k, probabilities.shape[1]))
        order = np.argsort(-probabilities, axis=1)[:, :k]
        return [[Guess(self.labels[j], float(row[j])) for j in idx] for row, idx in zip(probabilities, order, strict=True)]
