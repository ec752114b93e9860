"""A classifier's LiteRT variants: converted in the converter's venv, then run here with ai-edge-litert on
real photos and kept only if they reproduce the PyTorch model (docs/bundle.md, "Variants").

The checkpoint's network goes to the converter as a torch.export program (the uint8 NHWC input, the cast
and the normalisation inside it, batch 1), saved here with Tandem's torch and loaded there with the same.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from tandem.bundle import Parity, Software, TensorSpec, Variant
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.preprocess import PreprocessSpec
from tandem.errors import BundleError
from tandem.export import litert_convert
from tandem.export.onnx_export import INPUT, warnings_to_debug_log

log = logging.getLogger(__name__)

FILES = {"fp32": "model.tflite", "int8": "model.int8.tflite"}
# fp32 must match PyTorch as closely as ONNX must (exporter.py); int8 must pick the same class for 99% of
# the photos, or for as many as the int8 ONNX model does (a barely trained model has near ties).
FP32_MAX_ABS = 1e-4
INT8_AGREEMENT = 0.99
CONVERT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class ParityPhotos:
    """Real photos, PyTorch's outputs on them (in ``outputs`` order), and the int8 ONNX model's top-1
    agreement with PyTorch on them (the int8 bar)."""

    pixels: np.ndarray
    on: Literal["test", "train"]
    reference: list[np.ndarray]
    onnx_int8_agreement: float


def _save_program(model: torch.nn.Module, path: Path, height: int, width: int) -> list[int]:
    shape = [1, height, width, 3]
    with warnings_to_debug_log(log), torch.no_grad():
        program = torch.export.export(model, (torch.zeros(shape, dtype=torch.uint8),))
        torch.export.save(program, str(path))
    return shape


def _convert(python: Path, request: dict, tmp: Path) -> dict:
    request_path = tmp / "request.json"
    request_path.write_text(json.dumps(request), "utf-8")
    # -I: the converter's venv sees neither Tandem's packages nor PYTHON* settings of this process.
    cmd = [str(python), "-I", litert_convert.__file__, str(request_path)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BundleError(f"the LiteRT converter ({python}) could not run: {e}; run `make install` again, or "
                          "export with --formats onnx") from e
    log.debug("LiteRT converter output:\n%s\n%s", done.stdout[-20000:], done.stderr[-20000:])
    if done.returncode != 0:
        said = [ln for ln in done.stderr.splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(said) if ln.startswith("LiteRT conversion failed")), "\n".join(said[-8:]))
        raise BundleError(f"the LiteRT converter failed (exit {done.returncode}): {reason[:2000]}\n"
                          "Export without it (--formats onnx), or with fp32 only (--formats onnx,litert-fp32)")
    return json.loads(Path(request["report"]).read_text("utf-8"))


def _parity(got: dict[str, np.ndarray], photos: ParityPhotos, outputs: list[str]) -> Parity:
    max_abs = max(float(np.abs(got[n] - r).max()) for n, r in zip(outputs, photos.reference, strict=True))
    agreement = None
    if "probabilities" in outputs:
        ref = photos.reference[outputs.index("probabilities")]
        agreement = float((got["probabilities"].argmax(1) == ref.argmax(1)).mean())
    return Parity(images=len(photos.pixels), on=photos.on, max_abs=max_abs if np.isfinite(max_abs) else 1e30,
                  top1_agreement=agreement)


def _failed(key: str, parity: Parity, photos: ParityPhotos) -> str | None:
    """Why the variant ``key`` fails its parity check (so it is not written), or None."""
    if key.endswith("fp32") and parity.max_abs > FP32_MAX_ABS:
        return (f"{key}: its outputs differ from PyTorch's by up to {parity.max_abs:.3g} on {parity.images} "
                f"{parity.on} photos (at most {FP32_MAX_ABS:g} is allowed), so it is not written; export without it: "
                "--formats onnx")
    bar = min(INT8_AGREEMENT, photos.onnx_int8_agreement)
    if key.endswith("int8") and (parity.top1_agreement or 0.0) < bar:
        return (f"{key}: it picks PyTorch's top class on {parity.top1_agreement:.0%} of {parity.images} {parity.on} "
                f"photos (at least {bar:.0%} is needed: the int8 ONNX model's agreement, or 99%), so it is not "
                "written; export with fp32 only: --formats onnx,litert-fp32")
    return None


def export_litert(model: torch.nn.Module, stage: Path, keys: frozenset[str], python: Path, spec: PreprocessSpec,
                  labels: list[str], outputs: list[TensorSpec], calibration: np.ndarray,
                  photos: ParityPhotos, asked: bool = True) -> dict[str, Variant]:
    """Write the LiteRT ``keys`` (``litert-fp32``, ``litert-int8``) of ``model`` (PixelModel) into ``stage``;
    each checked on ``photos`` before it is written. Returns their manifest entries. A variant that fails
    its check stops the export when the user ``asked`` for it (--formats); one made only because its tools
    are installed is left out with a warning instead: a barely trained model's near-ties can fail int8's
    agreement, and an export nobody asked to make LiteRT must not fail on it."""
    precisions = [p for p in ("fp32", "int8") if f"litert-{p}" in keys]
    names = [t.name for t in outputs]
    with tempfile.TemporaryDirectory(prefix="tandem-litert-") as tmp_name:
        tmp = Path(tmp_name)
        request: dict = {"program": str(tmp / "program.pt2"), "input": INPUT, "outputs": names,
                         "report": str(tmp / "report.json"), "fp32": str(tmp / FILES["fp32"])}
        request["example_shape"] = _save_program(model, tmp / "program.pt2", spec.height, spec.width)
        if "int8" in precisions:
            np.save(tmp / "calibration.npy", calibration)
            request |= {"int8": str(tmp / FILES["int8"]), "calibration": str(tmp / "calibration.npy")}
        report = _convert(python, request, tmp)
        log.debug("LiteRT conversion took %s s", report["seconds"])

        variants: dict[str, Variant] = {}
        for precision in precisions:
            key = f"litert-{precision}"
            variant = Variant(
                format="litert", precision=precision, file=FILES[precision], layout="NHWC",  # type: ignore[arg-type]
                inputs=[TensorSpec(name=INPUT, dtype="uint8", shape=list(request["example_shape"]))],
                outputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=[1, *t.shape[1:]]) for t in outputs],
                signature="serving_default", runtime=Software(**report["runtime"]),
                converter=Software(**report["converter"]),
                parity=Parity(images=1, on="test", max_abs=0.0),  # measured next
            )
            got = LiteRtModel(tmp / FILES[precision], variant, spec, labels, label=key).run(photos.pixels)
            parity = _parity(got, photos, names)
            why = _failed(key, parity, photos)
            if why is not None and asked:
                raise BundleError(why)
            if why is not None:
                log.warning("%s", why)
                continue
            shutil.move(tmp / FILES[precision], stage / FILES[precision])
            variants[key] = variant.model_copy(update={"parity": parity})
    return variants
