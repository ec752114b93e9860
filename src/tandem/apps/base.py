"""What an app is: a way to answer a photo with a bundle's model.

The model itself only maps input tensors to output tensors; an app says how a photo becomes those
inputs and how the outputs become an answer a person or a program wants (labels, a likeness, an
image). The server's image endpoint, ``POST /v1/apps/{app}/{model}:predict``, runs any registered app
(apps/registry.py, ``create_app(apps=[...])``) the same way:

1. ``App.unsupported(manifest)``: can the model's bundle serve this app at all (its outputs, its own
   ``apps`` section and files)? A reason makes a 404.
2. ``App.options(query)``: the request's query parameters, checked (a bad one makes a 400); then
   ``App.negotiate(options, accept)``: what the Accept header asks of the answer (an image app's
   media type; by default nothing).
3. ``App.open(bundle, model, served)``: the app on one version (a gallery loaded, say), built once and
   kept while the version is loaded.
4. ``AppModel.prepare(photo, options)``: the decoded, upright RGB photo into the model's inputs, in the
   server's decode pool (it may be slow: finding a face); the server batches the model call.
5. ``AppModel.answer(prepared, outputs, options)``: the answer, JSON or bytes of any media type.

Nothing here imports the server: an app is also usable from the CLI or a device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
from PIL import Image

from tandem.bundle import Bundle, Manifest

if TYPE_CHECKING:
    from tandem.bundle.runtime import OnnxModel  # onnxruntime: imported where a model runs

OptionsT = TypeVar("OptionsT")  # an app's options, parsed from the query
Tensors = dict[str, np.ndarray]
JSON = "application/json"


@dataclass(frozen=True)
class Served:
    """The model version an app answers with, as the server names it."""

    name: str
    version: int
    label: str  # "NAME vN", for messages


@dataclass(frozen=True)
class Prepared:
    """A photo made into the model's inputs (every array batch-first), and what the app keeps of it
    for its answer (a face's box, say)."""

    inputs: Tensors
    kept: Any = None


@dataclass(frozen=True)
class Answer:
    """An app's answer: a JSON-able ``body``, or bytes of ``media_type`` (an image app's picture)."""

    body: Any
    media_type: str = JSON


class AppModel(ABC, Generic[OptionsT]):
    """An app on one model version."""

    @abstractmethod
    def prepare(self, photo: Image.Image, options: OptionsT) -> Prepared:
        """The model's inputs for ``photo`` (decoded, upright RGB); an ImageError or NoFaceFound
        (or any TandemError) when the photo cannot be answered."""

    @abstractmethod
    def answer(self, prepared: Prepared, outputs: Tensors, options: OptionsT) -> Answer:
        """The answer from the model's ``outputs`` (by name, the rows of ``prepared.inputs``)."""


class App(ABC, Generic[OptionsT]):
    name: ClassVar[str]  # the {app} of /v1/apps/{app}/{model}:predict
    summary: ClassVar[str]  # one line for `tandem info` and the docs
    # The keys of the manifest's ``apps`` object this app reads (its own files and settings).
    sections: ClassVar[tuple[str, ...]] = ()
    # Whether answers carry Server-Timing (preprocess, inference, score) and x-tandem-model[-version].
    timing_headers: ClassVar[bool] = True

    @abstractmethod
    def unsupported(self, manifest: Manifest) -> str | None:
        """None when a bundle with this manifest can serve the app; else why not, as words that follow
        the model's name ("faces v2 has no celebmatch gallery: ..."), with what to do about it."""

    @abstractmethod
    def options(self, query: Mapping[str, str]) -> OptionsT:
        """The app's options from the request's query parameters; InvalidRequest for a bad one."""

    def negotiate(self, options: OptionsT, accept: str) -> OptionsT:
        """``options`` as the request's Accept header (``accept``, "" when none) narrows them: an app that
        answers in more than one media type picks one here. By default the header changes nothing."""
        return options

    @abstractmethod
    def open(self, bundle: Bundle, model: OnnxModel, served: Served) -> AppModel[OptionsT]:
        """The app on this version; ``model`` is the version's ONNX model (share its session, do not
        load another). May read files: it runs once per version, off the event loop."""
