"""Runners: one placement's way of answering a call, each a small object with ``run(tensors, deadline)``.

- :class:`DeviceRunner`: the whole local model with ONNX Runtime (or LiteRT, for a LiteRT variant);
- :class:`CloudRunner`: the whole model on the endpoint (a :class:`~tandem.device.cloud_client.CloudClient`);
- :class:`SplitRunner`: the bundle's head here, its tensor (int8-encoded with ``+int8``) to the
  server's tail ``NAME.tail.K`` of the same version, the tail's outputs back.

HybridModel builds the runner of each placement a policy orders (tandem.device.policies) and runs
them in turn. :class:`LocalModel` is the local model as HybridModel loaded it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from tandem.advisor.placement import Placement
from tandem.bundle import SplitSpec, tail_name
from tandem.bundle.runtime import OnnxModel, load_session
from tandem.device.deadline import Deadline
from tandem.device.variants import DeviceModel
from tandem.errors import ConfigError, InvalidRequest
from tandem.protocol import activations

if TYPE_CHECKING:
    from tandem.device.cloud_client import CloudClient

Clock = Callable[[], float]


@dataclass
class LocalModel:
    """The model on the device: its runtime, name, version, labels and the splits its bundle holds."""

    model: DeviceModel  # ONNX Runtime's, or a LiteRT variant's (tandem.device.variants)
    name: str
    version: int | None
    labels: list[str] = field(default_factory=list)
    splits: dict[int, SplitSpec] = field(default_factory=dict)
    read: Callable[[str], Path | bytes] | None = None  # a bundle file (a head), by its name in the manifest
    heads: dict[int, ort.InferenceSession] = field(default_factory=dict)  # k → the head, opened on first use
    placements: list[Placement] = field(default_factory=list)  # the splits as auto's candidates
    threads: int | None = None  # the heads' intra-op threads (None: ONNX Runtime's choice, one per core)

    def __post_init__(self) -> None:
        self.placements = [Placement.split(k, int8) for k in sorted(self.splits) for int8 in (False, True)]

    def head(self, k: int, threads: int | None) -> ort.InferenceSession:
        head = self.heads.get(k)
        if head is None:
            spec = self.splits.get(k)
            if spec is None or self.read is None:
                have = ", ".join(str(s) for s in sorted(self.splits)) or "none"
                raise ConfigError(f"the local model {self.name} has no split at k={k} (its splits: {have}); "
                                  f"cut the bundle with `tandem split BUNDLE {k}`")
            try:
                source = self.read(spec.head)
            except (KeyError, OSError) as e:
                raise ConfigError(f"the local model {self.name} lists {spec.head} but it is not on this device "
                                  f"({e})") from e
            head = self.heads[k] = load_session(source, threads)
        return head


@dataclass
class Run:
    """One placement's answer."""

    outputs: dict[str, np.ndarray]
    model: str
    version: int | None
    network_ms: float
    inference_ms: float | None  # on the device
    sent_bytes: int = 0
    received_bytes: int = 0


def batch_rows(tensors: dict[str, np.ndarray]) -> int:
    first = next(iter(tensors.values()))
    return max(1, len(first)) if first.ndim else 1


class RowTime:
    """EWMA of a device run per batch row: what a deadline keeps back for the device to answer in."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def add(self, seconds: float, rows: int) -> None:
        row_s = seconds / rows
        self.seconds = row_s if self.seconds is None else 0.8 * self.seconds + 0.2 * row_s


class Runner(ABC):
    @abstractmethod
    def run(self, tensors: dict[str, np.ndarray], deadline: Deadline | None) -> Run:
        """Answer for ``tensors`` (by input name, batch first); ``deadline`` bounds what crosses the network."""


class DeviceRunner(Runner):
    """The whole model here, with ONNX Runtime or LiteRT. A device run is not interrupted at a deadline (neither
    runtime has a cheap way to)."""

    def __init__(self, local: LocalModel, row_time: RowTime, clock: Clock) -> None:
        self.local, self.row_time, self.clock = local, row_time, clock

    def run(self, tensors: dict[str, np.ndarray], deadline: Deadline | None) -> Run:
        model = self.local.model
        start = self.clock()
        if len(tensors) == 1 and model.input_name in tensors:
            outputs = model.run(tensors[model.input_name])
        elif not isinstance(model, OnnxModel):
            raise InvalidRequest(f"the local {model.label} takes one tensor, '{model.input_name}'; got tensors "
                                 f"{sorted(tensors)}")
        else:
            try:
                outs = model.session.run(model.output_names, tensors)
            except Exception as e:
                raise InvalidRequest(f"the local model cannot run these tensors ({e})") from e
            outputs = dict(zip(model.output_names, outs, strict=True))
        seconds = self.clock() - start
        self.row_time.add(seconds, batch_rows(tensors))
        return Run(outputs, self.local.name, self.local.version, 0.0, seconds * 1000)


class CloudRunner(Runner):
    """The whole model on the endpoint."""

    def __init__(self, cloud: CloudClient) -> None:
        self.cloud = cloud

    def run(self, tensors: dict[str, np.ndarray], deadline: Deadline | None) -> Run:
        r = self.cloud.infer(tensors, deadline=deadline)
        return Run(r.outputs, r.model, r.version, r.network_s * 1000, None, r.sent_bytes, r.received_bytes)


class SplitRunner(Runner):
    """The head here, the tail of the same version on the server (``NAME.tail.K``). ``local`` loads
    the local model when the split runs (a failure to is this placement's failure)."""

    def __init__(self, placement: Placement, local: Callable[[], LocalModel], cloud: CloudClient,
                 clock: Clock) -> None:
        self.placement, self.local, self.cloud, self.clock = placement, local, cloud, clock

    def run(self, tensors: dict[str, np.ndarray], deadline: Deadline | None) -> Run:
        k = self.placement.k
        local = self.local()
        head = local.head(k, local.threads)
        head_input = head.get_inputs()[0].name
        if list(tensors) != [head_input]:
            raise InvalidRequest(f"split@{k} runs the head on '{head_input}'; got tensors {sorted(tensors)}")
        spec = local.splits[k]
        start = self.clock()
        try:
            (mid,) = head.run([spec.tensor.name], tensors)
        except Exception as e:  # ONNX Runtime raises its own unexported exception types
            raise InvalidRequest(f"the head of split@{k} cannot run these tensors ({e})") from e
        params = None
        if self.placement.int8:
            q = activations.quantize(mid)
            mid, params = q.values, {spec.tensor.name: {"scale": q.scale, "zero_point": q.zero_point}}
        head_ms = (self.clock() - start) * 1000
        # The tail must come from the head's version: a head and a tail of different weights disagree.
        version = local.version if local.version is not None else self.cloud.version
        r = self.cloud.infer({spec.tensor.name: mid}, deadline=deadline, model=tail_name(self.cloud.model, k),
                             version=version, input_parameters=params)
        return Run(r.outputs, local.name, r.version, r.network_s * 1000, head_ms, r.sent_bytes, r.received_bytes)
