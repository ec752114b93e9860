"""NVIDIA Triton peer through PyTriton 0.7: tritonserver (shipped in the wheel) with its dynamic batcher,
the celebmatch ONNX file run by ONNX Runtime in the bound Python function.

    BENCH_MODEL=... python triton_app.py

Request: Triton's own OIP v2 route, byte-for-byte the body Tandem's JSON route gets,
POST /v2/models/celebmatch/infer {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3], "data": [...]}]}.
Response: OIP v2 JSON with both outputs.
"""

from __future__ import annotations

import os
import sys
import sysconfig

import numpy as np
import peer_common as pc
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

session = pc.session()


@batch
def infer(pixels: np.ndarray) -> dict[str, np.ndarray]:
    probabilities, embedding = session.run(pc.OUTPUTS, {pc.INPUT: pixels})
    return {"probabilities": probabilities, "embedding": embedding}


def main() -> None:
    config = TritonConfig(
        http_address=pc.HOST, http_port=pc.PORT, grpc_address=pc.HOST, grpc_port=pc.PORT + 1,
        metrics_port=pc.PORT + 2, allow_metrics=True, allow_gpu_metrics=False, log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=pc.NAME,
            infer_func=infer,
            inputs=[Tensor(name="pixels", dtype=np.uint8, shape=(100, 75, 3))],
            outputs=[
                Tensor(name="probabilities", dtype=np.float32, shape=(47,)),
                Tensor(name="embedding", dtype=np.float32, shape=(128,)),
            ],
            config=ModelConfig(
                max_batch_size=pc.MAX_BATCH,
                batcher=DynamicBatcher(max_queue_delay_microseconds=int(pc.MAX_DELAY_MS * 1000)),
            ),
            strict=False,
        )
        print("triton ready", flush=True)
        triton.serve()


if __name__ == "__main__":
    # tritonserver's Python backend stub must link this interpreter's libpython, not the system's.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and libdir not in os.environ.get("LD_LIBRARY_PATH", ""):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    main()
