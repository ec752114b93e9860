"""One ``predict`` call that runs on the device, in the cloud, or wherever is best right now.

``HybridModel`` holds an optional local model (a bundle folder, an ``OnnxModel`` or a
``ModelUpdater``'s installed version) and an optional :class:`~tandem.device.cloud_client.CloudClient`.
Images are preprocessed once, on the device, with the manifest's spec (``tandem.bundle.preprocess``, the
code the server uses), so both sides see the same tensor. A policy (tandem.device.policies) orders
the placements to try per call, each run by its runner (tandem.device.runners); by name:

- ``only_device`` / ``only_cloud``: that side or a clear error;
- ``prefer_device``: the device; the cloud when there is no usable local model (or it fails);
- ``prefer_cloud``: the cloud; the device on a timeout, an error or no network;
- ``split@K`` / ``split@K+int8``: the bundle's head (``head_K.onnx``) on the device, its tensor
  (int8-encoded with +int8) to the server's tail ``NAME.tail.K`` of the same version, the tail's
  outputs back; the whole model on the device if the server does not answer;
- ``auto``: an :class:`AutoPolicy` hook decides among the device, the cloud and the bundle's
  splits whose tail the server has (tandem.device.tails); the default :class:`LatencyRule` keeps an EWMA of each placement's measured latency,
  picks the fastest and re-probes the others now and then; ``tandem.device.advisor_rule.AdvisorRule``
  predicts each placement from the advisor's cost model fed with live measurements.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from tandem.advisor.placement import CLOUD, DEVICE, Placement
from tandem.bundle import Bundle, Precision
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.preprocess import PreprocessSpec, decode_image, to_input
from tandem.bundle.runtime import Guess, OnnxModel
from tandem.device.conditions import unmet
from tandem.device.deadline import Deadline
from tandem.device.policies import AutoPolicy, LatencyRule, Measurement, Policy, as_policy
from tandem.device.runners import CloudRunner, DeviceRunner, LocalModel, RowTime, Runner, SplitRunner, batch_rows
from tandem.device.tails import ServedTails
from tandem.device.variants import LiteRtLocal, check_runtime, open_model
from tandem.errors import ConfigError, ImageError, InvalidRequest, TandemError, Unavailable

if TYPE_CHECKING:
    from tandem.device.cloud_client import CloudClient
    from tandem.device.conditions import DownloadConditions
    from tandem.device.updater import ModelUpdater

log = logging.getLogger(__name__)

__all__ = ["AutoPolicy", "HybridModel", "LatencyRule", "Measurement", "NothingAvailable", "Prediction", "Timings"]

Where = Literal["device", "cloud", "split"]
Image_ = str | Path | bytes | Image.Image | np.ndarray
Inputs = Image_ | Sequence[Image_] | dict[str, np.ndarray]


class NothingAvailable(Unavailable):
    """Neither side could answer: the message says what each side lacked or how it failed."""


@dataclass(frozen=True)
class Timings:
    """Milliseconds per stage. ``network_ms`` is 0 on the device; in the cloud it is the whole round
    trip including the remote inference, which a client cannot see apart (``inference_ms`` None).
    Split: ``inference_ms`` is the head on the device (with the int8 encoding), ``network_ms`` the
    round trip to the tail including the tail's run."""

    preprocess_ms: float
    network_ms: float
    inference_ms: float | None
    total_ms: float


