"""Region views while training: a share of each batch shows only the eyes, the nose or the mouth
(everything else in the normalisation mean, which the network sees as zeros), and must still map to
the person. So "you have X's eyes" compares what the network learned about eyes, not a whole-face
embedding of a masked photo it never saw in training."""

from __future__ import annotations

import torch

from tandem.faces.align import AlignSpec, region_boxes


class RegionMasks:
    def __init__(self, spec: AlignSpec) -> None:
        self.boxes = list(region_boxes(spec).values())
        self.h, self.w = spec.height, spec.width

    def mask(self, region: int) -> torch.Tensor:
        x0, y0, x1, y1 = self.boxes[region]
        m = torch.zeros(self.h, self.w)
        m[round(y0 * self.h) : round(y1 * self.h), round(x0 * self.w) : round(x1 * self.w)] = 1.0
        return m

    def apply(self, x: torch.Tensor, share: float, g: torch.Generator, fill: torch.Tensor | None = None) -> torch.Tensor:
        """x: N×3×H×W in [0, 1]; ``share`` of the rows become one region each. ``fill``: 1×3×1×1
        colour outside the region (the network's mean)."""
        if share <= 0:
            return x
        n = len(x)
        on = torch.rand(n, generator=g) < share
        which = torch.randint(0, len(self.boxes), (n,), generator=g)
        if not on.any():
            return x
        masks = torch.stack([self.mask(r) for r in range(len(self.boxes))])[which].unsqueeze(1).to(x)
        keep = torch.where(on.view(n, 1, 1, 1).to(x.device), masks, torch.ones_like(masks))
        fill = fill if fill is not None else torch.full((1, 3, 1, 1), 0.5)
        return x * keep + fill.to(x) * (1 - keep)
