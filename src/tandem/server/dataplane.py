"""The data plane: what every inference route asks of the server, whatever its wire protocol.

The OIP v2, TF-Serving and image routes parse, check and delegate here (MLServer's
``handlers/dataplane.py`` is the model): the plane finds the model version a reference means (the
pool), announces the request to the model's batcher before its body is read (so a batch may wait for
it, see batching.py), reads and decodes the body within the server's limits, decodes photos in the
bounded decode pool, runs the model and, for the image endpoint, lets the app answer. Nothing here
knows HTTP: a route hands over a ``Reader`` for its body, so another front (gRPC, Ray Serve's
handle, a test) can drive the same plane. The request's time limit is the route's
(server/endpoint.py wraps every handler, and so everything it awaits here, in one deadline).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from tandem.apps.base import Answer, App, AppModel, Prepared, Served
from tandem.apps.registry import Apps
from tandem.errors import InvalidRequest, NotFound, Unavailable
from tandem.server.batching import Tensors
from tandem.server.photos import Budget, Cancelled, DecodePool, decode
from tandem.server.pool import LoadedModel, ModelPool, check_ref
from tandem.settings import ServerSettings

C = TypeVar("C")
P = TypeVar("P")

# A request's body: called with the most bytes the plane accepts, it gives the (decompressed) bytes or
# raises PayloadTooLarge, UnsupportedMediaType, InvalidRequest (server/body.py for HTTP).
Reader = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True)
class Limits:
    """The server settings the plane goes by, taken from Settings at the composition root."""

    max_body_bytes: int
    decode_max_pixels: int
    decode_max_bytes: int
    registry_silence_s: float  # not ready once the registry has not answered for this long

    @classmethod
    def of(cls, settings: ServerSettings) -> Limits:
        # The alias watcher polls the registry every alias_poll_s: ten polls missed is not a hiccup.
        return cls(settings.max_body_bytes, settings.decode_max_pixels, settings.decode_max_bytes,
                   max(5.0, 10 * settings.alias_poll_s))


@dataclass(frozen=True)
class PhotoRun:
    """A photo through the model: what ``prepare`` made of it, the outputs, and the time each took."""

    prepared: Prepared
    outputs: Tensors
    preprocess_s: float  # decoding and preparing the photo
    inference_s: float  # waiting for and running the model call


@dataclass(frozen=True)
class Prediction:
    """An app's answer, and the time its stages took (for a Server-Timing header)."""

    answer: Answer
    preprocess_s: float
    inference_s: float
    score_s: float

    def server_timing(self) -> str:
        return (f"preprocess;dur={self.preprocess_s * 1e3:.2f}, inference;dur={self.inference_s * 1e3:.2f}, "
                f"score;dur={self.score_s * 1e3:.2f}")


def _rows(outputs: Tensors) -> int:
    return int(next(iter(outputs.values())).shape[0]) if outputs else 0


