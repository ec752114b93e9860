"""A bundle's ExecuTorch variant (``.pte``) run by ExecuTorch's Python runtime (``executorch.runtime``).

The same answers as ``runtime.OnnxModel`` from the same pixels (uint8 RGB, NHWC; normalisation is in the
program), one photo a call: Tandem's ExecuTorch programs have a batch of 1, as phones run them. Phones run
the file with ExecuTorch's C++ runtime (its Android AAR or iOS frameworks); this runner is how Tandem checks
the file at export and how bench/formats.py times it.

ExecuTorch's Python runtime is built on PyTorch: its bindings import torch and take and give torch tensors
only, so this one module of the bundle package imports torch (pyproject's import contracts name it). ONNX
and LiteRT runners stay torch-free.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from tandem.bundle.batch_one import BatchOneModel
from tandem.bundle.manifest import Variant
from tandem.bundle.native_output import native_stderr, quiet_loggers
from tandem.bundle.preprocess import PreprocessSpec
from tandem.errors import ConfigError, ModelError

RUNTIME = "executorch"
# Importing the runtime imports torchao, which logs that its CUDA kernels do not load on a CPU build, and
# torch's pytree logs a deprecation.
IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_import() -> contextlib.AbstractContextManager[None]:
    return quiet_loggers(*IMPORT_LOGGERS)


def _runtime() -> tuple[Any, Any]:
    """ExecuTorch's runtime and torch (whose tensors its bindings take), or ConfigError saying what to install."""
    try:
        with quiet_import():
            import torch
            from executorch.runtime import Runtime
    except ImportError as e:
        raise ConfigError(f"running an ExecuTorch model needs {RUNTIME}: pip install 'tandem[executorch]' "
                          "(make install does)") from e
    return Runtime.get(), torch


def set_threads(threads: int) -> None:
    """ExecuTorch's XNNPACK thread pool is one per process: this sets its size for every program loaded here."""
    with quiet_import():
        from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)


class ExecuTorchModel(BatchOneModel):
    """One ExecuTorch variant of a bundle with its preprocessing and labels, ready to run on pixels."""

    FORMAT = "executorch"
    RUNTIME_NAME = "ExecuTorch"

    def __init__(self, source: Path | bytes, variant: Variant, spec: PreprocessSpec, labels: list[str],
                 threads: int | None = None, label: str | None = None):
        super().__init__(source, variant, spec, labels, threads, label)
        said: list[str] = []
        try:
            with native_stderr(said):
                runtime, self._torch = _runtime()
                if threads:
                    set_threads(threads)
                program = runtime.load_program(source if isinstance(source, bytes) else str(source))
                self._method = program.load_method("forward")
                self._program = program  # the method lives as long as its program
                # XNNPACK builds its kernels at the first call (and the CPU probe speaks on fd 2): made here, on zeros.
                self._method.execute([self._torch.zeros(variant.inputs[0].shape, dtype=self._torch.uint8)])
        except ConfigError:
            raise
        except Exception as e:  # the bindings raise RuntimeError and ValueError of their own wording
            raise ModelError(f"{self.label}: ExecuTorch cannot load this program ({e}; {' '.join(said)[:500]}); "
                             "re-export the bundle") from e

    def _one(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The program gives its outputs in the manifest's order. A copy of the photo goes in: torch warns about (and
        may write to) an array numpy keeps read-only, such as one made from a PIL image."""
        return [np.array(t) for t in self._method.execute([self._torch.from_numpy(np.array(pixels))])]
