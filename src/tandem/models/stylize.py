"""A small fully convolutional image-to-image network for deep-art effects (issue 18).

The teacher effects are edge-aware filters whose support spans tens of pixels: the network sees that
context through an encoder at 1/2, 1/4 and 1/8 resolution (stride-2 convolutions), decodes back with
bilinear upsampling and additive skips, and predicts a change to the photo rather than the picture
itself, so the untouched parts of a photo cost it nothing to get right. The change is predicted at
half resolution and upsampled (bilinear) onto the full-resolution photo: full resolution then costs
only the elementwise steps. Against a full-resolution head over the upsampled features and the photo
this ran 2.3x faster (17 against 39 ms for 512x512 on one core) at the same held-out PSNR against
detailEnhance (30.0 against 29.9 dB: 270 LFW photos, 15 epochs). Any height and width go through
(odd ones too: each upsampling takes its skip's size).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class StylizeNetConfig:
    widths: tuple[int, int, int] = (12, 24, 32)  # channels at 1/2, 1/4 and 1/8 resolution
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StylizeNetConfig:
        return cls(tuple(d["widths"]), tuple(d["mean"]), tuple(d["std"]))


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class StylizeNet(nn.Module):
    """Normalised N×3×H×W in, the change to it out at half resolution (⌈H/2⌉×⌈W/2⌉, normalised units)."""

    def __init__(self, cfg: StylizeNetConfig = StylizeNetConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.widths
        self.down1, self.down2, self.down3 = _conv(3, c1, stride=2), _conv(c1, c2, stride=2), _conv(c2, c3, stride=2)
        self.res_a, self.res_b = _conv(c3, c3), _conv(c3, c3)
        self.to2, self.mix2 = _conv(c3, c2, 1), _conv(c2, c2)
        self.to1, self.mix1 = _conv(c2, c1, 1), _conv(c1, c1)
        self.head = _conv(c1, 3, 1)
        # A fresh network leaves the photo as it is: training starts from the photo, not from noise.
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = F.relu(self.down1(x))
        d2 = F.relu(self.down2(d1))
        d3 = F.relu(self.down3(d2))
        r = d3 + self.res_b(F.relu(self.res_a(d3)))
        u2 = F.relu(self.mix2(_up(self.to2(r), d2) + d2))
        u1 = F.relu(self.mix1(_up(self.to1(u2), d1) + d1))
        return self.head(u1)


class PixelStylizer(nn.Module):
    """What the bundle's graph holds: uint8 NHWC pixels in, float32 NHWC pixels (0..255) out.

    ``unclamped`` is for training: clamping would stop the gradient wherever the teacher is pure
    white or black (a pencil sketch's paper), the places it is easiest to learn.
    """

    def __init__(self, net: StylizeNet) -> None:
        super().__init__()
        self.net = net
        mean, std = torch.tensor(net.cfg.mean).view(1, 3, 1, 1), torch.tensor(net.cfg.std).view(1, 3, 1, 1)
        # (pixel / 255 - mean) / std as one multiply and one add: full-resolution steps are the costly ones.
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)
        self.register_buffer("gain", 255.0 * std)  # normalised units back to pixels
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.gain: torch.Tensor

    def unclamped(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float()
        change = self.net(x * self.scale + self.shift) * self.gain
        return (x + _up(change, x)).permute(0, 2, 3, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.unclamped(pixels).clamp(0.0, 255.0)