@dataclass
class Prediction:
    outputs: dict[str, np.ndarray]  # one row per input
    where: Where
    model: str
    version: int | None
    timings: Timings
    policy: str
    labels: list[str] | None = None
    fallback: str | None = None  # why the other side did not answer, when the policy fell back
    placement: str = ""  # "device", "cloud", "split@K" or "split@K+int8"
    windows: list[tuple[int, int]] | None = None  # each image's part the model saw (width, height); None for tensors

    @property
    def probabilities(self) -> np.ndarray:
        return self.outputs["probabilities"]

    def pixels(self, output: str = "image") -> np.ndarray:
        """An image-to-image model's pictures (deep art) as N×H×W×3 uint8 RGB: its float pixels
        rounded and clipped to 0..255, as the server's deepart app does before encoding them."""
        out = self.outputs.get(output)
        if out is None or out.ndim != 4 or out.shape[-1] != 3:
            have = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.outputs.items())
            raise InvalidRequest(f"this answer holds no picture {output!r} of N×H×W×3 pixels (outputs: {have}); "
                                 "pixels() is for image-to-image models")
        pixels: np.ndarray = np.rint(np.clip(out, 0, 255)).astype(np.uint8)
        return pixels

    def pictures(self, output: str = "image") -> list[np.ndarray]:
        """Each image's picture (deep art) as H×W×3 uint8 RGB at the size of the part of the image the model
        saw: what ``pixels()`` holds, resized back (Pillow's bilinear filter) where the model paints at a
        fixed size of its own (a LiteRT variant at its training size) rather than at the image's. A model that
        paints each image at its own size gives ``pixels()``'s rows as they are. Tensors in, no sizes known:
        the rows as painted."""
        pixels = self.pixels(output)
        if self.windows is None:
            return list(pixels)
        return [row if row.shape[1::-1] == size else
                np.asarray(Image.fromarray(row).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
                for row, size in zip(pixels, self.windows, strict=True)]

    def top_k(self, k: int = 5, output: str = "probabilities") -> list[list[Guess]]:
        probs = self.outputs[output]
        k = max(1, min(k, probs.shape[1]))
        order = np.argsort(-probs, axis=1)[:, :k]
        names = self.labels or [str(j) for j in range(probs.shape[1])]
        return [[Guess(names[j], float(row[j])) for j in idx] for row, idx in zip(probs, order, strict=True)]


class HybridModel:
    """``predict(images_or_tensors, policy=None)`` on the device, in the cloud, or both as fallback.

    ``local``: a bundle folder, an ``OnnxModel`` or a ``LiteRtModel``, a ``ModelUpdater`` (its installed version
    is loaded, and loaded again when the updater installs a newer one; a LiteRT one with
    ``ModelUpdater(runtime="litert")``) or None. ``runtime``: what runs a bundle folder's model, ``onnx``
    (ONNX Runtime) or ``litert`` (its ``litert-<precision>`` variant with ai-edge-litert). ``cloud``: a
    ``CloudClient`` or None. ``policy``: a Policy (tandem.device.policies) or its name, the default
    of every ``predict``; ``auto``: the rule of the ``auto`` policy (default :class:`LatencyRule`).
    ``preprocessing``: the spec for images when there is no local model
    to take it from (cloud only). ``timeout_s``: the default deadline of a ``predict`` call (None:
    none but the cloud client's own ``deadline_s`` on each cloud call). ``update_conditions``: with an updater, start a background update under these download
    conditions; one that was deferred or failed is started again at a later ``predict`` once the
    device meets them, ``update_retry_s`` at the soonest after the last one ended. ``threads``: ONNX
    Runtime's intra-op threads for a bundle folder's model and its split heads (None: one per core).
    ``any_size``: images go to the model at their own size (upright RGB), not resized to the spec's:
    an image-to-image model (deep art), which paints a photo as large as it is given; None: when the
    local model's input has a free height and width (False for a cloud-only model unless given).
    Its answers' ``pixels()`` are the pictures.
    """

    def __init__(
        self,
        local: Path | str | OnnxModel | LiteRtModel | ModelUpdater | None = None,
        cloud: CloudClient | None = None,
        *,
        policy: str | Policy = "prefer_device",
        name: str | None = None,
        version: int | None = None,
        preprocessing: PreprocessSpec | None = None,
        labels: list[str] | None = None,
        precision: Precision = "fp32",
        auto: AutoPolicy | None = None,
        timeout_s: float | None = None,
        update_conditions: DownloadConditions | None = None,
        update_retry_s: float = 60.0,
        clock: Callable[[], float] = time.perf_counter,
        threads: int | None = None,
        any_size: bool | None = None,
        runtime: str = "onnx",
    ) -> None:
        self.policy: Policy = as_policy(policy)
        self.cloud = cloud
        self.auto: AutoPolicy = auto or LatencyRule()
        self.timeout_s = _check_timeout(timeout_s)
        self.update_conditions = update_conditions
        self.update_retry_s = update_retry_s
        self.clock = clock
        self._source = local
        self._name = name
        self._version = version
        self._precision = precision
        self._runtime = check_runtime(runtime)
        self._threads = threads
        self._spec = preprocessing
        self._labels = labels
        self._any_size = any_size
        self._local: LocalModel | None = None
        self._tails: ServedTails | None = None  # which split tails the cloud has, asked before auto offers a split
        self._load_error: TandemError | None = None  # why the local model did not load, kept (see _device)
        self._loaded_from: object = None  # the updater pointer that _local (or _load_error) came from
        self._row_time = RowTime()  # a device run per batch row: what a deadline keeps back for it
        self._lock = threading.Lock()
        self._updater = local if local is not None and not isinstance(local, (str, Path, OnnxModel, LiteRtModel)) \
            else None
        if self._updater is not None and update_conditions is not None:
            self._updater.start_background_update(update_conditions)

    # --- the local model ----------------------------------------------------------------------
    def _device(self) -> LocalModel:
        """The local model, loaded on first use (and again after an updater installed, repaired or
        rolled back a version). A failure to load is kept until what is installed changes, so a
        damaged model costs one attempt, not one per call."""
        src = self._source
        if src is None:
            raise ConfigError("no local model: give HybridModel a bundle folder, an OnnxModel or a ModelUpdater")
        if self._updater is None:
            local = self._local
            if local is not None:
                return local
            with self._lock:
                if self._local is None and self._load_error is None:
                    try:
                        self._local = self._open_static(src)  # type: ignore[arg-type]
                    except TandemError as e:
                        self._load_error = e
                if self._local is None:
                    raise self._load_error  # type: ignore[misc]
                return self._local
        updater = self._updater
        pointer = updater.pointer()
        if pointer is None:
            raise ConfigError(f"no version of {updater.model} is installed on this device yet "
                              "(the updater has not downloaded one)")
        with self._lock:
            if pointer != self._loaded_from:
                self._local, self._load_error = None, None
                try:
                    loaded = updater.load()  # the kept previous version when the current one cannot be opened
                    # The split heads are ONNX files, sent to devices that run the ONNX model (docs/ota.md).
                    splits = {s.k: s for s in loaded.manifest.splits} if isinstance(loaded.model, OnnxModel) else {}
                    self._local = LocalModel(loaded.model, loaded.manifest.name, loaded.version, loaded.manifest.labels,
                                             splits, loaded.files.__getitem__, threads=updater.threads)
                except TandemError as e:
                    self._load_error = e
                running = self._local.version if self._local is not None else None
                if running != pointer.version:
                    log.warning("v%s of %s cannot be opened on this device (%s)", pointer.version, updater.model,
                                self._load_error or f"running the kept v{running} meanwhile")
                    if self.update_conditions is not None:  # an update removes the damaged version, fetches it again
                        updater.start_background_update(self.update_conditions)
                self._loaded_from = pointer
            if self._local is None:
                raise self._load_error  # type: ignore[misc]
            return self._local

    def _open_static(self, src: Path | str | OnnxModel | LiteRtModel) -> LocalModel:
        if isinstance(src, OnnxModel):
            return LocalModel(src, self._name or "model", self._version, src.labels)
        if isinstance(src, LiteRtModel):
            return LocalModel(LiteRtLocal(src), self._name or "model", self._version, src.labels)
        bundle = Bundle.load(src)
        m = bundle.manifest
        name, version = self._name or m.name, self._version if self._version is not None else m.version
        if self._runtime != "onnx":  # the bundle's variant for that runtime, e.g. litert-int8 (no ONNX split heads)
            key = f"{self._runtime}-{self._precision}"
            return LocalModel(open_model(m, key, bundle.variant_path(key), self._threads), name, version, m.labels)
        return LocalModel(OnnxModel.open(bundle, self._precision, self._threads), name, version, m.labels,
                          {s.k: s for s in m.splits}, bundle.path, threads=self._threads)

    def device_available(self) -> bool:
        return self._device_or_none() is not None

    def _device_or_none(self) -> LocalModel | None:
        try:
            return self._device()
        except TandemError:
            return None

    def _cloud_available(self) -> bool:
        return self.cloud is not None and self.cloud.breaker.state != "open"

    def split_placements(self) -> list[str]:
        """The splits the local model holds, each sent fp32 and int8: what ``auto`` may choose besides
        the device and the cloud."""
        try:
            return [p.name for p in self._device().placements]
        except TandemError:
            return []

    def candidates(self) -> list[Placement]:
        """What ``auto`` chooses among now: the device when its model loads, the cloud unless its
        circuit breaker is open, and with both the local bundle's splits whose tail the server has
        (tandem.device.tails: asked once per tail and version). When none can run, the side that is
        configured (the device if any), so that its error is the one reported."""
        local = self._device_or_none()
        cloud_ok = self._cloud_available()
        available = [p for p, ok in ((DEVICE, local is not None), (CLOUD, cloud_ok)) if ok]
        if local is not None and cloud_ok and self.cloud is not None and local.placements:
            if self._tails is None or self._tails.cloud is not self.cloud:
                self._tails = ServedTails(self.cloud)
            tails = self._tails
            available += [p for p in local.placements if tails.served(p.k, local.version)]
        return available or [DEVICE if self._source is not None else CLOUD]

    def _keep_updating(self, updater: ModelUpdater, conditions: DownloadConditions) -> None:
        """Start the background update again when the last one was deferred or failed, the device
        now meets the conditions, and ``update_retry_s`` have passed since it ended."""
        ended = updater.background_ended_at
        if ended is None or time.monotonic() - ended < self.update_retry_s:
            return
        result = updater.background_result
        if updater.background_error is None and (result is None or result.status != "deferred"):
            return
        if updater.background_running() or unmet(conditions, updater.device_state()):
            return
        updater.start_background_update(conditions)

    def spec(self) -> PreprocessSpec:
        if self._spec is None:
            try:
                self._spec = self._device().model.spec
            except TandemError as e:
                raise ConfigError(f"cannot preprocess images: no local model to take the manifest's spec from ({e}); "
                                  "pass preprocessing=manifest.preprocessing, or send tensors") from e
        return self._spec

    # --- inputs -------------------------------------------------------------------------------
    def _tensors(self, x: Inputs) -> tuple[dict[str, np.ndarray], list[tuple[int, int]] | None]:
        """Tensors by input name; images become the batch of the model's only input, under the key "". With
        them, each image's window the model sees (width, height): None for tensors."""
        if isinstance(x, dict):
            if not x:
                raise InvalidRequest("predict got an empty dict of tensors")
            return {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in x.items()}, None
        images: Sequence[Image_]
        if isinstance(x, (list, tuple)):
            images = x
        elif isinstance(x, np.ndarray) and x.ndim == 4:
            images = list(x)
        else:
            images = [x]  # type: ignore[list-item]
        if not images:
            raise InvalidRequest("predict got no images")
        decoded = [_decode(i) for i in images]
        if self._takes_any_size():
            return {"": _same_size([np.asarray(img, dtype=np.uint8) for img in decoded])}, [d.size for d in decoded]
        spec = self.spec()
        boxes = [spec.crop_pixels(img.width, img.height) for img in decoded]
        return ({"": np.stack([to_input(img, spec, box) for img, box in zip(decoded, boxes, strict=True)])},
                [(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes])

    def _takes_any_size(self) -> bool:
        if self._any_size is None:
            local = self._device_or_none()
            if local is None:
                # Not known yet (an updater that has installed nothing, say): asked again at the next call, so
                # that the model it installs later decides, rather than this call's absence of one.
                return False
            self._any_size = local.model.any_size
        return self._any_size

    def _input_name(self) -> str:
        try:
            return str(self._device().model.input_name)
        except TandemError:
            return "pixels"

    # --- predict ------------------------------------------------------------------------------
    def predict(self, inputs: Inputs, policy: str | Policy | None = None, *,
                timeout_s: float | None = None) -> Prediction:
        """Run one batch (one image, many images, or ``{"input": array}``) under ``policy``
        (this model's default when None), within ``timeout_s`` (this model's default when None; None:
        no deadline). Raises a TandemError saying what is missing when no side can answer, and
        DeadlineExceeded when the only side allowed had not answered by the deadline."""
        chosen = as_policy(policy if policy is not None else self.policy)
        budget = self.timeout_s if timeout_s is None else _check_timeout(timeout_s)
        t0 = self.clock()
        deadline = Deadline.after(budget) if budget is not None else None
        if self._updater is not None and self.update_conditions is not None:
            self._keep_updating(self._updater, self.update_conditions)
        tensors, windows = self._tensors(inputs)
        pre_ms = (self.clock() - t0) * 1000
        if "" in tensors:
            tensors = {self._input_name(): tensors.pop("")}

        order = chosen.order(self)
        failures: list[tuple[Placement, TandemError]] = []
        absent: set[Placement] = set()  # sides this model was not given: named if nothing answers, no fallback note
        for i, placement in enumerate(order):
            start = self.clock()
            try:
                runner = self._runner(placement)  # what the placement lacks (no local model, no cloud) is no failed run
            except TandemError as e:
                failures.append((placement, e))
                if self._not_configured(placement):
                    absent.add(placement)
                continue
            device_next = DEVICE in order[i + 1:] and self._source is not None
            call_deadline = deadline if placement == DEVICE else self._cloud_deadline(deadline, tensors, device_next)
            try:
                run = runner.run(tensors, call_deadline)
            except TandemError as e:
                chosen.observe(self, placement, self.clock() - start, False, None)
                failures.append((placement, e))
                log.info("%s could not answer (%s)", placement, e)
                continue
            chosen.observe(self, placement, self.clock() - start, True,
                           Measurement(placement.name, batch_rows(tensors), run.inference_ms or 0.0, run.network_ms,
                                       run.sent_bytes, run.received_bytes))
            total_ms = (self.clock() - t0) * 1000
            return Prediction(run.outputs, placement.kind, run.model, run.version,
                              Timings(pre_ms, run.network_ms, run.inference_ms, total_ms), chosen.name,
                              self._labels_for(),
                              "; ".join(f"{p}: {e}" for p, e in failures if p not in absent) or None,
                              placement.name, windows)
        raise _no_side(chosen, failures)

    def _not_configured(self, placement: Placement) -> bool:
        """Whether this model was given no side for ``placement`` at all (a cloud-only or device-only
        model): its answers from the other side are no fallback and carry no note."""
        needs_device = placement != CLOUD
        needs_cloud = placement != DEVICE
        return (needs_device and self._source is None) or (needs_cloud and self.cloud is None)

    def _runner(self, placement: Placement) -> Runner:
        """The runner of ``placement`` for this call; the TandemError saying what it lacks when it has none."""
        if placement == DEVICE:
            return DeviceRunner(self._device(), self._row_time, self.clock)
        if self.cloud is None:
            raise ConfigError("no cloud endpoint configured (pass cloud=CloudClient(...))")
        if placement == CLOUD:
            return CloudRunner(self.cloud)
        return SplitRunner(placement, self._device, self.cloud, self.clock)

    def _cloud_deadline(self, deadline: Deadline | None, tensors: dict[str, np.ndarray],
                        device_next: bool) -> Deadline | None:
        """The call's deadline, less the time the device takes for this batch (as measured so far)
        when the device answers if the cloud does not: so that a fallback, too, lands in time."""
        row_s = self._row_time.seconds
        if deadline is None or not device_next or row_s is None:
            return deadline
        return deadline.sooner(row_s * batch_rows(tensors))

    def _labels_for(self) -> list[str] | None:
        if self._labels is not None:
            return self._labels
        local = self._local
        return local.labels if local is not None and local.labels else None


def _check_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and not timeout_s > 0:
        raise InvalidRequest(f"timeout_s={timeout_s!r}: a deadline must be a positive number of seconds, or None")
    return timeout_s


def _decode(img: Image_) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB") if img.mode != "RGB" else img
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ImageError(f"an image array must be HxWx3 uint8 RGB, got shape {img.shape} of {img.dtype}")
        return Image.fromarray(img)
    if isinstance(img, (bytes, str, Path)):
        return decode_image(img)
    raise ImageError(f"cannot read an image from a {type(img).__name__}: pass a path, bytes, a PIL image "
                     "or an HxWx3 uint8 array")


def _same_size(pictures: list[np.ndarray]) -> np.ndarray:
    """One batch of pictures an image-to-image model paints at their own size, so all of one size."""
    sizes = sorted({p.shape[:2] for p in pictures})
    if len(sizes) > 1:
        raise ImageError(f"these images come in {len(sizes)} sizes ({', '.join(f'{w}×{h}' for h, w in sizes[:4])}); a "
                         "model that paints each at its own size takes a batch of one size: call predict once per "
                         "size, or resize them first")
    return np.ascontiguousarray(np.stack(pictures))


def _no_side(policy: Policy, failures: list[tuple[Placement, TandemError]]) -> TandemError:
    if len(failures) == 1:
        return failures[0][1]  # one side was allowed and it said why (e.g. ServerUnreachable, CircuitOpen)
    text = "; ".join(f"{p}: {e}" for p, e in failures)
    return NothingAvailable(f"policy {policy}: neither the device nor the cloud could answer — {text}")
