"""BentoML 1.4 peer: the celebmatch ONNX file behind `@bentoml.api(batchable=True)` (adaptive batching).

    BENCH_MODEL=... bentoml serve bentoml_service:CelebMatch --host 127.0.0.1 --port 8001

Request (BentoML's native JSON for an ndarray argument): POST /predict {"pixels": [[[[r, g, b], ...]]]}
— a nested list of shape [1, 100, 75, 3] per request; BentoML concatenates requests along axis 0.
Response: JSON nested list of shape [1, 175] float32 = probabilities (47) then embedding (128).
"""

from __future__ import annotations

import os
from typing import Annotated

import bentoml
import numpy as np
import peer_common as pc
from bentoml.validators import DType, Shape


@bentoml.service(workers=int(os.environ.get("BENCH_BENTOML_WORKERS", "1")), traffic={"timeout": 30})
class CelebMatch:
    def __init__(self) -> None:
        self.session = pc.session()

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=pc.MAX_BATCH)
    def predict(
        self, pixels: Annotated[np.ndarray, Shape((-1, 100, 75, 3)), DType("uint8")]
    ) -> np.ndarray:
        probabilities, embedding = self.session.run(pc.OUTPUTS, {pc.INPUT: pixels.astype(np.uint8, copy=False)})
        return np.concatenate([probabilities, embedding], axis=1)
