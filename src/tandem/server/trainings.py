"""Managed training, a training service of your own (docs/scale.md): a client uploads a dataset and a
spec, the server checks and stores the archive, and a Ray Job on the cluster trains, exports and
pushes the bundle into this server's registry. The data and the model never leave your machines.

Routes (scope ``train``, or ``admin``):

- ``POST /v1/trainings``: the body is the dataset archive (a .zip or .tar of class folders; Content-Type
  application/zip, application/x-tar, application/gzip or application/octet-stream) and the spec is the
  query string (``?name=faces&alias=production&epochs=5``); or the body is JSON ``{"dataset": SHA256,
  ...spec}`` naming an archive already in the artifact store. The spec is checked first, then the
  archive (data/archive.py: the rules of `.tandem` archives, then class folders of photos): anything
  wrong is a 400 (413 past the size limit) before anything is stored or any job starts. The archive
  is stored by its sha256 (an upload of the same bytes stores nothing new), and a Ray Job is
  submitted: 202 with the training's id.
- ``GET /v1/trainings/{id}``: its status, epochs, the version it pushed or why it failed, as JSON; with
  ``Accept: text/event-stream``, the same as server-sent events while it runs (status, steps, epochs,
  log lines), ending with ``end``. Event ids count the job's log lines: a client that reconnects with
  Last-Event-ID gets what followed.
- ``DELETE /v1/trainings/{id}``: stop it (Ray stops the job: SIGTERM, then SIGKILL). A push in flight is
  one registry transaction: the version (and its alias) appear whole or not at all.

Where status and metrics come from: Ray's job status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)
and the job's own log, which Ray keeps and serves (``tail_job_logs``): the job prints
``tandem-event: {...}`` lines (protocol/training.py) among its other output. So nothing but Ray and
the registry holds a training's state: any server worker, or a restarted server, follows any job.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import shlex
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tandem.bundle import NAME_RE
from tandem.data.archive import Limits, inspect_dataset
from tandem.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TandemError,
    UnsupportedMediaType,
    quoted,
    without_paths,
)
from tandem.protocol.training import (
    SHA256_RE,
    SSE,
    TERMINAL,
    TrainingSpec,
    is_training_id,
    new_training_id,
    parse_event,
    sse_frame,
)
from tandem.ray_jobs import JobState, RayJobs
from tandem.registry.artifacts import ArtifactStore
from tandem.registry.registry import check_alias_name
from tandem.server.body import read_body
from tandem.server.endpoint import Call, endpoint
from tandem.server.responses import json_response
from tandem.settings import RaySettings, RegistrySettings, ServerSettings

ARCHIVE_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-tar", "application/gzip",
                 "application/x-gtar", "application/x-gzip", "application/octet-stream")
JSON = "application/json"
MAX_JSON = 64 * 1024
log = logging.getLogger(__name__)
POLL_S = 1.0  # how often a stream asks Ray for the job's status
KEEPALIVE_S = 15.0
LOG_TAIL = 20  # log lines kept to say why a job failed without saying so itself
METADATA_KIND = "tandem-training"
JOB_COMMAND = "run-training-job"


def _off() -> NotFound:
    # 404, not 503: nothing is down, this server simply offers no training (as if the routes were not there).
    return NotFound("managed training is off on this server: set TANDEM_RAY_JOBS_ADDRESS to the Ray cluster's "
                    "dashboard (http://HEAD:8265) and restart it (docs/scale.md)")


def check_target(spec: TrainingSpec) -> None:
    """The model and alias names as the registry takes them, before anything is read or stored."""
    if not NAME_RE.fullmatch(spec.name):
        raise InvalidRequest(f"model name {quoted(spec.name)} is not one: names are 1-64 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit")
    if spec.alias is not None:
        check_alias_name(spec.alias)


def job_env(registry: RegistrySettings) -> dict[str, str]:
    """What a job needs to push into this server's registry: its home, database and artifact store. Ray keeps
    a job's environment with the job (its dashboard shows it): whoever may submit jobs to the cluster can run
    code on it anyway, and so is trusted with these."""
    env = {"TANDEM_HOME": str(registry.home)}
    if registry.database_url is not None and registry.database_url.get_secret_value():
        env["TANDEM_DATABASE_URL"] = registry.database_url.get_secret_value()
    for var, value in (("TANDEM_ARTIFACTS", registry.artifacts), ("TANDEM_S3_ENDPOINT_URL", registry.s3_endpoint_url),
                       ("TANDEM_S3_REGION", registry.s3_region), ("TANDEM_S3_ACCESS_KEY_ID", registry.s3_access_key_id)):
        if value:
            env[var] = value
    if registry.s3_secret_access_key is not None and registry.s3_secret_access_key.get_secret_value():
        env["TANDEM_S3_SECRET_ACCESS_KEY"] = registry.s3_secret_access_key.get_secret_value()
    return env


def entrypoint(python: str, training_id: str, dataset: str, spec: TrainingSpec, limits: Limits) -> str:
    """The job's shell command: Tandem's own job command, on the cluster's Python."""
    return " ".join([shlex.quote(python), "-m", "tandem", JOB_COMMAND, "--id", training_id, "--dataset", dataset,
                     "--spec", shlex.quote(json.dumps(spec.to_json(), separators=(",", ":"))),
                     "--max-bytes", str(limits.max_bytes), "--max-entries", str(limits.max_entries)])


