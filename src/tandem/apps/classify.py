"""classify: the bundle's labels for a photo, most likely first (what `tandem predict` prints).

Answer: ``{"model", "version", "precision", "predictions": [{"top": [{"label", "probability"}, ...]}]}``;
option ``top_k`` (1-100, default 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from tandem.apps.base import Answer, App, AppModel, Prepared, Served, Tensors
from tandem.apps.options import MAX_TOP_K, whole_number
from tandem.bundle import Bundle, Manifest
from tandem.bundle.preprocess import to_input

if TYPE_CHECKING:
    from tandem.bundle.runtime import OnnxModel  # onnxruntime: imported where a model runs

OUTPUT = "probabilities"


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 5


class Classify(App[ClassifyOptions]):
    name = "classify"
    summary = "the bundle's labels for a photo, most likely first"
    # Its answers have never carried Server-Timing or x-tandem-model: the JSON names the version.
    timing_headers = False

    def unsupported(self, manifest: Manifest) -> str | None:
        outputs = [t.name for t in manifest.outputs]
        if OUTPUT not in outputs or not manifest.labels:
            return (f"is not a classifier (task {manifest.task}: outputs {', '.join(outputs)}; a classifier gives "
                    f"'{OUTPUT}' over its labels); `tandem info BUNDLE` lists the apps it serves")
        return None

    def options(self, query: Mapping[str, str]) -> ClassifyOptions:
        return ClassifyOptions(whole_number(query, "top_k", 5, 1, MAX_TOP_K))

    def open(self, bundle: Bundle, model: OnnxModel, served: Served) -> AppModel[ClassifyOptions]:
        return Classifier(model, served)


class Classifier(AppModel[ClassifyOptions]):
    def __init__(self, model: OnnxModel, served: Served) -> None:
        self.model = model
        self.served = served

    def prepare(self, photo: Image.Image, options: ClassifyOptions) -> Prepared:
        return Prepared({self.model.input_name: to_input(photo, self.model.spec)[None]})

    def answer(self, prepared: Prepared, outputs: Tensors, options: ClassifyOptions) -> Answer:
        guesses = self.model.top_k(outputs[OUTPUT], options.top_k)[0]
        return Answer({"model": self.served.name, "version": self.served.version, "precision": self.model.precision,
                       "predictions": [{"top": [g.__dict__ for g in guesses]}]})
