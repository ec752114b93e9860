"""KServe 0.21 peer: the celebmatch ONNX file in a custom `kserve.Model` behind KServe's Python ModelServer.

    BENCH_MODEL=... python kserve_app.py

Request: KServe's own OIP v2 route, byte-for-byte the body Tandem's JSON route gets,
POST /v2/models/celebmatch/infer {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3], "data": [...]}]}.
Response: OIP v2 JSON with both outputs.

No batching: KServe's batcher is the Go model agent that Kubernetes injects beside the model server
(InferenceService `batcher: {maxBatchSize, maxLatency}`), and it speaks only the v1 protocol; the Python
ModelServer has none of its own. So each request is one ONNX Runtime call, run in the ModelServer's
thread pool (what KServe's docs advise for CPU-bound predict: a synchronous predict would block the
event loop), so that calls overlap on both cores as Tandem's and the batching peers' may.
"""

from __future__ import annotations

import asyncio
import logging
import os

# Warnings only, as the other peers log: KServe's default INFO writes a timing line per request.
os.environ.setdefault("KSERVE_LOGLEVEL", "WARNING")

import kserve  # reads KSERVE_LOGLEVEL on import
import kserve.model_server
import numpy as np
import peer_common as pc
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest.server import RESTServer


class CelebMatch(kserve.Model):
    def __init__(self) -> None:
        super().__init__(pc.NAME)
        self.session = pc.session()
        self.ready = True

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(pc.OUTPUTS, {pc.INPUT: x})

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        t = payload.inputs[0]
        if t.name != pc.INPUT or t.datatype != "UINT8":
            raise kserve.errors.InvalidInput(f"expected UINT8 tensor {pc.INPUT!r}")
        x = t.as_numpy()
        probabilities, embedding = await asyncio.get_running_loop().run_in_executor(None, self.run, x)
        outputs = []
        for name, value in (("probabilities", probabilities), ("embedding", embedding)):
            out = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


class LoopbackRESTServer(RESTServer):
    """KServe's REST server binds 0.0.0.0 (it is meant for a pod); the benchmark stays on loopback."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = pc.HOST  # the same Config object its uvicorn server reads when it starts


if __name__ == "__main__":
    kserve.model_server.RESTServer = LoopbackRESTServer
    # One process, no gRPC (unused), no per-request latency log line.
    server = kserve.ModelServer(http_port=pc.PORT, workers=1, enable_grpc=False, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # configured by the constructor
    server.start([CelebMatch()])
