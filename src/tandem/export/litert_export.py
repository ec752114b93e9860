"""A model's LiteRT variants (a classifier's; a face embedding's fp32): converted in the converter's venv, then
run here with ai-edge-litert on real photos and kept only if they reproduce the PyTorch model (docs/bundle.md,
"Variants").

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tandem.bundle import Parity, Quantization, Software, TensorSpec, Variant
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.preprocess import PreprocessSpec
from tandem.errors import BundleError
from tandem.export import litert_convert
from tandem.export.onnx_export import INPUT, warnings_to_debug_log
from tandem.export.timing import log_seconds
from tandem.export.variant_parity import ParityPhotos, keep

log = logging.getLogger(__name__)

FILES = {"fp32": "model.tflite", "int8": "model.int8.tflite"}
CONVERT_TIMEOUT_S = 1800


def _save_program(model: torch.nn.Module, path: Path, height: int, width: int) -> list[int]:
    shape = [1, height, width, 3]
    with warnings_to_debug_log(log), torch.no_grad():
        program = torch.export.export(model, (torch.zeros(shape, dtype=torch.uint8),))
        torch.export.save(program, str(path))
    return shape


def _convert(python: Path, request: dict, tmp: Path, meanwhile: Callable[[], None] | None = None) -> dict:
    """Run the converter on ``request``; ``meanwhile`` runs here while it does (another format's conversion:
    the converter is a process of its own, so a second core is not idle)."""
    request_path = tmp / "request.json"
    request_path.write_text(json.dumps(request), "utf-8")
    # -I: the converter's venv sees neither Tandem's packages nor PYTHON* settings of this process.
    cmd = [str(python), "-I", litert_convert.__file__, str(request_path)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Files, not pipes: nobody reads a pipe while ``meanwhile`` runs, and a full one would stall the converter.
    with (tmp / "stdout.txt").open("w+") as out, (tmp / "stderr.txt").open("w+") as err:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        except OSError as e:
            raise BundleError(f"the LiteRT converter ({python}) could not run: {e}; run `make install` again, or "
                              "export with --formats onnx") from e
        try:
            if meanwhile is not None:
                meanwhile()
            returncode = proc.wait(timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise BundleError(f"the LiteRT converter ({python}) took over {CONVERT_TIMEOUT_S} s; export with "
                              "--formats onnx") from e
        finally:
            if proc.poll() is None:  # a timeout, or ``meanwhile`` failed: the conversion is not wanted any more
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    log.debug("LiteRT converter output:\n%s\n%s", stdout[-20000:], stderr[-20000:])
    if returncode != 0:
        said = [ln for ln in stderr.splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(said) if ln.startswith("LiteRT conversion failed")), "\n".join(said[-8:]))
        raise BundleError(f"the LiteRT converter failed (exit {returncode}): {reason[:2000]}\n"
                          "Export without it (--formats onnx), or with fp32 only (--formats onnx,litert-fp32)")
    return json.loads(Path(request["report"]).read_text("utf-8"))


def export_litert(model: torch.nn.Module, stage: Path, keys: frozenset[str], python: Path, spec: PreprocessSpec,
                  labels: list[str], outputs: list[TensorSpec], calibration: np.ndarray,
                  photos: ParityPhotos, asked: bool = True,
                  meanwhile: Callable[[], None] | None = None) -> dict[str, Variant]:
    """Write the LiteRT ``keys`` (``litert-fp32``, ``litert-int8``) of ``model`` (PixelModel) into ``stage``;
    each checked on ``photos`` before it is written. Returns their manifest entries. A variant that fails
    its check stops the export when the user ``asked`` for it (--formats); one made only because its tools
    are installed is left out with a warning instead: a barely trained model's near-ties can fail int8's
    agreement, and an export nobody asked to make LiteRT must not fail on it. ``meanwhile`` runs while the
    converter does (the other formats' conversions)."""
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
        report = _convert(python, request, tmp, meanwhile)
        for precision, seconds in report["seconds"].items():  # in the converter's process, for each file
            log_seconds(log, f"litert-{precision}", seconds)

        variants: dict[str, Variant] = {}
        for precision in precisions:
            key = f"litert-{precision}"
            variant = Variant(
                format="litert", precision=precision, file=FILES[precision], layout="NHWC",  # type: ignore[arg-type]
                inputs=[TensorSpec(name=INPUT, dtype="uint8", shape=list(request["example_shape"]))],
                outputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=[1, *t.shape[1:]]) for t in outputs],
                signature="serving_default", runtime=Software(**report["runtime"]),
                # int8: the fp32 file quantised by ai-edge-quantizer (litert_convert.quantize_int8).
                converter=Software(**report["quantizer" if precision == "int8" else "converter"]),
                # int8: ai-edge-quantizer's recipe as litert_convert.quantize_int8 ran it, and on how many photos.
                quantization=Quantization(**report["quantization"], calibration_images=len(calibration))
                if precision == "int8" else None,
                parity=Parity(images=1, on="test", max_abs=0.0),  # measured next
            )
            got = LiteRtModel(tmp / FILES[precision], variant, spec, labels, label=key).run(photos.pixels)
            kept = keep(key, variant, got, photos, asked, log)
            if kept is not None:
                shutil.move(tmp / FILES[precision], stage / FILES[precision])
                variants[key] = kept
    return variants
