"""The wire protocol a :class:`~tandem.device.cloud_client.CloudClient` speaks, as a strategy object.

As httpx takes a transport, the cloud client takes a protocol: ``OipV2()`` (Open Inference Protocol
v2, binary tensor data unless ``binary=False``) or ``TfServing()`` (TF-Serving REST, columnar). A
protocol says where a request goes and what its body is, and reads the answer, with the codecs of
tandem.protocol; the client sends it (timeouts, retries, circuit breaker, deadline) the same way
whichever protocol it is. A new protocol is one more subclass here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tandem.errors import InvalidRequest
from tandem.protocol import oip, tfserving
from tandem.protocol.oip import InferResponse


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


class WireProtocol(ABC):
    """How one inference endpoint's API is spoken."""

    name: ClassVar[str]
    # Whether a request may name another model of the endpoint and carry parameters per input (a
    # split's tail NAME.tail.K, an int8-encoded tensor's scale and zero point).
    addresses_other_models: ClassVar[bool] = False
    # Whether an inference answer says which version answered; if not, the client asks the model's
    # status once (:meth:`version_from_status`).
    answers_carry_version: ClassVar[bool] = True

    @abstractmethod
    def model_path(self, model: str, version: int | str | None) -> str:
        """The model's metadata (or status) resource."""

    @abstractmethod
    def ready_path(self) -> str | None:
        """The server's readiness resource; None: the model's metadata answers for it."""

    @abstractmethod
    def infer_request(self, model: str, version: int | str | None, inputs: dict[str, np.ndarray],
                      outputs: Sequence[str] | None, input_parameters: dict[str, dict[str, Any]] | None) -> Request:
        """The POST that runs ``model`` on ``inputs``."""

    @abstractmethod
    def infer_answer(self, raw: bytes, headers: Mapping[str, str], where: str,
                     outputs: Sequence[str] | None) -> InferResponse:
        """The outputs in an answer's body; Unavailable (naming ``where``) when it is not this protocol's."""

    def version_from_status(self, status: Any) -> int | None:
        """The version the model's status says is served (only asked when answers carry none)."""
        return None

    def plain(self) -> WireProtocol | None:
        """The same protocol without its optional extensions, for a server that refuses them (the
        client falls back to it once); None: there is nothing to fall back to."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class OipV2(WireProtocol):
    """Open Inference Protocol v2 (KServe v2) REST, ``POST /v2/models/{name}[/versions/{v}]/infer``:
    binary tensor data (a JSON header of ``Inference-Header-Content-Length`` bytes, then the raw
    little-endian tensors) when ``binary``, else JSON tensors."""

    name = "oip"
    addresses_other_models = True

    def __init__(self, binary: bool = True) -> None:
        self.binary = binary

    def model_path(self, model: str, version: int | str | None) -> str:
        return oip.model_path(model, version)

    def ready_path(self) -> str | None:
        return "/v2/health/ready"

    def infer_request(self, model: str, version: int | str | None, inputs: dict[str, np.ndarray],
                      outputs: Sequence[str] | None, input_parameters: dict[str, dict[str, Any]] | None) -> Request:
        body, headers = oip.encode_infer_request(inputs, outputs, binary=self.binary,
                                                 input_parameters=input_parameters)
        return Request(oip.model_path(model, version) + "/infer", body, headers)

    def infer_answer(self, raw: bytes, headers: Mapping[str, str], where: str,
                     outputs: Sequence[str] | None) -> InferResponse:
        return oip.decode_infer_response(raw, headers.get(oip.HEADER_LENGTH), where)

    def plain(self) -> WireProtocol | None:
        return OipV2(binary=False) if self.binary else None

    def __repr__(self) -> str:
        return f"OipV2(binary={self.binary})"


class TfServing(WireProtocol):
    """TF-Serving REST, ``POST /v1/models/{name}[/versions/{n}|/labels/{alias}]:predict`` with the
    columnar ``inputs``; its answers name no version, so the model's status is asked once."""

    name = "tfserving"
    answers_carry_version = False

    def model_path(self, model: str, version: int | str | None) -> str:
        return tfserving.model_path(model, version)

    def ready_path(self) -> str | None:
        return None

    def infer_request(self, model: str, version: int | str | None, inputs: dict[str, np.ndarray],
                      outputs: Sequence[str] | None, input_parameters: dict[str, dict[str, Any]] | None) -> Request:
        return Request(tfserving.model_path(model, version) + ":predict", tfserving.encode_request(inputs),
                       {"Content-Type": "application/json"})

    def infer_answer(self, raw: bytes, headers: Mapping[str, str], where: str,
                     outputs: Sequence[str] | None) -> InferResponse:
        return InferResponse(tfserving.decode_answer(raw, where, outputs), None, None)

    def version_from_status(self, status: Any) -> int | None:
        return tfserving.served_version(status)


def wire_protocol(protocol: str | WireProtocol, binary: bool | None = None) -> WireProtocol:
    """``protocol`` as a strategy object: a WireProtocol as it is, or a name ("oip", "tfserving").
    ``binary``: OIP's binary tensor data, for the name "oip" (TF-Serving has none)."""
    if isinstance(protocol, WireProtocol):
        if binary is not None:
            raise InvalidRequest(f"binary={binary} with protocol={protocol!r}: give it to the protocol, "
                                 f"e.g. OipV2(binary={binary})")
        return protocol
    if protocol == "oip":
        return OipV2(True if binary is None else binary)
    if protocol == "tfserving":
        return TfServing()
    raise InvalidRequest(f"protocol {protocol!r}: use 'oip' (Open Inference Protocol v2) or 'tfserving', "
                         "or a WireProtocol such as OipV2() or TfServing()")
