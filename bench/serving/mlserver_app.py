"""MLServer 1.7 peer: the celebmatch ONNX file in a custom MLServer runtime, with MLServer's adaptive batching.

    BENCH_MODEL=... python mlserver_app.py

Request: MLServer's own OIP v2 route, byte-for-byte the body Tandem's JSON route gets,
POST /v2/models/celebmatch/infer {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3], "data": [...]}]}.
Response: OIP v2 JSON with both outputs.

Started as `mlserver start` does (MLServer(settings).start(models)), with the settings built here rather
than read from settings.json / model-settings.json, so that ports and batch limits come from the same
BENCH_* variables every peer reads:
- adaptive batching on (off by default in MLServer): max_batch_size = Tandem's max batch size,
  max_batch_time = Tandem's max delay (in seconds); MLServer stacks the requests' `pixels` along axis 0
  and splits the outputs back per request;
- parallel_workers = BENCH_MLSERVER_WORKERS (MLServer's default, 1: inference runs in one worker process
  beside the HTTP process, as each other peer runs one model instance);
- debug off (no access log line per request: the other peers log warnings only).
"""

from __future__ import annotations

import asyncio
import os

import mlserver
import peer_common as pc
from mlserver import MLModel, MLServer
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import install_uvloop_event_loop


class CelebMatchRuntime(MLModel):
    async def load(self) -> bool:
        self.session = pc.session()
        mlserver.register("bench_batch_rows", "images per ONNX Runtime call (the benchmark's probe)")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        t = payload.inputs[0]
        if t.name != pc.INPUT or t.datatype != "UINT8":
            raise ValueError(f"expected UINT8 tensor {pc.INPUT!r}")
        x = NumpyCodec.decode_input(t)
        probabilities, embedding = self.session.run(pc.OUTPUTS, {pc.INPUT: x})
        mlserver.log(bench_batch_rows=len(x))
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probabilities", probabilities),
                     NumpyCodec.encode_output("embedding", embedding)],
        )


def settings() -> tuple[Settings, ModelSettings]:
    work = os.environ.get("BENCH_MLSERVER_DIR", os.getcwd())  # its metrics and environments folders
    server = Settings(
        host=pc.HOST, http_port=pc.PORT, grpc_port=pc.PORT + 1, metrics_port=pc.PORT + 2,
        parallel_workers=int(os.environ.get("BENCH_MLSERVER_WORKERS", "1")), debug=False,
        metrics_dir=os.path.join(work, "metrics"), environments_dir=os.path.join(work, "envs"),
    )
    model = ModelSettings(
        name=pc.NAME, implementation="mlserver_app.CelebMatchRuntime",
        max_batch_size=pc.MAX_BATCH, max_batch_time=pc.MAX_DELAY_MS / 1000,
    )
    return server, model


async def main() -> None:
    server, model = settings()
    await MLServer(server).start([model])


if __name__ == "__main__":
    install_uvloop_event_loop()  # as the `mlserver` CLI does
    asyncio.run(main())
