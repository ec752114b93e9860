"""How the LiteRT int8 file is written (tandem.export.litert_convert, run in the converter's venv; its writer's
parts need only ai-edge-litert, which Tandem's venv has too): each distinct quantisation vector stored once."""

import numpy as np
import pytest

from tandem.export.litert_convert import shared_quantization_vectors

pytestmark = pytest.mark.litert

CHANNELS, TENSORS = 64, 5


def _model():
    """A .tflite's objects with TENSORS per-channel int8 tensors, each with its own scales and all-zero zero
    points, as ai-edge-quantizer writes weights and biases."""
    from ai_edge_litert.tools import flatbuffer_utils

    fb = flatbuffer_utils.schema_fb
    graph = fb.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [], [], [], []
    for i in range(TENSORS):
        q = fb.QuantizationParametersT()
        q.scale = [0.01 * (i + 1) + c * 1e-4 for c in range(CHANNELS)]
        q.zeroPoint = [0] * CHANNELS
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = f"w{i}".encode(), [CHANNELS, 1], fb.TensorType.INT8, 0, q
        graph.tensors.append(t)
    model = fb.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [graph], [fb.BufferT()], []
    return model


def test_each_distinct_quantisation_vector_is_written_once_and_reads_back_the_same():
    from ai_edge_litert.tools import flatbuffer_utils

    pack = flatbuffer_utils.schema_fb.QuantizationParametersT.Pack
    plain = flatbuffer_utils.convert_object_to_bytearray(_model())
    with shared_quantization_vectors():
        shared = flatbuffer_utils.convert_object_to_bytearray(_model())
    assert flatbuffer_utils.schema_fb.QuantizationParametersT.Pack is pack  # the writer is itself again after
    # Every tensor's zero points were the same CHANNELS int64 zeros: one vector serves them all.
    assert len(plain) - len(shared) >= (TENSORS - 1) * CHANNELS * 8
    want, got = _model(), flatbuffer_utils.convert_bytearray_to_object(shared)
    for a, b in zip(want.subgraphs[0].tensors, got.subgraphs[0].tensors, strict=True):
        np.testing.assert_array_equal(np.asarray(b.quantization.scale), np.float32(a.quantization.scale))
        np.testing.assert_array_equal(np.asarray(b.quantization.zeroPoint), a.quantization.zeroPoint)
    assert flatbuffer_utils.convert_object_to_bytearray(_model()) == plain  # nothing shared outside the block
