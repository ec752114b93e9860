"""deepart: the photo as an image-to-image bundle's learned effect paints it (issue 18).

Answer: the picture's bytes, ``image/jpeg`` (quality JPEG_QUALITY) or ``image/png`` as the Accept header
prefers (its q-values heeded; JPEG when it names neither, or names no image type). No query options.

Size rule: the photo is answered at its own size when its longest side is at most MAX_SIDE pixels;
a larger one is first resized (Pillow's bilinear filter, aspect kept) so its longest side is MAX_SIDE,
and the answer has that size. A photo whose shorter side is under MIN_SIDE pixels (after that) is
refused: the network's three halvings leave it nothing to work on.

Needs the bundle's ``image`` output (N×H×W×3, 0..255) and its ``apps.deepart`` section (the effect,
written by `tandem export` of a `tandem train --task stylize` run).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tandem.apps.base import Answer, App, AppModel, Prepared, Served, Tensors
from tandem.bundle import Bundle, Manifest
from tandem.errors import ImageError

if TYPE_CHECKING:
    from tandem.bundle.runtime import OnnxModel

SECTION = "deepart"
OUTPUT = "image"
MAX_SIDE = 1024
MIN_SIDE = 16
JPEG_QUALITY = 90
JPEG, PNG = "image/jpeg", "image/png"


@dataclass(frozen=True)
class ArtOptions:
    media_type: str = JPEG


def preferred_image_type(accept: str) -> str:
    """JPEG or PNG, whichever ``accept`` (an HTTP Accept header) rates higher; JPEG on a tie or when it
    rates neither (the server answers with an image anyway rather than refuse)."""
    rates: dict[str, float] = {}
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        kind = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            key, _, value = f.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if kind:
            rates[kind] = max(q, rates.get(kind, 0.0))

    def rate(media: str) -> float:
        return rates.get(media, rates.get("image/*", rates.get("*/*", 0.0)))

    return PNG if rate(PNG) > rate(JPEG) else JPEG


def fitted(photo: Image.Image) -> Image.Image:
    """The photo the network paints: within MAX_SIDE on its longest side (see the module's size rule)."""
    w, h = photo.size
    longest = max(w, h)
    if longest > MAX_SIDE:
        scale = MAX_SIDE / longest
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        photo = photo.resize((w, h), Image.Resampling.BILINEAR)
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"the photo is {photo.width}×{photo.height} pixels; deepart paints photos at least "
                         f"{MIN_SIDE} pixels on each side (after fitting the longest within {MAX_SIDE})")
    return photo


def encode(pixels: np.ndarray, media_type: str) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    if media_type == PNG:
        img.save(buf, format="PNG")
    else:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class DeepArt(App[ArtOptions]):
    name = "deepart"
    summary = "the photo painted by the bundle's learned effect (image/jpeg or image/png by Accept)"
    sections = (SECTION,)

    def unsupported(self, manifest: Manifest) -> str | None:
        out = next((t for t in manifest.outputs if t.name == OUTPUT), None)
        if out is None or len(out.shape) != 4 or out.shape[-1] != 3:
            outputs = ", ".join(t.name for t in manifest.outputs)
            return (f"gives no picture (task {manifest.task}: outputs {outputs}; deepart needs an '{OUTPUT}' output of "
                    "N×H×W×3 pixels): export a run trained with `tandem train --task stylize`")
        if SECTION not in manifest.apps:
            return (f"has no deepart effect (apps.{SECTION} in its manifest): export a run trained with "
                    "`tandem train --task stylize`")
        return None

    def options(self, query: Mapping[str, str]) -> ArtOptions:
        return ArtOptions()

    def negotiate(self, options: ArtOptions, accept: str) -> ArtOptions:
        return ArtOptions(preferred_image_type(accept))

    def open(self, bundle: Bundle, model: OnnxModel, served: Served) -> AppModel[ArtOptions]:
        return Painting(model)


class Painting(AppModel[ArtOptions]):
    def __init__(self, model: OnnxModel) -> None:
        self.model = model

    def prepare(self, photo: Image.Image, options: ArtOptions) -> Prepared:
        pixels = np.asarray(fitted(photo), dtype=np.uint8)
        return Prepared({self.model.input_name: np.ascontiguousarray(pixels[None])})

    def answer(self, prepared: Prepared, outputs: Tensors, options: ArtOptions) -> Answer:
        pixels = np.rint(np.clip(outputs[OUTPUT][0], 0, 255)).astype(np.uint8)
        return Answer(encode(pixels, options.media_type), options.media_type)
