"""Cutting a bundle's graph into head and tail: candidate cuts, parity with the whole model on real
LFW photos, the manifest's splits, and the int8 encoding of the tensor that crosses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tandem.bundle import Bundle, Manifest, TensorSpec, write_manifest
from tandem.bundle.preprocess import NormalizeSpec, PreprocessSpec, decode_image, to_input
from tandem.bundle.runtime import OnnxModel
from tandem.errors import BundleError
from tandem.export.split import PARITY_ATOL, load_cuts, run_split, split_bundle
from tandem.protocol import activations
from tandem.testing.bundles import EMBED, MEAN, STD, H, W, make_bundle

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]
SPEC = PreprocessSpec(height=H, width=W, normalize_in_graph=NormalizeSpec(mean=MEAN, std=STD))


def residual_onnx(path: Path, classes: int = 4, seed: int = 0) -> None:
    """A small CNN with what exported networks have: a residual block (its skip crosses any cut
    inside it) and a reshape whose shape comes from the batch size read off the pixels."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    inits = [w("k1", 8, 3, 3, 3), w("k2", 8, 8, 3, 3), w("k3", 8, 8, 3, 3), w("we", 8, EMBED), w("wc", EMBED, classes),
             numpy_helper.from_array(np.array([255.0], np.float32), "scale"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    nodes = [
        helper.make_node("Shape", ["pixels"], ["n"], start=0, end=1),
        helper.make_node("Concat", ["n", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["nchw", "scale"], ["unit"]),
        helper.make_node("Conv", ["unit", "k1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "k2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "k3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["r1", "c3"], ["res"]),
        helper.make_node("Relu", ["res"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"]),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "we"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
        helper.make_node("MatMul", ["embedding", "wc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", H, W, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBED])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def residual_bundle(root: Path) -> Path:
    root.mkdir(parents=True)
    residual_onnx(root / "model.onnx")
    write_manifest(root, Manifest(
        name="residual", inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[-1, H, W, 3])],
        outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, 4]),
                 TensorSpec(name="embedding", dtype="float32", shape=[-1, EMBED])],
        preprocessing=SPEC, labels=["a", "b", "c", "d"], models={"fp32": "model.onnx"}))
    return root


@pytest.fixture(scope="module")
def lfw_pixels(lfw_people: Path) -> np.ndarray:
    """Real LFW photos, decoded, cropped and resized as every runtime does (tandem.bundle.preprocess)."""
    paths = [sorted((lfw_people / p).glob("*.jpg"))[0] for p in PEOPLE]
    return np.stack([to_input(decode_image(p), SPEC) for p in paths])


def test_cuts_skip_residual_blocks_model_outputs_and_flattened_batches(tmp_path):
    residual_onnx(tmp_path / "m.onnx")
    cuts = load_cuts(tmp_path / "m.onnx")
    # Compute nodes: Cast Transpose Div Conv Relu | Conv Relu Conv Add (the skip from r1 crosses) | Relu
    # GlobalAveragePool | Reshape MatMul LpNorm MatMul Softmax. Shape and Concat only read the batch size.
    # After the Reshape ONNX's shape inference cannot tell that axis 0 is still the batch: no cut there.
    assert len(cuts.compute) == 16
    assert [c.k for c in cuts.cuts()] == [1, 2, 3, 4, 5, 9, 10, 11]
    assert [c.tensor for c in cuts.cuts()][4:] == ["r1", "res", "r3", "gap"]
    spec = cuts.tensor_spec(10)
    assert (spec.name, spec.dtype, spec.shape) == ("r3", "float32", [-1, 8, (H + 1) // 2, (W + 1) // 2])
    with pytest.raises(BundleError, match=r"k=7 is not a candidate cut.*1-5, 9-11"):
        cuts.head(7)


def test_tiny_bundle_cuts_on_its_exported_style_graph(tmp_path):
    root = make_bundle(tmp_path / "b", None)
    cuts = load_cuts(Bundle.load(root).model_path())
    assert [(c.k, c.tensor) for c in cuts.cuts()] == [
        (1, "x"), (2, "nchw"), (3, "centred"), (4, "normal"), (5, "pooled"), (6, "flat"), (7, "h0"), (8, "h")]


@pytest.mark.parametrize("make", [residual_bundle, lambda root: make_bundle(root, None)], ids=["residual", "tiny"])
def test_head_then_tail_equals_the_whole_model_on_real_photos(tmp_path, lfw_pixels, make):
    root = make(tmp_path / "b")
    whole = OnnxModel.open(Bundle.load(root))
    ref = whole.run(lfw_pixels)
    cuts = load_cuts(whole.path)
    assert cuts.cuts()
    for c in cuts.cuts():
        got = run_split(cuts.head(c.k).SerializeToString(), cuts.tail(c.k).SerializeToString(), lfw_pixels)
        for name in ("probabilities", "embedding"):
            assert got[name].shape == ref[name].shape
            assert np.abs(got[name] - ref[name]).max() <= PARITY_ATOL, (c.k, name)


def test_split_bundle_writes_verified_parts_and_records_them(tmp_path, lfw_pixels):
    root = residual_bundle(tmp_path / "b")
    before = (root / "manifest.json").read_text()
    assert "splits" not in json.loads(before)  # bundles without splits read and hash as before
    b = split_bundle(root, [10], sample=lfw_pixels)
    assert [s.k for s in b.manifest.splits] == [10]
    s = b.manifest.split(10)
    assert (s.head, s.tail, s.tensor.name, s.tensor.shape[0]) == ("head_10.onnx", "tail_10.onnx", "r3", -1)
    assert {"head_10.onnx", "tail_10.onnx", "model.onnx"} <= set(b.manifest.files)
    got = run_split(root / s.head, root / s.tail, lfw_pixels)
    ref = OnnxModel.open(b).run(lfw_pixels)
    assert np.abs(got["embedding"] - ref["embedding"]).max() <= PARITY_ATOL
    b = split_bundle(root, [4])  # adds to the splits already there
    assert [s.k for s in b.manifest.splits] == [4, 10]
    assert json.loads((root / "manifest.json").read_text())["splits"][1]["tensor"]["name"] == "r3"
    with pytest.raises(BundleError, match="no split at k=5"):
        b.manifest.split(5)
    with pytest.raises(BundleError, match="k=6 is not a candidate"):
        split_bundle(root, [6])
    assert [s.k for s in Bundle.load(root).manifest.splits] == [4, 10]  # a refused k changes nothing


def test_a_changed_or_unlisted_split_file_is_refused(tmp_path):
    root = residual_bundle(tmp_path / "b")
    split_bundle(root, [9])
    data = (root / "tail_9.onnx").read_bytes()
    (root / "tail_9.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError, match=r"tail_9\.onnx has sha256"):
        Bundle.load(root)
    raw = json.loads((root / "manifest.json").read_text())
    raw["files"].pop("tail_9.onnx")
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"split file tail_9\.onnx"):
        Bundle.load(root)


def test_int8_transfer_is_within_half_a_step_and_keeps_zero_exact():
    x = np.random.default_rng(0).uniform(0, 6, (1, 8, 10, 7)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0
    q = activations.quantize(x)
    back = activations.dequantize(q)
    assert q.values.dtype == np.uint8 and q.nbytes == x.size + activations.PARAMETER_BYTES == activations.int8_bytes(x.size)
    assert np.abs(back - x).max() <= q.scale / 2 + 1e-6
    assert back[0, 0, 0, 0] == 0.0
    signed = np.array([[-2.0, 0.0, 1.0]], np.float32)
    assert np.abs(activations.dequantize(activations.quantize(signed)) - signed).max() <= 3 / 255 / 2 + 1e-6
    zeros = np.zeros((2, 3), np.float32)
    assert (activations.dequantize(activations.quantize(zeros)) == 0).all()
