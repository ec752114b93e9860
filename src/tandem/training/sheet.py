"""The contact sheet an image-to-image run writes after each epoch: a row per held-out photo, its
columns the photo, the teacher's picture and the student's, so a person sees what is learned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tandem import atomic

HEADER = 18  # pixels of column titles


def contact_sheet(columns: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """``columns``: title → N×H×W×3 uint8 stack (each the same N, H, W); written as a PNG at ``path``."""
    stacks = list(columns.values())
    n, h, w = stacks[0].shape[:3]
    gap = 4
    sheet = Image.new("RGB", (len(stacks) * (w + gap) + gap, HEADER * 2 + n * (h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((gap, 2), title, fill="black")
    for c, (name, stack) in enumerate(columns.items()):
        x = gap + c * (w + gap)
        draw.text((x, HEADER + 2), name, fill="black")
        for r in range(n):
            sheet.paste(Image.fromarray(stack[r]), (x, HEADER * 2 + gap + r * (h + gap)))
    with atomic.temp_path_for(path) as tmp:
        sheet.save(tmp, format="PNG")
