"""Live video: can a placement keep up with a camera at F frames/s, and what does a minute cost the battery?

Each frame is one request of a placement (tandem.advisor.placement), sent as a stream: while the
server works on frame n, frame n+1 is on the uplink and the device encodes frame n+2. So the rate
is the slowest stage's and the latency the sum of the stages (docs/advisor.md, "Live video")::

    device:  frame_ms = whole · s_dev                   fps = 1000 / frame_ms     latency = frame_ms
    cloud:   dev = (encode [+ decode the answer]) · s_dev
             srv = o_srv + (decode + whole [+ encode the answer]) · s_srv
             fps = min(1000/dev, uplink/(8·up), downlink/(8·down), 1000/srv)
             latency = dev + RTT + 8·up/uplink + 8·down/downlink + srv + loss
    split@k: as cloud with head_k (+ int8 encoding) on the device, tail_k (+ decoding) on the server
             and the crossing tensor sent instead of the JPEG frame

A frame goes up as a JPEG (quality 90, what the deepart app answers with) and an image-to-image
model's answer comes back as one; any other model's answer is its tensors. ``FrameProfile`` holds
those bytes and the JPEG times, measured on real photos (tandem.advisor.frames). Loss costs one
RTT per frame with a lost packet: in a stream the following packets trigger fast retransmit, not
a timeout. The frame budget is 1000/fps ms: an answer later than that shows a frame behind.

Energy per minute: ``min(required, achievable)`` fps for 60 s — device compute at its watts,
and the radio kept connected by the stream (tandem.advisor.energy.stream_radio_mj).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from tandem.advisor.devices import DEVICES, DeviceProfile
from tandem.advisor.energy import compute_mj, stream_radio_mj
from tandem.advisor.networks import NetworkProfile, packets
from tandem.advisor.placement import (
    DEFAULT_SERVER,
    REQUEST_OVERHEAD_BYTES,
    RESPONSE_OVERHEAD_BYTES,
    Placement,
    ServerProfile,
    placements,
)
from tandem.advisor.profile import ModelProfile
from tandem.errors import InvalidRequest

MAX_FPS = 240.0
MIN_SIDE, MAX_SIDE = 16, 4096
MINUTE_MS = 60_000.0
DEFAULT_RESOLUTION = "640x480"
_RESOLUTION = re.compile(r"^\s*(\d{1,5})\s*[x×X]\s*(\d{1,5})\s*$")
_RANK = {"device": 0, "cloud": 1, "split": 2}  # on a tie, the simpler placement
Stage = Literal["device", "uplink", "downlink", "server"]


def parse_resolution(text: str) -> tuple[int, int]:
    """``"640x480"`` → (640, 480): width × height, each MIN_SIDE … MAX_SIDE pixels."""
    m = _RESOLUTION.match(text)
    if m is None:
        raise InvalidRequest(f"resolution {text!r}: give WIDTHxHEIGHT in pixels, e.g. 640x480")
    width, height = int(m.group(1)), int(m.group(2))
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidRequest(f"resolution {text!r}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
    return width, height


@dataclass(frozen=True)
class VideoSpec:
    fps: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not 0 < self.fps <= MAX_FPS:
            raise InvalidRequest(f"frame rate {self.fps:g}: give 0 < fps ≤ {MAX_FPS:g}")
        parse_resolution(self.resolution)

    @property
    def budget_ms(self) -> float:
        """Time for one frame: an answer later than this shows a frame behind the camera."""
        return 1000.0 / self.fps

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"

    def to_dict(self) -> dict:
        return {"fps": self.fps, "width": self.width, "height": self.height, "budget_ms": self.budget_ms}


@dataclass(frozen=True)
class FrameProfile:
    """What a frame costs on the wire and in JPEG work, measured on sample photos (tandem.advisor.frames)."""

    source: str  # where the sample frames came from
    count: int  # how many were measured
    width: int  # the frame the model takes: the video's for a model of any size, else the model's input
    height: int
    resized: bool  # the device resizes each video frame to the model's fixed input first
    quality: int  # JPEG quality of what is sent
    up_bytes: int  # mean JPEG bytes of a frame
    answer: Literal["jpeg", "tensors"]  # an image-to-image model answers with a JPEG frame
    down_bytes: int  # mean bytes of the answer: its JPEG (of the model's real output) or its tensors
    encode_ms: float  # median JPEG encoding of a frame, this machine
    decode_ms: float  # median JPEG decoding of a frame, this machine

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VideoPrediction:
    placement: str
    network: str
    feasible: bool
    fps: float  # the most frames per second this placement sustains (pipelined)
    delivered_fps: float  # min(required, fps)
    bottleneck: Stage | None  # the stage that sets fps
    latency_ms: float  # one frame, camera to answer
    meets_fps: bool
    meets_budget: bool  # latency ≤ 1000 / required fps
    live: bool  # both
    device_ms: float  # per frame, on the device (model or head, JPEG work)
    server_ms: float  # per frame, on the server (overhead, model or tail, JPEG work)
    network_ms: float  # RTT + upload + download + expected loss delay
    up_bytes: int  # per frame, headers included
    down_bytes: int
    uplink_mbps: float  # needed at the required fps
    downlink_mbps: float
    energy_mj_per_frame: float
    energy_j_per_minute: float  # at the delivered fps
    compute_j_per_minute: float
    radio_j_per_minute: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _infeasible(placement: Placement, network: NetworkProfile) -> VideoPrediction:
    inf = math.inf
    return VideoPrediction(placement.name, network.name, False, 0.0, 0.0, None, inf, False, False, False, inf, inf,
                           inf, 0, 0, 0.0, 0.0, inf, inf, inf, inf)


def predict_video(
    placement: Placement,
    network: NetworkProfile,
    profile: ModelProfile,
    frames: FrameProfile,
    spec: VideoSpec,
    *,
    device: DeviceProfile = DEVICES["this-machine"],
    server: ServerProfile = DEFAULT_SERVER,
) -> VideoPrediction:
    """Frame rate, latency and energy per minute of ``placement`` streaming ``spec`` over ``network``."""
    if placement.kind == "device":
        dev_ms = profile.whole_ms * device.speed_factor
        return _finish(placement, network, spec, device, {"device": dev_ms}, dev_ms, 0.0, 0.0, 0, 0)
    if not network.online:
        return _infeasible(placement, network)
    answer_decode, answer_encode = (frames.decode_ms, frames.encode_ms) if frames.answer == "jpeg" else (0.0, 0.0)
    if placement.kind == "cloud":
        dev_part, srv_part = frames.encode_ms + answer_decode, frames.decode_ms + profile.whole_ms + answer_encode
        sent = frames.up_bytes
    else:
        cut = profile.cut(placement.k)
        dev_part = cut.head_ms + (cut.quantize_ms if placement.int8 else 0.0) + answer_decode
        srv_part = cut.tail_ms + (cut.dequantize_ms if placement.int8 else 0.0) + answer_encode
        sent = cut.int8_bytes if placement.int8 else cut.tensor_bytes
    up, down = sent + REQUEST_OVERHEAD_BYTES, frames.down_bytes + RESPONSE_OVERHEAD_BYTES
    dev_ms = dev_part * device.speed_factor
    srv_ms = server.overhead_ms + srv_part * server.speed_factor
    up_ms = up * 8 / (network.up_mbps * 1000.0)  # 1 Mbps = 1,000 bits per ms
    down_ms = down * 8 / (network.down_mbps * 1000.0)
    loss_ms = (1.0 - (1.0 - network.loss) ** (packets(up) + packets(down))) * network.rtt_ms
    net_ms = network.rtt_ms + up_ms + down_ms + loss_ms
    stages: dict[Stage, float] = {"device": dev_ms, "uplink": up_ms, "downlink": down_ms, "server": srv_ms}
    return _finish(placement, network, spec, device, stages, dev_ms + net_ms + srv_ms, srv_ms, net_ms, up, down)


def _finish(placement: Placement, network: NetworkProfile, spec: VideoSpec, device: DeviceProfile,
            stages: dict[Stage, float], latency_ms: float, srv_ms: float, net_ms: float, up: int,
            down: int) -> VideoPrediction:
    bottleneck = max(stages, key=lambda s: stages[s])
    fps = 1000.0 / stages[bottleneck] if stages[bottleneck] > 0 else math.inf
    delivered = min(spec.fps, fps)
    per_minute = delivered * MINUTE_MS / 1000.0
    dev_ms = stages["device"]
    compute_j = per_minute * compute_mj(dev_ms, device.watts) / 1000.0
    radio_j = 0.0 if placement.kind == "device" else stream_radio_mj(network, MINUTE_MS, per_minute * up,
                                                                     per_minute * down) / 1000.0
    energy_j = compute_j + radio_j
    meets_fps = fps >= spec.fps * (1 - 1e-9)
    meets_budget = latency_ms <= spec.budget_ms * (1 + 1e-9)
    return VideoPrediction(
        placement.name, network.name, True, fps, delivered, bottleneck, latency_ms, meets_fps, meets_budget,
        meets_fps and meets_budget, dev_ms, srv_ms, net_ms, up, down, up * 8 * spec.fps / 1e6,
        down * 8 * spec.fps / 1e6, energy_j * 1000.0 / per_minute if per_minute > 0 else math.inf, energy_j,
        compute_j, radio_j,
    )


def _kind(name: str) -> int:
    return _RANK[Placement.parse(name).kind]


@dataclass(frozen=True)
class VideoVerdict:
    network: str
    recommended: str
    live: bool  # the recommended placement keeps the frame rate within the frame budget
    reason: str
    best_split: str | None  # the split that comes closest (None: no split here)


def _closest(preds: Sequence[VideoPrediction]) -> VideoPrediction:
    """Live first, then the most frames delivered, then the shortest latency, then the least energy."""
    return min(preds, key=lambda p: (not p.live, -p.delivered_fps, p.latency_ms, p.energy_j_per_minute,
                                     _kind(p.placement), p.placement))


def verdict(preds: Sequence[VideoPrediction], spec: VideoSpec) -> VideoVerdict:
    """The placement for live video on one network: of those that keep ``spec.fps`` within the frame
    budget the one that spends the least energy a minute; if none does, the one that comes closest."""
    feasible = [p for p in preds if p.feasible]
    if not feasible:
        raise InvalidRequest("no placement is possible (offline, and no device placement among the candidates)")
    splits = [p for p in feasible if p.placement.startswith("split@")]
    best_split = _closest(splits).placement if splits else None
    live = [p for p in feasible if p.live]
    want = f"{spec.fps:g} fps within {spec.budget_ms:.1f} ms a frame"
    if live:
        best = min(live, key=lambda p: (p.energy_j_per_minute, _kind(p.placement), p.placement))
        others = sorted({p.placement for p in live} - {best.placement}, key=lambda n: (_kind(n), n))
        reason = (f"the only placement that keeps {want}" if not others else
                  f"keeps {want} on the least energy ({best.energy_j_per_minute:,.1f} J a minute); "
                  f"{others[0]}{f' and {len(others) - 1} more' if len(others) > 1 else ''} also keep"
                  f"{'s' if len(others) == 1 else ''} up")
        return VideoVerdict(best.network, best.placement, True, reason, best_split)
    best = _closest(feasible)
    short = "too few frames" if not best.meets_fps else "frames too late"
    return VideoVerdict(best.network, best.placement, False,
                        f"no placement keeps {want}; this one comes closest ({short}: {best.fps:,.1f} fps, "
                        f"{best.latency_ms:,.1f} ms a frame)", best_split)


@dataclass
class VideoAdvice:
    spec: VideoSpec
    frames: FrameProfile
    networks: list[NetworkProfile]
    predictions: dict[str, list[VideoPrediction]] = field(default_factory=dict)  # network → placements
    verdicts: dict[str, VideoVerdict] = field(default_factory=dict)

    @property
    def recommended(self) -> str:
        """The placement recommended on the most networks (ties: the simpler placement)."""
        counts = Counter(v.recommended for v in self.verdicts.values())
        return min(counts, key=lambda name: (-counts[name], _kind(name), name))

    def summary(self) -> str:
        best = self.recommended
        on = [v.network for v in self.verdicts.values() if v.recommended == best]
        live = [v.network for v in self.verdicts.values() if v.recommended == best and v.live]
        text = (f"{best} for live video at {self.spec.fps:g} fps, {self.spec.resolution}: recommended on {len(on)} of "
                f"{len(self.verdicts)} networks ({', '.join(on)})")
        return text + (f"; it keeps up on {', '.join(live)}" if live else "; it keeps up on none of them")

    def prediction(self, network: str, placement: str) -> VideoPrediction:
        for p in self.predictions[network]:
            if p.placement == placement:
                return p
        raise InvalidRequest(f"no prediction for {placement!r} on {network!r}")

    def to_dict(self, every_split: bool = True) -> dict:
        """``every_split``: every split's prediction, or only the best split's on each network."""
        nets = {}
        for net in self.networks:
            v = self.verdicts[net.name]
            shown = [p for p in self.predictions[net.name]
                     if every_split or not p.placement.startswith("split@") or p.placement == v.best_split]
            nets[net.name] = {"recommended": v.recommended, "live": v.live, "reason": v.reason,
                              "best_split": v.best_split, "placements": {p.placement: p.to_dict() for p in shown}}
        return {**self.spec.to_dict(), "resolution": self.spec.resolution, "frames": self.frames.to_dict(),
                "recommended": self.recommended, "summary": self.summary(), "networks": nets}


def advise_video(
    profile: ModelProfile,
    frames: FrameProfile,
    spec: VideoSpec,
    networks: Sequence[NetworkProfile],
    *,
    device: DeviceProfile = DEVICES["this-machine"],
    server: ServerProfile = DEFAULT_SERVER,
    int8_transfer: bool = True,
) -> VideoAdvice:
    """Every placement streaming ``spec`` on every network, and the placement for live video on each."""
    if not networks:
        raise InvalidRequest("name at least one network profile")
    advice = VideoAdvice(spec, frames, list(networks))
    cands = placements(profile, int8_transfer)
    for net in networks:
        preds = [predict_video(p, net, profile, frames, spec, device=device, server=server) for p in cands]
        advice.predictions[net.name] = preds
        advice.verdicts[net.name] = verdict(preds, spec)
    return advice
