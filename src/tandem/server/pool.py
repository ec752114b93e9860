"""The model pool: loaded bundle versions, and which version each alias is served by.

Versions are loaded by (name, version) and stay addressable by number. A request names a model
and a reference (a version number, an alias, or nothing: alias ``production`` if set, else the
latest); the pool remembers what each reference resolved to, so the hot path never queries the
registry. The alias watcher polls the registry's generation; every remembered alias resolved at an
older generation is resolved again, and a moved alias is switched only after the new version is
loaded and warmed up in a background thread. Requests already holding the old version finish on it.

Split inference (docs/advisor.md): model ``NAME.tail.K`` is the tail of NAME's split at k=K, taken
from the bundle of the version the reference resolves to for NAME, so pushing a split bundle makes
its tails servable and alias moves carry the tails along. Only the OIP routes serve tails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from tandem.bundle import NAME_RE, Bundle, Manifest, SplitSpec, parse_tail_name
from tandem.bundle.runtime import OnnxModel, load_session
from tandem.errors import BundleError, ModelError, NotFound, TandemError, Unavailable, quoted
from tandem.protocol.datatypes import BUNDLE_TO_OIP, TensorSig
from tandem.protocol.numbers import is_version, number
from tandem.registry.records import ALIAS_RE, Resolved
from tandem.server.batching import Batcher, Tensors
from tandem.server.prometheus import Metrics
from tandem.server.statistics import CountingObserver, InferenceStats
from tandem.settings import ServerSettings

if TYPE_CHECKING:
    from tandem.apps.base import AppModel
    from tandem.registry.registry import Registry

log = logging.getLogger(__name__)

Ref = int | str | None  # a version number, an alias, or the default


def parse_ref(ref: str | int | None) -> Ref:
    """'3' → 3; 'production' → 'production'; None or '' → None (the default version)."""
    if ref is None or isinstance(ref, int):
        return ref
    ref = ref.strip()
    if not ref:
        return None
    if not is_version(ref):
        return ref
    n = number(ref)
    if n is None:
        raise NotFound(f"there is no version {ref[:20]}…: versions are numbers from 1 to {2**31 - 1}")
    return n


def check_ref(name: str, ref: Ref) -> None:
    """What can exist in the registry (the manifest's name rule, the registry's alias rule). Anything
    else is refused before it reaches the database: it cannot name a model, and a database may choke
    on it (PostgreSQL on NUL characters, on integers past int32)."""
    if not NAME_RE.fullmatch(name):
        raise NotFound(f"no model named {quoted(name)}: model names are 1-64 letters, digits, '.', '_' or '-'")
    if isinstance(ref, str) and not ALIAS_RE.fullmatch(ref):
        raise NotFound(f"model {name} has no alias {quoted(ref)}: aliases are 1-64 lowercase letters, digits, "
                       "'-' or '_'; versions are numbers")
    if isinstance(ref, int) and not 0 < ref < 2**31:
        raise NotFound(f"model {name} has no version {ref}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ort_threads(settings: ServerSettings) -> int:
    """ONNX Runtime intra-op threads per model call: TANDEM_ORT_THREADS if set, else 1 — the
    server gets its parallelism from several calls in flight instead (see batching.py for why)."""
    return settings.ort_threads or 1


def lone_request_threads(settings: ServerSettings) -> int:
    """ONNX Runtime threads of a lone request's call: TANDEM_LONE_REQUEST_THREADS if set, else every core
    this worker may use. No more than a batch call's threads (ort_threads): no session apart."""
    return settings.lone_request_threads or max(1, _cores() // settings.workers)


# The lone session's threads spin between the parallel parts of a call (blocking them instead made a
# 2-thread call slower than a 1-thread one here), but stop spinning as soon as the call returns: a
# spinning thread would take the core the event loop and the next batch's call need.
LONE_SESSION_CONFIG = {"session.force_spinning_stop": "1"}


def batches_in_flight(settings: ServerSettings) -> int:
    """Model calls in flight per model: TANDEM_BATCHES_IN_FLIGHT if set, else the cores this process
    may use, split between the workers and the threads of each call, so the CPU is not oversubscribed."""
    if settings.batches_in_flight:
        return settings.batches_in_flight
    return max(1, _cores() // (settings.workers * ort_threads(settings)))


# The longest a shutdown waits for a registry poll in progress (one poll may load a new version).
WATCHER_STOP_S = 15.0


class LoadedModel:
    """One version of a model (or of a split's tail): its verified bundle, an ONNX Runtime session
    and a batcher."""

    def __init__(self, resolved: Resolved, settings: ServerSettings, metrics: Metrics) -> None:
        self.name = resolved.name  # as served: NAME, or NAME.tail.K
        self.version = resolved.version
        self.manifest_sha256 = resolved.manifest_sha256
        self.bundle = Bundle.load(resolved.bundle_dir)
        m = self.bundle.manifest
        tail = parse_tail_name(resolved.name)
        self.model_name = tail[0] if tail else resolved.name  # the registry's name
        self.split: SplitSpec | None = _split_of(m, self.model_name, resolved.version, tail[1]) if tail else None
        if self.split is None:
            self.onnx = OnnxModel.open(self.bundle, "fp32", ort_threads(settings), self.label)
            ins = m.inputs
        else:
            self.onnx = OnnxModel(self.bundle.path(self.split.tail), m.preprocessing, m.labels, "fp32",
                                  ort_threads(settings), self.label)
            ins = [self.split.tensor]
        self.inputs = [TensorSig(t.name, BUNDLE_TO_OIP[t.dtype], tuple(t.shape)) for t in ins]
        # A tail's float input may also arrive int8-encoded (tandem.protocol.oip: UINT8 with scale and zero point).
        self.int8_inputs = frozenset(s.name for s in self.inputs if s.datatype == "FP32") if self.split else frozenset()
        self.outputs = [TensorSig(t.name, BUNDLE_TO_OIP[t.dtype], tuple(t.shape)) for t in m.outputs]
        self._output_names = [s.name for s in self.outputs]
        missing = set(self._output_names) - set(self.onnx.output_names)
        if missing or [s.name for s in self.inputs] != [self.onnx.input_name]:
            raise ModelError(f"{self.name} v{self.version}: the manifest's tensors do not match the ONNX model's "
                             f"(outputs missing from the model: {sorted(missing)}); re-export the bundle")
        # A request that finds its model idle runs on a session with every core's threads: its answer
        # comes sooner, and nothing else wants the cores then (see batching.py).
        lone = lone_request_threads(settings)
        self._lone_session = (load_session(self.onnx.path, lone, LONE_SESSION_CONFIG)
                              if lone > ort_threads(settings) and self.onnx.path is not None else None)
        self._lone_calls = metrics.lone_calls.labels(self.name, str(self.version))
        self.stats = InferenceStats()  # Triton's statistics extension (server/statistics.py)
        self.batcher = Batcher(self._run, settings.max_batch_size, settings.max_delay_ms / 1000,
                               f"{self.name}-{self.version}",
                               CountingObserver(self.stats, metrics.observer(self.name, self.version)),
                               in_flight=batches_in_flight(settings),
                               run_lone=self._run_lone if self._lone_session is not None else None,
                               max_queue_s=settings.max_queue_ms / 1000)
        self.last_used = time.monotonic()
        # What apps built on this version (their galleries, say: server/dataplane.py), kept as long as it is.
        self.apps: dict[str, AppModel] = {}

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def lone_threads(self) -> int:
        """ONNX Runtime threads a lone request runs on (those of any other call if there is no lone session)."""
        s = self._lone_session or self.onnx.session
        return s.get_session_options().intra_op_num_threads

    def _run(self, feeds: Tensors) -> Tensors:
        return self._run_on(self.onnx.session, feeds)

    def _run_lone(self, feeds: Tensors) -> Tensors:
        assert self._lone_session is not None
        self._lone_calls.inc()
        return self._run_on(self._lone_session, feeds)

    def _run_on(self, session: ort.InferenceSession, feeds: Tensors) -> Tensors:
        return self.onnx.infer(feeds, self._output_names, session)

    def warm_up(self, runs: int, batch_sizes: Sequence[int]) -> None:
        """Run dummy inputs so that the first real request does not pay for ONNX Runtime's lazy setup."""
        spec = self.bundle.manifest.preprocessing
        for b in dict.fromkeys(batch_sizes):
            # An image-to-image model takes any height and width (-1): it warms up at the size it was trained at.
            feeds = {s.name: np.zeros((b, *_sized(s.shape[1:], spec.height, spec.width)), s.dtype) for s in self.inputs}
            for _ in range(runs):
                self._run(feeds)
                if self._lone_session is not None:
                    self._run_on(self._lone_session, feeds)


def _sized(dims: tuple[int, ...], height: int, width: int) -> tuple[int, ...]:
    """An input's dimensions after the batch with any dynamic height and width (NHWC axes 1, 2) given."""
    fill = (height, width)
    return tuple(fill[i] if d < 0 and i < 2 else max(d, 1) for i, d in enumerate(dims))


def _split_of(manifest: Manifest, model: str, version: int, k: int) -> SplitSpec:
    try:
        return manifest.split(k)
    except BundleError:
        have = ", ".join(str(s.k) for s in manifest.splits) or "none"
        raise NotFound(f"{model} v{version} has no split at k={k} (its splits: {have}); cut the bundle with "
                       f"`tandem split BUNDLE {k}`, push it and point the alias at the new version") from None


@dataclass(frozen=True)
class _Resolution:
    version: int
    generation: int  # the registry generation read before resolving


class ModelPool:
    def __init__(self, registry: Registry, settings: ServerSettings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[LoadedModel]] = {}
        self._refs: dict[tuple[str, Ref], _Resolution] = {}
        self.last_poll_ok: float | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False

    # --- serving ----------------------------------------------------------------------------

    async def get(self, name: str, ref: str | int | None = None, *, tails: bool = False) -> LoadedModel:
        """The loaded version that ``ref`` means now (loading it first if need be). ``tails``: the
        caller serves split tails too (``NAME.tail.K``); other routes take whole models only."""
        if not tails and parse_tail_name(name) is not None:
            raise NotFound(f"{name} is a split's tail: it is served at /v2/models/{name}/infer only")
        ref = parse_ref(ref)
        hit = self._refs.get((name, ref))
        model = self._loaded.get((name, hit.version)) if hit is not None else None
        if model is None:
            model = await self._resolve_and_load(name, ref)
        model.last_used = time.monotonic()  # every route gets its model here: this is what idling goes by
        return model

    async def _resolve_and_load(self, name: str, ref: Ref) -> LoadedModel:
        check_ref(name, ref)
        gen, resolved = await asyncio.to_thread(self._resolve, name, ref)
        model = await self._load(resolved)
        key = (name, ref)
        known = self._refs.get(key)
        # The watcher may have re-resolved this reference meanwhile from a newer generation.
        if known is None or known.generation <= gen:
            self._refs[key] = _Resolution(resolved.version, gen)
        return model

    def _resolve(self, name: str, ref: Ref) -> tuple[int, Resolved]:
        gen = self.registry.generation()
        return gen, self._lookup(name, ref)

    def _lookup(self, name: str, ref: Ref) -> Resolved:
        """What the registry says ``ref`` means; for a tail, its model's version, which must hold the split."""
        tail = parse_tail_name(name)
        if tail is None:
            return self.registry.resolve(name, ref)
        model, k = tail
        resolved = self.registry.resolve(model, ref)
        _split_of(Bundle.load(resolved.bundle_dir, verify=False).manifest, model, resolved.version, k)
        return replace(resolved, name=name)

    async def _load(self, resolved: Resolved) -> LoadedModel:
        key = (resolved.name, resolved.version)
        model = self._loaded.get(key)
        if model is not None:
            return model
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_new(resolved))
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load_new(self, resolved: Resolved) -> LoadedModel:
        t0 = time.perf_counter()
        model = await asyncio.to_thread(self._load_and_warm, resolved)
        if self._closed:
            await model.batcher.close()
            raise Unavailable("the server is shutting down; retry on another instance", retry_after=1)
        self._loaded[(model.name, model.version)] = model
        self.metrics.loaded.labels(model.name, str(model.version)).set(1)
        log.info("loaded %s in %.0f ms", model.label, (time.perf_counter() - t0) * 1000)
        await self._bound(model)
        return model

    def _pinned(self) -> set[tuple[str, int]]:
        """The versions an alias or a model's default reference is served by now: never unloaded unasked."""
        return {(n, r.version) for (n, ref), r in self._refs.items() if not isinstance(ref, int)}

    async def _bound(self, new: LoadedModel) -> None:
        """At most TANDEM_MAX_LOADED_VERSIONS versions of ``new``'s model: unload the least recently used
        others that no alias points to and no request is using (so the bound may be passed for a while)."""
        limit = self.settings.max_loaded_versions
        mine = [m for m in self._loaded.values() if m.name == new.name]
        if len(mine) <= limit:
            return
        pinned = self._pinned()
        spare = sorted((m for m in mine if m is not new and (m.name, m.version) not in pinned and not m.batcher.busy),
                       key=lambda m: m.last_used)
        for m in spare[:len(mine) - limit]:
            await self._drop(m, f"to hold at most {limit} versions of {m.name} (TANDEM_MAX_LOADED_VERSIONS)")

    async def _drop(self, model: LoadedModel, why: str) -> None:
        key = (model.name, model.version)
        if self._loaded.get(key) is not model:
            return
        del self._loaded[key]
        for k in [k for k, r in self._refs.items() if (k[0], r.version) == key]:
            del self._refs[k]
        self.metrics.loaded.labels(model.name, str(model.version)).set(0)
        await model.batcher.close()
        log.info("unloaded %s %s", model.label, why)

    def _load_and_warm(self, resolved: Resolved) -> LoadedModel:
        model = LoadedModel(resolved, self.settings, self.metrics)
        model.warm_up(self.settings.warmup_runs, (1, self.settings.max_batch_size))
        return model

    async def unload(self, name: str) -> list[LoadedModel]:
        """Drop every loaded version of model ``name`` (its split's tails too) from this worker, the
        versions its aliases serve included: requests still queued for them get a 503 to retry, and the
        next request for the model loads the version it asks for again. What was dropped."""
        dropped = [m for m in self._loaded.values() if m.model_name == name]
        for m in dropped:
            await self._drop(m, "on request")
        return dropped

    def loaded(self, name: str | None = None) -> list[LoadedModel]:
        """The versions of ``name`` (None: of every model) loaded now, by name and version."""
        return sorted((m for (n, _), m in self._loaded.items() if name is None or n == name),
                      key=lambda m: (m.name, m.version))

    # --- start-up, alias watching, shutdown -------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.registry.generation)  # fails start-up at once if the registry is down
        self.last_poll_ok = time.monotonic()
        if self.settings.preload:
            for info in await asyncio.to_thread(self.registry.models):
                if not info.versions:
                    continue
                try:
                    await self.get(info.name)
                except TandemError as e:
                    log.error("not preloading %s: %s", info.name, e)
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="alias-watcher")

    async def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.alias_poll_s)
            if self._stop.is_set():
                return
            try:
                await self.poll()
            except Exception as e:  # keep watching: the next poll may find the database back
                log.warning("alias watcher: %s", e)

    async def poll(self) -> None:
        """One look at the registry: follow moved aliases, unload idle versions."""
        gen = await asyncio.to_thread(self.registry.generation)
        self.last_poll_ok = time.monotonic()
        # Not only when the generation changed: a request may remember what it resolved before a
        # move only after this watcher has handled that move. refresh() is a no-op when nothing is stale.
        await self.refresh(gen)
        if self.settings.model_idle_s:
            await self._unload_idle()

    async def refresh(self, gen: int) -> None:
        """Re-resolve every reference remembered from before generation ``gen``: an alias or the default
        may have moved, a version asked for by number may have been archived or deleted (then it is
        forgotten, and unloaded unless another reference still serves it)."""
        stale = [k for k, r in self._refs.items() if r.generation < gen]
        for key in stale:
            name, ref = key
            try:
                resolved = await asyncio.to_thread(self._lookup, name, ref)
            except NotFound:
                gone = self._refs.pop(key, None)  # the next request gets the registry's 404
                model = self._loaded.get((name, gone.version)) if gone is not None and isinstance(ref, int) else None
                if model is not None and all((n, r.version) != (name, model.version) for (n, _), r in self._refs.items()):
                    await self._drop(model, "as the registry no longer serves it (archived or deleted)")
                continue
            except Unavailable:
                raise  # retried on the next poll
            current = self._refs.get(key)
            if current is not None and current.version != resolved.version:
                try:
                    await self._load(resolved)  # loaded and warmed before anyone is switched to it
                except TandemError as e:
                    log.error("%s:%s moved to v%d, which cannot be loaded (%s); still serving v%d",
                              name, ref or "default", resolved.version, e, current.version)
                    self._refs[key] = _Resolution(current.version, gen)
                    continue
                log.info("%s:%s now serves v%d (was v%d)", name, ref or "default", resolved.version, current.version)
                self.metrics.swaps.labels(name, str(resolved.version), str(ref or "default")).inc()
            self._refs[key] = _Resolution(resolved.version, gen)

    async def _unload_idle(self) -> None:
        now = time.monotonic()
        in_use = self._pinned()
        for key, model in list(self._loaded.items()):
            if key not in in_use and now - model.last_used > self.settings.model_idle_s and not model.batcher.busy:
                await self._drop(model, f"after {now - model.last_used:.0f} s idle")

    async def close(self) -> None:
        if self._watcher is not None:
            # Let a poll in progress finish rather than cancelling it: cancelling would leave its
            # database call running in a thread, holding a connection of a registry about to close.
            self._stop.set()
            try:
                await asyncio.wait_for(self._watcher, WATCHER_STOP_S)
            except TimeoutError:
                log.warning("alias watcher did not stop within %s s; cancelled", WATCHER_STOP_S)
        self._closed = True
        # Loads still running finish into a closed pool; _load_new closes what they bring.
        while self._loaded:
            _, model = self._loaded.popitem()
            await model.batcher.close()
