"""celebmatch as an app of the image endpoint: the photo's face and its eyes, nose and mouth views
go through the model as one 4-row request; the answer is CelebMatcher's (matcher.py).

Answer: ``MatchResult.to_json()`` (sentence, top, parts, face_box, crop_window, no_match, landmarks);
options ``detect`` (true/false, default true) and ``top_k`` (1-100, default 3). Needs the bundle's
``embedding`` output and its gallery (``apps.celebmatch``, written by `tandem celebmatch enroll`);
face-embedding bundles also bring ``apps.faces`` (kit.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tandem.apps.base import Answer, App, AppModel, Prepared, Served, Tensors
from tandem.apps.options import MAX_TOP_K, flag, whole_number
from tandem.bundle import Bundle, Manifest

if TYPE_CHECKING:
    from tandem.apps.celebmatch.matcher import CelebMatcher
    from tandem.bundle.runtime import OnnxModel

# The manifest sections it reads: gallery.APP (enrolment writes it) and kit.APP (export writes it).
GALLERY_SECTION = "celebmatch"
FACES_SECTION = "faces"
OUTPUT = "embedding"


@dataclass(frozen=True)
class MatchOptions:
    detect: bool = True
    top_k: int = 3


class CelebMatch(App[MatchOptions]):
    name = "celebmatch"
    summary = "which enrolled person a face looks like, whole and by eyes, nose and mouth"
    sections = (GALLERY_SECTION, FACES_SECTION)

    def unsupported(self, manifest: Manifest) -> str | None:
        if GALLERY_SECTION not in manifest.apps:
            return ("has no celebmatch gallery: enrol one with `tandem celebmatch enroll BUNDLE --data DIR`, push "
                    "the bundle and point the alias at the new version")
        if OUTPUT not in {t.name for t in manifest.outputs}:
            return f"has no '{OUTPUT}' output, which celebmatch compares with its gallery; re-export the bundle"
        return None

    def options(self, query: Mapping[str, str]) -> MatchOptions:
        detect = flag(query, "detect", True)
        return MatchOptions(detect, whole_number(query, "top_k", 3, 1, MAX_TOP_K))

    def open(self, bundle: Bundle, model: OnnxModel, served: Served) -> AppModel[MatchOptions]:
        from tandem.apps.celebmatch.matcher import CelebMatcher

        return Matching(CelebMatcher(bundle, model=model))  # loads the gallery once per version


class Matching(AppModel[MatchOptions]):
    def __init__(self, matcher: CelebMatcher) -> None:
        self.matcher = matcher

    def prepare(self, photo: Image.Image, options: MatchOptions) -> Prepared:
        face = self.matcher.face(photo, options.detect)
        views = self.matcher.views(face)
        rows = np.concatenate(list(views.values()))
        return Prepared({self.matcher.model.input_name: rows}, (face, list(views)))

    def answer(self, prepared: Prepared, outputs: Tensors, options: MatchOptions) -> Answer:
        face, views = prepared.kept
        embeddings = outputs[OUTPUT]
        by_view = {v: embeddings[i : i + 1] for i, v in enumerate(views)}
        return Answer(self.matcher.score(face, by_view, options.top_k).to_json())
