"""Triton's classification extension: an output asked for with ``parameters: {"classification": K}``
comes back as a BYTES tensor of the top K classes per row, each ``"score:index:label"`` (or
``"score:index"`` when the class has no label), best first, as Triton writes them: the score with six
decimals (C++ ``std::to_string``), the index into the output's last axis.
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_classification.md
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tandem.errors import InvalidRequest

PARAMETER = "classification"


def check_count(value: object, output: str, shape: Sequence[int]) -> int:
    """K from a requested output's parameters; the output must be one score per class: [batch, classes]."""
    if type(value) is not int or value < 1:
        raise InvalidRequest(f"output '{output}': parameters.classification must be a whole number of classes "
                             f"from 1 up, got {value!r}")
    if len(shape) != 2:
        raise InvalidRequest(f"output '{output}' has shape {list(shape)}: classification takes an output of one "
                             "score per class, [batch, classes]")
    return value


def top_k(scores: np.ndarray, k: int, labels: Sequence[str] = ()) -> np.ndarray:
    """``[batch, min(k, classes)]`` object array of ``b"score:index[:label]"``, highest score first."""
    if scores.ndim != 2:
        raise InvalidRequest(f"classification takes a [batch, classes] output, got shape {list(scores.shape)}")
    k = min(k, scores.shape[1])
    # A stable sort of the negated scores: ties keep the lower index first, as Triton's does.
    order = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty((scores.shape[0], k), dtype=object)
    for row, indices in enumerate(order):
        for col, i in enumerate(indices):
            label = f":{labels[i]}" if i < len(labels) else ""
            out[row, col] = f"{float(scores[row, i]):f}:{int(i)}{label}".encode()
    return out
