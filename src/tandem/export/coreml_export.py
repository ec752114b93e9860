"""A model's Core ML variant: an ML program (``.mlpackage``) at fp16, converted here by coremltools and
checked by reading its spec, since Core ML predicts only on Apple's systems (docs/bundle.md, "Variants").

Core ML has no uint8 tensor input; its form of 8-bit RGB pixels is an image input (a CVPixelBuffer or
CGImage, which Vision hands over as it is), which the program sees as floats 0..255 in N×3×H×W. So the
checkpoint's network is converted as PixelModel behind a transpose to NHWC: the division by 255 and the
normalisation stay inside the program, as in every variant. Nor has it uint8 outputs: a bundle's uint8
N×H×W×3 output (a deep-art picture's ``image_uint8``) becomes an RGB image output the same way, the program's
rounded 0..255 floats transposed to N×3×H×W, which Core ML hands back as a CVPixelBuffer of 8-bit pixels.
An ``.mlpackage`` is a folder; the bundle holds it as one file, ``model.mlpackage.zip`` (stored, not deflated:
fixed order and timestamps), so hashes, archives, OTA and deltas treat it like any model file. Unzipped it is
the ``model.mlpackage`` folder Xcode and ``MLModel.compileModel(at:)`` take.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import time
import zipfile
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tandem.bundle import Software, SpecCheck, TensorSpec, Variant
from tandem.bundle.native_output import quiet_loggers
from tandem.errors import BundleError
from tandem.export.onnx_export import INPUT, warnings_to_debug_log
from tandem.export.timing import log_seconds

log = logging.getLogger(__name__)

FILE = "model.mlpackage.zip"
PACKAGE = "model.mlpackage"
# ML programs need iOS 15; 16 (macOS 13) is where fp16 programs with fp32 outputs are common ground.
TARGET = "iOS16"
NOT_MEASURED = ("Core ML predicts only on macOS and iOS, and this export ran elsewhere: the converted program's "
                "inputs, outputs, precision and operations were checked instead of its outputs")
# The ops that do the arithmetic an fp16 program must do in fp16.
_COMPUTE_OPS = ("conv", "linear", "matmul")
_LOGGERS = ("coremltools", "torchao", "torch.utils._pytree")
# What coremltools adds to a package converted beside ExecuTorch: its Core ML delegate's debug map (op → the
# torch.export node), which Core ML does not read (the package's Manifest.json does not list it).
_NOT_CORE_ML = {"executorch_debug_handle_mapping.json"}


def _is_picture(t: TensorSpec) -> bool:
    """A uint8 N×H×W×3 output: 8-bit RGB pixels, which Core ML gives as an image."""
    return t.dtype == "uint8" and len(t.shape) == 4 and t.shape[-1] == 3


class _FromImage(torch.nn.Module):
    """Core ML's image input (N×3×H×W floats 0..255) into PixelModel's pixels (N×H×W×3), and ``pictures``' outputs
    (by position) out as N×3×H×W floats for Core ML's image outputs."""

    def __init__(self, model: torch.nn.Module, pictures: tuple[bool, ...] = ()) -> None:
        super().__init__()
        self.model = model
        self.pictures = pictures

    def forward(self, image: torch.Tensor) -> Any:
        out = self.model(image.permute(0, 2, 3, 1))
        if not any(self.pictures):
            return out
        return tuple(o.float().permute(0, 3, 1, 2) if picture else o for o, picture in zip(out, self.pictures, strict=True))


def _import_coremltools() -> Any:
    with quiet_loggers(*_LOGGERS):
        import coremltools

    log.debug("coremltools %s converts from torch %s (it names the torch versions it was tested with when "
              "imported); the spec check below stands for its result", coremltools.__version__, torch.__version__)
    return coremltools


def convert(model: torch.nn.Module, height: int, width: int, outputs: list[TensorSpec], package: Path) -> None:
    """``model`` (PixelModel) as an fp16 ML program with an RGB image input (and an RGB image output for each
    uint8 picture of ``outputs``, float32 arrays for the others), saved as the folder ``package``; BundleError
    with coremltools' words when it cannot."""
    ct = _import_coremltools()
    said = io.StringIO()  # coremltools' progress bars
    pictures = tuple(_is_picture(t) for t in outputs)
    try:
        with warnings_to_debug_log(log), quiet_loggers(*_LOGGERS), contextlib.redirect_stderr(said), torch.no_grad():
            program = torch.export.export(_FromImage(model, pictures).eval(), (torch.zeros(1, 3, height, width),))
            mlmodel = ct.convert(
                program.run_decompositions({}), convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, TARGET),
                inputs=[ct.ImageType(name=INPUT, shape=(1, 3, height, width), color_layout=ct.colorlayout.RGB)],
                outputs=[ct.ImageType(name=t.name, color_layout=ct.colorlayout.RGB) if picture
                         else ct.TensorType(name=t.name, dtype=np.float32) for t, picture in zip(outputs, pictures, strict=True)])
            mlmodel.save(str(package))
    except Exception as e:  # coremltools' own error types; their words name the op
        raise BundleError(f"coremltools could not convert the model: {type(e).__name__}: {str(e)[:2000]}\n"
                          "Export without it: --formats onnx (or name the formats you want)") from e
    finally:
        log.debug("coremltools said: %s", said.getvalue()[-4000:])


