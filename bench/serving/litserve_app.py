"""LitServe 0.2 peer: the celebmatch ONNX file with LitServe's batching (max_batch_size, batch_timeout).

    BENCH_MODEL=... python litserve_app.py

Request: the same OIP v2 JSON body as Tandem's JSON route, POST /v2/models/celebmatch/infer
{"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3], "data": [...22500 ints]}]}.
Response: OIP v2 JSON with both outputs.
"""

from __future__ import annotations

import litserve as ls
import numpy as np
import peer_common as pc


class CelebMatchAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.session = pc.session()

    def decode_request(self, request: dict) -> np.ndarray:
        return pc.oip_pixels(request)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        probabilities, embedding = self.session.run(pc.OUTPUTS, {pc.INPUT: x})
        return list(zip(probabilities, embedding, strict=True))

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: tuple[np.ndarray, np.ndarray]) -> dict:
        return pc.oip_outputs(*output)


if __name__ == "__main__":
    api = CelebMatchAPI(
        max_batch_size=pc.MAX_BATCH, batch_timeout=pc.MAX_DELAY_MS / 1000, api_path=f"/v2/models/{pc.NAME}/infer"
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
    server.run(host=pc.HOST, port=pc.PORT, num_api_servers=1, generate_client_file=False, log_level="warning")