@dataclass
class Outcome:
    """What a job's log says so far: its events, folded."""

    dataset: dict[str, Any] | None = None
    start: dict[str, Any] | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    step: dict[str, Any] | None = None
    phase: str | None = None  # exporting, pushing, pushed
    pushed: dict[str, Any] | None = None
    error: str | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL))

    def see(self, line: str) -> tuple[str, dict[str, Any]]:
        """Fold one log line in; the server-sent event it makes."""
        event = parse_event(line)
        if event is None:
            if line.strip():
                self.tail.append(line)
            return "log", {"line": line}
        kind, data = event
        if kind == "dataset":
            self.dataset = data
        elif kind == "start":
            self.start = data
        elif kind == "step":
            self.step = data
        elif kind == "epoch":
            self.epochs.append(data)
        elif kind in ("exporting", "pushing"):
            self.phase = kind
        elif kind == "pushed":
            self.pushed, self.phase = data, "pushed"
        elif kind == "failed":
            self.error = str(data.get("error", ""))
        return kind, data

    def why(self, state: JobState) -> str | None:
        if self.error:
            return self.error
        if state.status == "FAILED":
            last = "; ".join(list(self.tail)[-5:]) or (state.message.splitlines() or [""])[0]
            return f"the training job failed without saying why; its last output: {last[-2000:]}"
        return None


