"""Settings every peer app reads from the environment, set by bench/serving.py, so that all of them
run the same ONNX file with the same ONNX Runtime threads and the same batch limits as Tandem.

Imported by the peer apps inside their own virtual environments: numpy and onnxruntime only.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

MODEL = os.environ["BENCH_MODEL"]  # path of the bundle's model file (the one Tandem serves)
THREADS = int(os.environ.get("BENCH_ORT_THREADS", "1"))
MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "8"))
MAX_DELAY_MS = float(os.environ.get("BENCH_MAX_DELAY_MS", "2"))
HOST = os.environ.get("BENCH_HOST", "127.0.0.1")
PORT = int(os.environ.get("BENCH_PORT", "8000"))
NAME = os.environ.get("BENCH_MODEL_NAME", "celebmatch")  # the bundle's manifest name
INPUT = "pixels"
OUTPUTS = ["probabilities", "embedding"]


def session() -> ort.InferenceSession:
    """The same options as tandem.bundle.runtime.session_options."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
    s.run(OUTPUTS, {INPUT: np.zeros((1, 100, 75, 3), np.uint8)})  # warm up
    return s


def oip_pixels(body: dict) -> np.ndarray:
    """One image from an OIP v2 JSON request (the body tandem_json and triton get): shape (H, W, 3)."""
    t = body["inputs"][0]
    if t["name"] != INPUT or t["datatype"] != "UINT8":
        raise ValueError(f"expected UINT8 tensor {INPUT!r}")
    x = np.asarray(t["data"], dtype=np.uint8).reshape(t["shape"])
    if x.shape[0] != 1:
        raise ValueError("one image per request")
    return x[0]


def oip_outputs(probabilities: np.ndarray, embedding: np.ndarray) -> dict:
    """An OIP v2 JSON response for one image."""
    return {
        "model_name": NAME,
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, probabilities.shape[-1]],
             "data": probabilities.ravel().tolist()},
            {"name": "embedding", "datatype": "FP32", "shape": [1, embedding.shape[-1]],
             "data": embedding.ravel().tolist()},
        ],
    }