class DataPlane:
    def __init__(self, pool: ModelPool, photos: DecodePool, apps: Apps, limits: Limits) -> None:
        self.pool = pool
        self.photos = photos
        self.apps = apps
        self.limits = limits

    # --- models -----------------------------------------------------------------------------

    async def model(self, name: str, ref: str | int | None = None, *, tails: bool = False) -> LoadedModel:
        """The loaded version ``ref`` means now (a number, an alias, None: the default). ``tails``: the
        caller serves split tails (``NAME.tail.K``) too."""
        return await self.pool.get(name, ref, tails=tails)

    def loaded(self, name: str | None = None) -> list[LoadedModel]:
        """The versions of ``name`` (None: of every model) this server holds now, oldest first."""
        return self.pool.loaded(name)

    async def unload(self, name: str) -> list[LoadedModel]:
        """Drop model ``name``'s versions from this server (see ModelPool.unload); NotFound for no such model."""
        check_ref(name, None)
        await asyncio.to_thread(self.pool.registry.versions, name)  # NotFound: no such model
        return await self.pool.unload(name)

    async def models(self) -> list[str]:
        """The names of the registry's models that have a version."""
        return [m.name for m in await asyncio.to_thread(self.pool.registry.models) if m.versions]

    async def versions(self, model: LoadedModel) -> list[int]:
        """Every version of ``model``'s model (a tail's are its model's) the registry serves: not the archived ones."""
        found = await asyncio.to_thread(self.pool.registry.versions, model.model_name)
        return [v.version for v in found if v.archived is None]

    def check_ready(self) -> None:
        """Unavailable unless the registry answered the alias watcher recently."""
        last = self.pool.last_poll_ok
        if last is None or time.monotonic() - last > self.limits.registry_silence_s:
            raise Unavailable("the model registry has not answered recently; see the server log", retry_after=2)

    # --- tensors ----------------------------------------------------------------------------

    async def infer(self, model: LoadedModel, body: Reader,
                    decode_body: Callable[[bytes], tuple[Tensors, C]]) -> tuple[Tensors, C]:
        """Read the body, decode it into the model's inputs (and whatever the protocol keeps for its
        answer, ``C``), run them in some batch: (the outputs, ``C``)."""
        t0 = time.perf_counter()
        try:
            with model.batcher.slot() as slot:  # tells the batcher this request is on its way
                raw = await body(self.limits.max_body_bytes)
                t1 = time.perf_counter()
                inputs, kept = decode_body(raw)
                t2 = time.perf_counter()
                outputs = await slot.submit(inputs)
        except BaseException:  # a timeout's cancellation too: the request failed
            model.stats.failed(time.perf_counter() - t0)
            raise
        model.stats.succeeded(_rows(outputs), time.perf_counter() - t0, t2 - t1, slot.timing)
        return outputs, kept

    # --- photos and apps --------------------------------------------------------------------

    def app(self, name: str) -> App:
        return self.apps.get(name)

    async def infer_photo(self, model: LoadedModel, photo: Reader,
                          prepare: Callable[[Image.Image], Prepared]) -> PhotoRun:
        """Read the photo, decode it within the decoding budget and ``prepare`` it into the model's
        inputs, both in the decode pool, then run them in some batch."""
        if model.split is not None:
            raise InvalidRequest(f"{model.label} is a split's tail: it takes the tensor {model.split.tensor.name}, "
                                 "not photos")
        spec = model.bundle.manifest.preprocessing
        budget = Budget.for_model(spec.height, spec.width, self.limits.decode_max_pixels, self.limits.decode_max_bytes)
        started = time.perf_counter()
        try:
            with model.batcher.slot() as slot:
                data = await photo(self.limits.max_body_bytes)
                t0 = time.perf_counter()

                def work(cancelled: threading.Event) -> Prepared:
                    img = decode(data, budget, cancelled)
                    if cancelled.is_set():  # the request is over: do not go on to the app's own work
                        raise Cancelled()
                    return prepare(img)

                prepared = await self.photos.run(work)
                t1 = time.perf_counter()
                outputs = await slot.submit(prepared.inputs)
        except BaseException:
            model.stats.failed(time.perf_counter() - started)
            raise
        done = time.perf_counter()
        model.stats.succeeded(_rows(outputs), done - started, t1 - t0, slot.timing)
        return PhotoRun(prepared, outputs, t1 - t0, done - t1)

    async def predict(self, app: App, model: LoadedModel, query: Mapping[str, str], photo: Reader,
                      accept: str = "") -> Prediction:
        """``app``'s answer to a photo on ``model``, with ``query`` (the request's parameters) as its options
        and ``accept`` (its Accept header) to choose the answer's media type."""
        reason = app.unsupported(model.bundle.manifest)
        if reason is not None:
            raise NotFound(f"{model.label} {reason}")
        options = app.negotiate(app.options(query), accept)
        on_model = await self._open(app, model)
        run = await self.infer_photo(model, photo, lambda img: on_model.prepare(img, options))
        t0 = time.perf_counter()
        answer = on_model.answer(run.prepared, run.outputs, options)
        score_s = time.perf_counter() - t0
        model.stats.answered(score_s)
        return Prediction(answer, run.preprocess_s, run.inference_s, score_s)

    async def _open(self, app: App, model: LoadedModel) -> AppModel:
        """``app`` on this version, built once (it may load files: a gallery) and kept while the version is."""
        opened = model.apps.get(app.name)
        if opened is None:
            served = Served(model.name, model.version, model.label)
            opened = await asyncio.to_thread(app.open, model.bundle, model.onnx, served)
            model.apps[app.name] = opened
        return opened
