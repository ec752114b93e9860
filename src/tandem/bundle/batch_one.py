"""What a bundle's phone variants share when Tandem runs them: LiteRT's (``litert_runtime.LiteRtModel``) and
ExecuTorch's (``executorch_runtime.ExecuTorchModel``). Each file takes one photo a call (a batch of 1, as phones
run it: uint8 RGB NHWC pixels in, normalisation inside) and gives the manifest's outputs, the same answers as
``runtime.OnnxModel``. Each runner loads its file its own way; running photos through it is the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from tandem.bundle.manifest import Bundle, Variant
from tandem.bundle.preprocess import PreprocessSpec, check_pixels
from tandem.errors import ModelError


class BatchOneModel:
    """One variant of a bundle with its preprocessing and labels, run one photo a call by ``_one``."""

    FORMAT: ClassVar[str]  # the variant key's first part: litert, executorch
    RUNTIME_NAME: ClassVar[str]  # as messages name it: LiteRT, ExecuTorch

    def __init__(self, source: Path | bytes, variant: Variant, spec: PreprocessSpec, labels: list[str],
                 threads: int | None = None, label: str | None = None) -> None:
        """``threads``: the runtime's threads (the runner's own loading uses them; None: the runtime's default)."""
        self.path = None if isinstance(source, bytes) else source
        self.label = label or (self.path.name if self.path is not None else f"the {self.RUNTIME_NAME} model in memory")
        self.variant = variant
        self.precision = variant.precision
        self.spec = spec
        self.labels = labels
        self.output_names = [t.name for t in variant.outputs]

    @classmethod
    def open(cls, bundle: Bundle, precision: str = "fp32", threads: int | None = None,
             label: str | None = None) -> Self:
        key = f"{cls.FORMAT}-{precision}"
        m = bundle.manifest
        return cls(bundle.variant_path(key), m.variants[key], m.preprocessing, m.labels, threads, label)

    def _one(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The outputs, in the manifest's order, for one photo (1×H×W×3 uint8)."""
        raise NotImplementedError

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """``pixels``: N×H×W×3 (or H×W×3) uint8; the outputs by name, N rows each."""
        x = check_pixels(pixels, self.spec)
        rows = []
        for i in range(len(x)):
            one = x[i : i + 1]
            try:
                rows.append(self._one(one))
            except Exception as e:  # the runtimes raise RuntimeError and ValueError of their own wording
                raise ModelError(f"{self.label}: {self.RUNTIME_NAME} failed on pixels of shape {one.shape}: {e}") from e
        if not rows:
            return {t.name: np.zeros((0, *t.shape[1:]), np.float32) for t in self.variant.outputs}
        return {n: np.concatenate([r[k] for r in rows]) for k, n in enumerate(self.output_names)}
