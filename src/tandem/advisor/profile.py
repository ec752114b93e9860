"""What the advisor measured about a model: plain data, JSON round-trippable, no ONNX import.

:func:`tandem.advisor.profiler.profile_bundle` fills it in; advice.json carries it under
``profile``, so a device can load it (``ModelProfile.from_dict``) and predict placements live.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tandem.errors import InvalidRequest


@dataclass(frozen=True)
class CutProfile:
    k: int  # compute nodes on the device
    tensor: str  # what crosses
    node: str  # the head's last node
    op: str
    shape: list[int]  # of the crossing tensor at batch 1
    tensor_bytes: int  # its bytes as computed (fp32)
    int8_bytes: int  # its bytes sent int8 (tandem.protocol.activations)
    head_ms: float
    tail_ms: float
    quantize_ms: float  # int8 encoding on this machine (the device's side)
    dequantize_ms: float  # int8 decoding (the server's side)
    head_file_bytes: int  # what a split adds to the app
    head_peak_bytes: int  # device memory: the head's weights + its peak live activations

    @classmethod
    def from_dict(cls, d: dict) -> CutProfile:
        return cls(**d)


@dataclass(frozen=True)
class ModelProfile:
    bundle: str
    name: str
    version: int | None
    machine: str
    threads: int
    repeats: int
    input_bytes: int  # one request's input (uint8 pixels)
    output_bytes: int  # one request's outputs
    whole_ms: float  # the whole fp32 model, batch 1
    int8_ms: float | None  # the whole int8 model, batch 1 (if the bundle has one)
    images_per_s: float  # the whole fp32 model's throughput at batch ``batch``
    batch: int
    fp32_file_bytes: int
    int8_file_bytes: int | None
    peak_activation_bytes: int  # largest set of activations alive at once (batch 1)
    peak_bytes: int  # fp32 weights + peak activations: the device memory the model needs
    rss_bytes: int  # this process's resident memory growth from loading and running the model
    compute_nodes: int
    cuts: list[CutProfile] = field(default_factory=list)
    # The whole fp32 model run alone after idling (profiler.IDLE_GAP_S): a request now and then
    # finds cold caches and a clocked-down core. None in profiles written before it was measured.
    whole_idle_ms: float | None = None

    @property
    def idle_factor(self) -> float:
        """How much slower a run after idling is than one of many back to back (1 if not measured)."""
        return self.whole_idle_ms / self.whole_ms if self.whole_idle_ms and self.whole_ms > 0 else 1.0

    def cut(self, k: int) -> CutProfile:
        for c in self.cuts:
            if c.k == k:
                return c
        raise InvalidRequest(f"k={k} is not a candidate cut of {self.name}; candidates: "
                             f"{', '.join(str(c.k) for c in self.cuts) or 'none'}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelProfile:
        d = dict(d)
        d["cuts"] = [CutProfile.from_dict(c) for c in d.get("cuts", [])]
        return cls(**d)
