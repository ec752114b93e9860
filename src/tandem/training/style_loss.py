"""The loss of a neural style trained feed-forward (Johnson et al. 2016), on a loss network we can have.

Johnson's losses compare Gram matrices (style) and feature maps (content) of a pretrained VGG; no such
network can be downloaded here. Ustyuzhaninov et al. (2016, "Texture synthesis using shallow
convolutional networks with random filters") showed that one layer of *random* filters at several
scales carries the texture statistics a Gram loss needs. So the loss network here is fixed random
filters (seeded: the same network for every run with that seed) applied to the picture at four
scales (1, 1/2, 1/4, 1/8: the coarse ones see brush strokes and colour fields, as the large filters
of the paper do, at a fraction of their cost), each followed by a ReLU.

- style loss: per scale, the squared difference of the picture's and the style image's Gram matrices,
  relative to the style's own (so every scale counts alike), averaged over scales;
- content loss: the feature maps at 1/4 scale, picture against photo, relative to the photo's energy
  there: the layout and the large shapes stay, the texture below them is free to change;
- total variation: a small penalty on pixel-to-pixel jitter, which a Gram loss alone leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SCALES = (1, 2, 4, 8)
CONTENT_SCALE = 4
FILTERS = 64
KERNEL = 5
MEAN, STD = 0.5, 0.25


@dataclass(frozen=True)
class StyleWeights:
    style: float = 1.0
    content: float = 1.0
    tv: float = 1e-4


class RandomFeatures(nn.Module):
    """Fixed random filters at several scales: pixels (N×H×W×3, 0..255) → one ReLU feature map per scale."""

    def __init__(self, seed: int = 0, filters: int = FILTERS, kernel: int = KERNEL) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        weights = torch.randn(len(SCALES), filters, 3, kernel, kernel, generator=g)
        # Unit-norm filters: every filter's response has the same scale, so no one filter rules the Gram.
        weights = weights / weights.flatten(2).norm(dim=2)[..., None, None, None]
        self.register_buffer("weights", weights)
        self.weights: torch.Tensor
        self.requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = (pixels.permute(0, 3, 1, 2) / 255.0 - MEAN) / STD
        out = []
        for i, s in enumerate(SCALES):
            xs = F.avg_pool2d(x, s) if s > 1 else x
            out.append(F.relu(F.conv2d(xs, self.weights[i], padding=self.weights.shape[-1] // 2)))
        return out


def gram(features: torch.Tensor) -> torch.Tensor:
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


class StyleLoss(nn.Module):
    """Style, content and total-variation loss of pictures against one style image and their photos."""

    def __init__(self, style: np.ndarray, weights: StyleWeights = StyleWeights(), seed: int = 0) -> None:
        super().__init__()
        self.features = RandomFeatures(seed)
        self.weights = weights
        with torch.no_grad():
            grams = [gram(f) for f in self.features(torch.from_numpy(np.array(style[None], dtype=np.float32)))]
        for i, g in enumerate(grams):
            self.register_buffer(f"style_gram{i}", g)

    def grams(self) -> list[torch.Tensor]:
        return [getattr(self, f"style_gram{i}") for i in range(len(SCALES))]

    def parts(self, pictures: torch.Tensor, photos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each loss (mean over the batch), unweighted: ``style``, ``content`` and ``tv``."""
        feats = self.features(pictures)
        style = torch.stack([((gram(f) - g) ** 2).sum((1, 2)).mean() / (g**2).sum()
                             for f, g in zip(feats, self.grams(), strict=True)]).mean()
        k = SCALES.index(CONTENT_SCALE)
        with torch.no_grad():
            target = self.features(photos)[k]
        content = ((feats[k] - target) ** 2).mean() / (target**2).mean().clamp_min(1e-8)
        p = pictures / 255.0
        tv = ((p[:, 1:] - p[:, :-1]) ** 2).mean() + ((p[:, :, 1:] - p[:, :, :-1]) ** 2).mean()
        return {"style": style, "content": content, "tv": tv}

    def forward(self, pictures: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
        parts = self.parts(pictures, photos)
        w = self.weights
        return w.style * parts["style"] + w.content * parts["content"] + w.tv * parts["tv"]
