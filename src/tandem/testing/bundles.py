"""Tiny real bundles for the tests and the benchmarks, built in milliseconds without torch (needs onnx).

The ONNX graph has the bundle's interface (uint8 NHWC pixels in; probabilities and a unit-length
embedding out) and the normalisation inside, like an exported network: cast, normalise, 5×5
average pooling, one dense layer, L2 norm, a classifier and softmax. Different seeds give
different weights, so two versions answer differently. The celebmatch gallery is enrolled on
real LFW photos with Tandem's own enrolment code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tandem.apps.celebmatch.gallery import build_gallery, enroll
from tandem.bundle import Bundle, Manifest, TensorSpec, write_manifest
from tandem.bundle.preprocess import NormalizeSpec, PreprocessSpec
from tandem.bundle.runtime import OnnxModel
from tandem.data.folder import scan_class_folders

H, W = 100, 75
EMBED = 32
MEAN = (0.42, 0.37, 0.33)
STD = (0.28, 0.24, 0.22)


def tiny_onnx(path: Path, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pooled = 3 * (H // 5) * (W // 5)
    inits = [
        numpy_helper.from_array(np.array(MEAN, np.float32).reshape(1, 3, 1, 1) * 255, "mean"),
        numpy_helper.from_array(1 / (np.array(STD, np.float32).reshape(1, 3, 1, 1) * 255), "inv_std"),
        numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(pooled), (pooled, EMBED)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, EMBED).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 3, (EMBED, classes)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["nchw", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_std"], ["normal"]),
        helper.make_node("AveragePool", ["normal"], ["pooled"], kernel_shape=[5, 5], strides=[5, 5]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h"]),
        helper.make_node("LpNormalization", ["h"], ["embedding"], axis=1, p=2),
        helper.make_node("MatMul", ["embedding", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", H, W, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBED])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_bundle(root: Path, faces: Path | None, name: str = "faces", seed: int = 1) -> Path:
    """A bundle at ``root``; with ``faces`` (one folder per person), enrolled for celebmatch."""
    labels = sorted(p.name for p in faces.iterdir()) if faces else ["a", "b", "c", "d"]
    root.mkdir(parents=True)
    tiny_onnx(root / "model.onnx", len(labels), seed)
    write_manifest(root, Manifest(
        name=name,
        inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[-1, H, W, 3])],
        outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, len(labels)]),
                 TensorSpec(name="embedding", dtype="float32", shape=[-1, EMBED])],
        preprocessing=PreprocessSpec(height=H, width=W, normalize_in_graph=NormalizeSpec(mean=MEAN, std=STD)),
        labels=labels,
        models={"fp32": "model.onnx"},
        training={"note": "tiny test graph, random weights"},
    ))
    bundle = Bundle.load(root)
    if faces is not None:
        catalog = scan_class_folders(faces)
        enroll(bundle, build_gallery(OnnxModel.open(bundle), catalog, max_per_identity=4), source="test")
    return root


FACE = 48


def tiny_face_onnx(path: Path, seed: int) -> None:
    """A face-embedding graph at 48×48: normalise, 4×4 average pooling, one dense layer, L2 norm."""
    rng = np.random.default_rng(seed)
    pooled = 3 * (FACE // 4) ** 2
    inits = [
        numpy_helper.from_array(np.array(MEAN, np.float32).reshape(1, 3, 1, 1) * 255, "mean"),
        numpy_helper.from_array(1 / (np.array(STD, np.float32).reshape(1, 3, 1, 1) * 255), "inv_std"),
        numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(pooled), (pooled, EMBED)).astype(np.float32), "w1"),
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["nchw", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_std"], ["normal"]),
        helper.make_node("AveragePool", ["normal"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["h"]),
        helper.make_node("LpNormalization", ["h"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(nodes, "tiny_face",
                              [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", FACE, FACE, 3])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBED])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_face_bundle(root: Path, faces: Path, name: str = "faces", seed: int = 1, network: str = "tiny") -> Path:
    """A schema-2 face-embedding bundle (the real landmark network, alignment, region boxes,
    calibration curves and impostors), enrolled on ``faces`` with Tandem's own enrolment. ``network``:
    tiny (a random graph, milliseconds) or dlib (the pretrained dlib ResNet on its 150-pixel chip,
    exported as `tandem export` does; needs torch, a few seconds)."""
    import io

    from tandem.apps.celebmatch.gallery import build_face_gallery
    from tandem.apps.celebmatch.kit import FaceKit
    from tandem.faces.align import AlignSpec, region_boxes
    from tandem.faces.calibration import fit
    from tandem.models.onet import export_landmarker

    root.mkdir(parents=True)
    embed, size = EMBED, FACE
    spec = AlignSpec.square(FACE)
    mean, std = MEAN, STD
    if network == "dlib":
        from tandem.export.embed_export import export_embedder
        from tandem.models.dlib_resnet import CHIP_TEMPLATE, DIM, SIZE, FaceResNet, dlib_net_config

        cfg = dlib_net_config()
        export_embedder(FaceResNet(cfg).eval(), root / "model.onnx", SIZE)
        embed, size, spec, mean, std = DIM, SIZE, AlignSpec(SIZE, SIZE, CHIP_TEMPLATE), cfg.mean, cfg.std
    else:
        tiny_face_onnx(root / "model.onnx", seed)
    export_landmarker(root / "landmarks.onnx")
    rng = np.random.default_rng(seed)
    impostors = rng.normal(size=(200, embed))
    buf = io.BytesIO()
    np.savez(buf, embeddings=(impostors / np.linalg.norm(impostors, axis=1, keepdims=True)).astype(np.float16),
             names=np.array([f"someone_{i % 40}" for i in range(200)]))
    (root / "impostors.npz").write_bytes(buf.getvalue())
    curve = fit(rng.normal(0.8, 0.1, 300), rng.normal(0.4, 0.15, 1000)).to_json()
    fill = [round(m * 255) for m in mean]
    write_manifest(root, Manifest(
        name=name, task="face-embedding",
        inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[-1, size, size, 3])],
        outputs=[TensorSpec(name="embedding", dtype="float32", shape=[-1, embed])],
        preprocessing=PreprocessSpec(height=size, width=size, normalize_in_graph=NormalizeSpec(mean=mean, std=std)),
        labels=[], models={"fp32": "model.onnx"},
        training={"note": "dlib's pretrained face ResNet" if network == "dlib" else "tiny test graph, random weights"},
        apps={"faces": {"landmarks": "landmarks.onnx", "align": spec.to_json(),
                        "regions": {k: list(v) for k, v in region_boxes(spec).items()},
                        "calibration": {v: curve for v in ("face", "eyes", "nose", "mouth")},
                        "impostors": "impostors.npz", "far": 0.01, "fill": fill}},
    ))
    bundle = Bundle.load(root)
    kit = FaceKit.of(bundle)
    assert kit is not None
    gallery = build_face_gallery(OnnxModel.open(bundle), kit, scan_class_folders(faces), max_per_identity=4)
    enroll(bundle, gallery, source="test")
    return root