class Trainings:
    """A server worker's side of managed training: the cluster's job API, the store, the limits."""

    def __init__(self, server: ServerSettings, ray: RaySettings, registry: RegistrySettings, store: ArtifactStore,
                 hidden: dict[str, Path]) -> None:
        token = ray.ray_jobs_token.get_secret_value() if ray.ray_jobs_token is not None else None
        self.jobs = RayJobs(ray.ray_jobs_address, token or None) if ray.ray_jobs_address else None
        self.python = ray.ray_jobs_python
        self.limits = Limits(server.training_max_dataset_bytes, server.training_max_dataset_entries)
        self.upload_timeout_s = server.training_upload_timeout_s
        self.registry = registry
        self.store = store
        self.uploads = registry.home / "uploads"
        self.hidden = hidden

    def on(self) -> RayJobs:
        if self.jobs is None:
            raise _off()
        return self.jobs

    def shown(self, text: str) -> str:
        return without_paths(text, self.hidden)

    # --- submitting ---------------------------------------------------------------------------------

    async def upload(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The body, streamed to a file under the Tandem home while hashed, checked, stored: (sha256, summary)."""
        limit = self.limits.max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, f" of {int(declared):,} bytes")
        if request.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            raise UnsupportedMediaType("send the dataset archive as it is (no Content-Encoding): a .zip or .tar is "
                                       "compressed already, or gzip the tar itself (application/gzip)")
        await asyncio.to_thread(self.uploads.mkdir, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.uploads, prefix=".upload-", suffix=".tmp")
        tmp = Path(name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    digest.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
            if size == 0:
                raise InvalidRequest("the body is empty: send the dataset archive (a .zip or .tar of class folders)")
            summary = await asyncio.to_thread(inspect_dataset, tmp, self.limits)
            sha = await asyncio.to_thread(self.store.put_file, tmp, digest.hexdigest())
            return sha, summary.to_json()
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def stored(self, sha: str) -> dict[str, Any]:
        """The summary of an archive already in the store, checked again (any stored object may be named)."""
        if not SHA256_RE.fullmatch(sha):
            raise InvalidRequest(f"dataset {quoted(sha)} is not a sha256 (64 lowercase hex digits)")
        if not await asyncio.to_thread(self.store.exists, sha):
            raise NotFound(f"no dataset {sha} in the artifact store: send the archive itself (POST /v1/trainings "
                           "with the archive as the body and the spec in the query string)")
        path = await asyncio.to_thread(self.store.path, sha)
        summary = await asyncio.to_thread(inspect_dataset, path, self.limits)
        return summary.to_json()

    async def submit(self, spec: TrainingSpec, sha: str, dataset: dict[str, Any]) -> dict[str, Any]:
        jobs = self.on()
        training_id = new_training_id()
        metadata = {"kind": METADATA_KIND, "name": spec.name, "alias": spec.alias or "", "dataset": sha,
                    "spec": json.dumps(spec.to_json(), separators=(",", ":"))}
        plain = spec.workers == 1  # the entrypoint trains itself; else Ray Train's workers reserve their own
        await asyncio.to_thread(jobs.submit, training_id, entrypoint(self.python, training_id, sha, spec, self.limits),
                                job_env(self.registry), metadata, 1.0 if plain else 0.0, spec.gpus if plain else 0.0)
        return {"id": training_id, "status": "PENDING", "name": spec.name, "alias": spec.alias, "dataset": sha,
                "summary": dataset, "spec": spec.to_json(), "url": f"/v1/trainings/{training_id}"}

    # --- following ----------------------------------------------------------------------------------

    async def state(self, training_id: str) -> JobState:
        if self.jobs is None or not is_training_id(training_id):
            off = "" if self.jobs is not None else " (managed training is off on this server: TANDEM_RAY_JOBS_ADDRESS is unset)"
            raise NotFound(f"no training {quoted(training_id)}{off}")
        state = await asyncio.to_thread(self.jobs.state, training_id)
        if state is None or state.metadata.get("kind") != METADATA_KIND:
            raise NotFound(f"no training {quoted(training_id)} on the Ray cluster (a cluster forgets its jobs when "
                           "it restarts)")
        return state

    def summary(self, state: JobState, outcome: Outcome) -> dict[str, Any]:
        spec = json.loads(state.metadata.get("spec", "{}"))
        out: dict[str, Any] = {
            "id": state.job_id, "status": state.status, "name": state.metadata.get("name"),
            "alias": state.metadata.get("alias") or None, "dataset": state.metadata.get("dataset"), "spec": spec,
            "started": _iso(state.start_ms), "ended": _iso(state.end_ms), "phase": outcome.phase,
            "epochs": [e.get("row", {}) for e in outcome.epochs],  # history.json's rows, as they came
            "version": outcome.pushed.get("version") if outcome.pushed else None,
        }
        if outcome.start is not None:
            out["steps_per_epoch"] = outcome.start.get("steps_per_epoch")
        if outcome.step is not None and state.status not in TERMINAL:
            out["step"] = outcome.step
        why = outcome.why(state)
        if why:
            out["error"] = self.shown(why)
        return out

    async def snapshot(self, training_id: str) -> dict[str, Any]:
        state = await self.state(training_id)
        text = await asyncio.to_thread(self.on().logs, training_id)
        outcome = Outcome()
        for line in text.splitlines():
            outcome.see(line)
        return self.summary(state, outcome)

    async def stream(self, training_id: str, after: int) -> AsyncIterator[bytes]:
        """Server-sent events until the job has ended and its log is read: ``status`` on each change, one event per
        log line (id: its line number; those up to ``after`` are skipped), ``end`` last."""
        state = await self.state(training_id)
        jobs = self.on()
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        async def tail() -> None:
            buffered = ""
            try:
                async for chunk in jobs.tail(training_id):
                    buffered += chunk
                    *lines, buffered = buffered.split("\n")
                    for line in lines:
                        await queue.put(("line", line))
                if buffered:
                    await queue.put(("line", buffered))
                await queue.put(("end", ""))
            except Exception as e:  # the websocket broke (aiohttp's own errors too): the log is read whole at the end
                log.debug("tailing the log of %s: %s", training_id, e)
                await queue.put(("lost", str(e)))

        task = asyncio.create_task(tail())
        outcome, seen, status = Outcome(), 0, None
        tail_done = tail_lost = False
        polled = sent = time.monotonic()
        try:
            while True:
                if state.status != status:
                    status = state.status
                    yield sse_frame("status", {"status": status, "message": self.shown(state.message)})
                    sent = time.monotonic()
                if tail_done and state.status in TERMINAL:
                    if tail_lost:  # the log stream broke off: read what is left of the log whole
                        lines = (await asyncio.to_thread(jobs.logs, training_id)).splitlines()
                        for line in lines[seen:]:
                            seen += 1
                            kind, data = outcome.see(line)
                            if seen > after:
                                yield sse_frame(kind, data, seen)
                    yield sse_frame("end", self.summary(state, outcome))
                    return
                try:
                    what, line = await asyncio.wait_for(queue.get(), timeout=POLL_S)
                except TimeoutError:
                    what, line = "idle", ""
                if what == "line":
                    seen += 1
                    kind, data = outcome.see(line)
                    if seen > after:
                        yield sse_frame(kind, data, seen)
                        sent = time.monotonic()
                elif what in ("end", "lost"):
                    tail_done, tail_lost = True, what == "lost"
                now = time.monotonic()
                if now - polled >= POLL_S or tail_done:
                    polled = now
                    try:
                        state = await self.state(training_id)
                    except TandemError as e:  # Ray is gone: say so; a client may reconnect with Last-Event-ID
                        yield sse_frame("lost", {"error": self.shown(str(e))})
                        return
                    if tail_done and state.status not in TERMINAL:
                        await asyncio.sleep(POLL_S)
                if now - sent >= KEEPALIVE_S:
                    yield b": keepalive\n\n"
                    sent = now
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def cancel(self, training_id: str) -> dict[str, Any]:
        state = await self.state(training_id)
        if state.status in TERMINAL:
            raise Conflict(f"training {training_id} has ended ({state.status}): there is nothing to stop")
        await asyncio.to_thread(self.on().stop, training_id)
        return {"id": training_id, "status": state.status, "stopping": True}


def _too_large(limit: int, got: str = "") -> PayloadTooLarge:
    return PayloadTooLarge(f"the dataset archive{got} exceeds this server's limit of {limit:,} bytes "
                           "(TANDEM_TRAINING_MAX_DATASET_BYTES): train on a --subset, or raise the limit")


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _trainings(request: Request) -> Trainings:
    trainings: Trainings = request.app.state.services.trainings
    return trainings


async def create(request: Request, call: Call) -> Response:
    trainings = _trainings(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == JSON:
        body = await read_body(request, MAX_JSON)
        try:
            parsed = json.loads(body)
        except ValueError as e:
            raise InvalidRequest(f"the body is not JSON ({e}); send {{\"dataset\": SHA256, \"name\": ...}}, or the "
                                 "archive itself with the spec in the query string") from None
        spec = TrainingSpec.from_json(parsed, ignore=("dataset",))
        check_target(spec)
        trainings.on()
        sha = parsed.get("dataset")
        if not isinstance(sha, str):
            raise InvalidRequest("name the stored dataset archive as \"dataset\": its sha256, or send the archive "
                                 "itself as the body with the spec in the query string")
        dataset = await trainings.stored(sha)
    elif ctype in ARCHIVE_TYPES:
        spec = TrainingSpec.from_query(request.query_params)
        check_target(spec)
        trainings.on()
        sha, dataset = await trainings.upload(request)
    else:
        raise UnsupportedMediaType(f"Content-Type {quoted(ctype) if ctype else 'missing'}: send the dataset archive "
                                   "as application/zip or application/x-tar (the spec in the query string), or JSON "
                                   "naming a stored one ({\"dataset\": SHA256, \"name\": ...})")
    return json_response(await trainings.submit(spec, sha, dataset), 202)


def _wants_events(request: Request) -> bool:
    return SSE in request.headers.get("accept", "").lower()


async def show(request: Request, call: Call) -> Response:
    trainings = _trainings(request)
    training_id = request.path_params["id"]
    if not _wants_events(request):
        return json_response(await trainings.snapshot(training_id))
    last = request.headers.get("last-event-id", "").strip()
    after = int(last) if last.isascii() and last.isdigit() and len(last) < 10 else 0
    await trainings.state(training_id)  # a 404 or 503 now, as an answer, not inside the stream
    return StreamingResponse(trainings.stream(training_id, after), media_type=SSE,
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def cancel(request: Request, call: Call) -> Response:
    return json_response(await _trainings(request).cancel(request.path_params["id"]), 202)


async def route(request: Request, call: Call) -> Response:
    return await (show if request.method in ("GET", "HEAD") else cancel)(request, call)


def routes(settings: ServerSettings) -> list[Route]:
    upload_timeout = settings.training_upload_timeout_s
    return [
        Route("/v1/trainings", endpoint("/v1/trainings", "train", create, timeout=lambda _r: upload_timeout),
              methods=["POST"]),
        Route("/v1/trainings/{id}", endpoint("/v1/trainings/{id}", "train", route), methods=["GET", "DELETE"]),
    ]