def zip_package(package: Path, out: Path) -> None:
    """The folder ``package`` as ``out``: entries ``model.mlpackage/…`` in sorted order, stored, dated 1980."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in package.rglob("*") if p.is_file() and p.name not in _NOT_CORE_ML):
            info = zipfile.ZipInfo(f"{PACKAGE}/{path.relative_to(package).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())


def check_spec(zipped: Path, height: int, width: int, outputs: list[TensorSpec]) -> tuple[SpecCheck, list[str]]:
    """Read the ML program back from ``zipped`` and check it takes an RGB image of height×width, gives
    ``outputs`` by name (float32 arrays, and RGB images of height×width for uint8 pictures), and computes in
    fp16. Returns the record and what failed."""
    ct = _import_coremltools()
    with tempfile.TemporaryDirectory(prefix="tandem-coreml-") as tmp:
        with zipfile.ZipFile(zipped) as zf:
            zf.extractall(tmp)  # written by zip_package just now: names are its own
        with quiet_loggers(*_LOGGERS):
            spec = ct.models.MLModel(str(Path(tmp) / PACKAGE), skip_model_load=True).get_spec()
    failed: list[str] = []
    checked: list[str] = []

    def check(ok: bool, what: str, found: object) -> None:
        checked.append(what)
        if not ok:
            failed.append(f"{what}: found {found}")

    kind = spec.WhichOneof("Type")
    check(kind == "mlProgram", "an ML program", kind)
    ins = spec.description.input
    image = ins[0].type.imageType if len(ins) == 1 and ins[0].type.WhichOneof("Type") == "imageType" else None
    check(len(ins) == 1 and ins[0].name == INPUT and image is not None
          and (image.width, image.height, image.colorSpace) == (width, height, ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB),
          f"one input, {INPUT!r}: an RGB image, {width} wide and {height} high",
          [(i.name, str(i.type).replace("\n", " ")) for i in ins])
    rgb = ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    outs = [(o.name, "imageType", o.type.imageType.colorSpace, [o.type.imageType.height, o.type.imageType.width])
            if o.type.WhichOneof("Type") == "imageType" else
            (o.name, o.type.WhichOneof("Type"), o.type.multiArrayType.dataType, list(o.type.multiArrayType.shape))
            for o in spec.description.output]
    want = [(t.name, "imageType", rgb, [height, width]) if _is_picture(t) else
            (t.name, "multiArrayType", ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32, [1, *t.shape[1:]])
            for t in outputs]
    check(outs == want, "outputs " + ", ".join(f"{n!r} an RGB image {s[1]} wide and {s[0]} high" if kind == "imageType"
                                               else f"{n!r} float32 {s}" for n, kind, _, s in want), outs)
    ops: Counter[str] = Counter()
    compute_dtypes: set[int] = set()
    if kind == "mlProgram":
        main = spec.mlProgram.functions["main"]
        for op in main.block_specializations[main.opset].operations:
            if op.type != "const":
                ops[op.type] += 1
            if op.type in _COMPUTE_OPS:
                compute_dtypes |= {o.type.tensorType.dataType for o in op.outputs}
    check(sum(ops[t] for t in _COMPUTE_OPS) > 0 and compute_dtypes == {ct.proto.MIL_pb2.FLOAT16},
          "convolutions and matrix products in fp16", sorted(compute_dtypes))
    record = SpecCheck(spec_ok=not failed, ops=sum(ops.values()), op_types=dict(ops.most_common()),
                       checked=checked, not_measured=NOT_MEASURED)
    return record, failed


def export_coreml(model: torch.nn.Module, stage: Path, height: int, width: int, outputs: list[TensorSpec],
                  asked: bool = True) -> dict[str, Variant]:
    """Write ``coreml-fp16`` of ``model`` (PixelModel) into ``stage`` once its spec checks out; returns its
    manifest entry. A failure stops the export when the user ``asked`` for Core ML (--formats), else the
    variant is left out with a warning."""
    key = "coreml-fp16"
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="tandem-coreml-") as tmp:
            package = Path(tmp) / PACKAGE
            convert(model, height, width, outputs, package)
            zip_package(package, Path(tmp) / FILE)
            record, failed = check_spec(Path(tmp) / FILE, height, width, outputs)
            if failed:
                raise BundleError(f"{key}: the converted program is not what the bundle says ({'; '.join(failed)}), "
                                  "so it is not written; export without it: --formats onnx")
            shutil.move(Path(tmp) / FILE, stage / FILE)
        log_seconds(log, key, time.perf_counter() - start)
    except BundleError as e:
        if asked:
            raise
        log.warning("%s: left out: %s", key, e)
        return {}
    version = metadata.version("coremltools")
    return {key: Variant(
        format="coreml", precision="fp16", file=FILE, layout="NHWC",
        inputs=[TensorSpec(name=INPUT, dtype="uint8", shape=[1, height, width, 3])],
        outputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=[1, *t.shape[1:]]) for t in outputs],
        runtime=Software(name="coreml", version=TARGET), converter=Software(name="coremltools", version=version),
        parity=None, spec_check=record)}
