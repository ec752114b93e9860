"""The network, its ONNX export and int8 quantization, on a tiny real model."""

import logging
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tandem.errors import CheckpointError
from tandem.export.onnx_export import export_onnx, warnings_to_debug_log
from tandem.export.quantize import quantize_int8
from tandem.models.mobilenet import EmbeddingNet, NetConfig, PixelModel, count_parameters
from tandem.training import checkpoint

TINY = dict(width=0.25, embedding_dim=16, last_channels=64, stages=((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2)))


def test_default_network_is_compact_mobilenet_sized():
    n = count_parameters(EmbeddingNet(NetConfig(num_classes=47)))
    assert 0.7e6 < n < 1.2e6


def test_pixel_model_gives_probabilities_and_unit_embeddings():
    torch.manual_seed(0)
    net = EmbeddingNet(NetConfig(num_classes=5, **TINY)).eval()
    pixels = torch.randint(0, 256, (3, 40, 30, 3), dtype=torch.uint8)
    probs, emb = PixelModel(net)(pixels)
    assert probs.shape == (3, 5) and emb.shape == (3, 16)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_config_round_trips_through_json_dict():
    cfg = NetConfig(num_classes=3, **TINY)
    assert NetConfig.from_dict(cfg.to_dict()) == cfg


def test_onnx_export_has_dynamic_batch_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    net = EmbeddingNet(NetConfig(num_classes=4, **TINY)).eval()
    path = tmp_path / "m.onnx"
    export_onnx(net, path, 40, 30)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "pixels" and inp.type == "tensor(uint8)" and inp.shape[1:] == [40, 30, 3]
    for batch in (1, 7):
        x = np.random.default_rng(batch).integers(0, 256, (batch, 40, 30, 3), dtype=np.uint8)
        probs, emb = sess.run(None, {"pixels": x})
        with torch.no_grad():
            tp, te = PixelModel(net)(torch.from_numpy(x))
        assert probs.shape == (batch, 4)
        assert np.abs(probs - tp.numpy()).max() < 1e-5 and np.abs(emb - te.numpy()).max() < 1e-5


def test_warnings_during_an_export_go_to_the_debug_log(caplog, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        with caplog.at_level(logging.DEBUG, logger="tandem.export.onnx_export"), warnings_to_debug_log():
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
        assert warnings.showwarning is before
    [record] = caplog.records
    assert record.levelno == logging.DEBUG and "FutureWarning" in record.message and "LeafSpec" in record.message
    assert capsys.readouterr().err == ""


def test_static_int8_is_smaller_qdq_and_close(tmp_path):
    torch.manual_seed(0)
    net = EmbeddingNet(NetConfig(num_classes=4, **TINY)).eval()
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m8.onnx"
    export_onnx(net, fp32, 40, 30)
    calib = np.random.default_rng(0).integers(0, 256, (32, 40, 30, 3), dtype=np.uint8)
    quantize_int8(fp32, int8, calib)
    import onnx

    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "ConvInteger" not in ops
    # The classifier (the last Gemm) keeps its float weights, so its logits are not quantised; the one before is int8.
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    float_weights = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert gemms[-1].input[1] in float_weights and gemms[0].input[1] not in float_weights
    assert int8.stat().st_size < fp32.stat().st_size
    a = ort.InferenceSession(str(fp32)).run(None, {"pixels": calib})[1]
    b = ort.InferenceSession(str(int8)).run(None, {"pixels": calib})[1]
    # Embeddings are unit vectors: int8 should keep them pointing the same way.
    assert float((a * b).sum(1).min()) > 0.9


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"epoch": 1})
    assert checkpoint.load(path)["epoch"] == 1
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
    torch.save({"something": "else"}, path)
    with pytest.raises(CheckpointError, match="not a Tandem checkpoint"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        checkpoint.load(tmp_path / "none.pt")
