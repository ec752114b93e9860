"""Managed training on the wire (POST /v1/trainings, docs/scale.md): the spec a client sends, the
event lines a training job writes to its log, and the server-sent events a client follows.

- ``TrainingSpec``: what to train and where to push it, from a JSON body or a query string, checked
  for types and ranges (the server checks the model and alias names against the registry's rules).
- Event lines: the job prints ``tandem-event: {"event": KIND, ...}`` lines among its log; the server
  tails the job's log through Ray and turns each into a server-sent event of that kind (every other
  line becomes a ``log`` event). Kinds: ``dataset``, ``start`` (epochs, steps per epoch), ``step``,
  ``epoch``, ``exporting``, ``pushing``, ``pushed`` (name, version, alias), ``failed`` (error); the
  server adds ``status`` (Ray's job status) and ``end`` (the outcome, last).
- SSE framing (text/event-stream), both ways.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from tandem.errors import InvalidRequest, quoted

EVENT_PREFIX = "tandem-event: "
SSE = "text/event-stream"
ID_RE = re.compile(r"^tandem-train-[0-9a-f]{16}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Ray's job statuses (ray.job_submission.JobStatus); the last three are final.
STATUSES = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
TERMINAL = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})
TASKS = ("classify",)
MAX_NAME = 64


def new_training_id() -> str:
    return f"tandem-train-{secrets.token_hex(8)}"


def is_training_id(value: str) -> bool:
    return isinstance(value, str) and bool(ID_RE.fullmatch(value))


@dataclass(frozen=True)
class TrainingSpec:
    """A managed training: a classifier trained as `tandem train --data DIR` would train it, exported (ONNX,
    fp32 and int8) and pushed as the next version of ``name``, with ``alias`` pointed at it in the same
    transaction. ``workers`` > 1 trains under Ray Train on the cluster; ``gpus`` is per worker."""

    name: str
    alias: str | None = None
    task: str = "classify"
    epochs: int = 30
    subset: float = 1.0
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    val_fraction: float = 0.1
    stem_stride: int = 1
    workers: int = 1
    gpus: float = 0.0

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any], ignore: Iterable[str] = ()) -> TrainingSpec:
        """From a parsed JSON object; unknown fields (but ``ignore``) and wrong types are refused."""
        if not isinstance(body, Mapping):
            raise InvalidRequest("the training spec must be a JSON object, e.g. {\"name\": \"faces\", \"epochs\": 5}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(body) - set(known) - set(ignore))
        if unknown:
            raise InvalidRequest(f"unknown training field {quoted(unknown[0])}; known: {', '.join(known)}")
        values = {k: _typed(k, body[k], known[k].type) for k in known if k in body}
        if "name" not in values:
            raise InvalidRequest("the training spec needs a name: the model to push the trained version to")
        spec = cls(**values)
        spec.check()
        return spec

    @classmethod
    def from_query(cls, params: Mapping[str, str], ignore: Iterable[str] = ()) -> TrainingSpec:
        """From a query string (an archive upload's spec): the same fields, as text."""
        body: dict[str, Any] = {}
        known = {f.name: f.type for f in fields(cls)}
        for key, text in params.items():
            kind = known.get(key)
            if kind is None:
                body[key] = text  # refused (or ignored) by from_json
            elif "int" in str(kind):
                body[key] = _number(key, text, int)
            elif "float" in str(kind):
                body[key] = _number(key, text, float)
            else:
                body[key] = text
        return cls.from_json(body, ignore)

    def check(self) -> None:
        problems = []
        if not 1 <= len(self.name) <= MAX_NAME:
            problems.append(f"name must be 1-{MAX_NAME} characters")
        if self.alias is not None and not 1 <= len(self.alias) <= MAX_NAME:
            problems.append(f"alias must be 1-{MAX_NAME} characters")
        if self.task not in TASKS:
            problems.append(f"task {quoted(self.task)}: managed training runs {', '.join(TASKS)} (an image "
                            "classifier over the archive's class folders)")
        ranges: list[tuple[str, float, float, float]] = [
            ("epochs", self.epochs, 1, 10_000), ("batch_size", self.batch_size, 2, 4096),
            ("seed", self.seed, 0, 2**31 - 1), ("val_fraction", self.val_fraction, 0, 0.5),
            ("workers", self.workers, 1, 1024), ("gpus", self.gpus, 0, 64), ("stem_stride", self.stem_stride, 1, 2)]
        for key, value, low, high in ranges:
            if not (math.isfinite(value) and low <= value <= high):
                problems.append(f"{key} must be from {low:g} to {high:g}, got {value!r}")
        if not (math.isfinite(self.subset) and 0 < self.subset <= 1):
            problems.append(f"subset is the fraction of each class to train on: above 0 and at most 1, got {self.subset!r}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            problems.append(f"lr must be above 0 and at most 10, got {self.lr!r}")
        if self.workers > 1 and self.batch_size < 2 * self.workers:
            problems.append(f"batch_size {self.batch_size} is too small for {self.workers} workers: each needs at "
                            f"least 2 photos of every batch, so use {2 * self.workers} or more")
        if problems:
            raise InvalidRequest("bad training spec: " + "; ".join(problems))


def _number(key: str, text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise InvalidRequest(f"training field {key}={quoted(text, 40)} is not a{'n integer' if kind is int else ' number'}"
                             ) from None


def _typed(key: str, value: Any, kind: Any) -> Any:
    text = str(kind)
    if value is None and "None" in text:
        return None
    if "int" in text and not isinstance(value, bool) and isinstance(value, int):
        return value
    if "float" in text and not isinstance(value, bool) and isinstance(value, int | float):
        return float(value)
    if "str" in text and isinstance(value, str):
        return value
    want = "an integer" if "int" in text else "a number" if "float" in text else "a string"
    raise InvalidRequest(f"training field {key} must be {want}, got {quoted(value, 40)}")


# --- the job's event lines ---------------------------------------------------------------------


def event_line(kind: str, **data: Any) -> str:
    """One line of the job's log that the server turns into a server-sent event of ``kind``."""
    return EVENT_PREFIX + json.dumps({"event": kind, **data}, separators=(",", ":"), allow_nan=False, default=str)


def parse_event(line: str) -> tuple[str, dict[str, Any]] | None:
    """(kind, data) of an event line; None for any other line of the log (or a damaged event)."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        data = json.loads(line[len(EVENT_PREFIX):])
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    kind = data.pop("event")
    return kind, data


# --- server-sent events ------------------------------------------------------------------------


def sse_frame(kind: str, data: Mapping[str, Any], event_id: int | None = None) -> bytes:
    """One server-sent event: ``id`` (what a reconnecting client sends back as Last-Event-ID), ``event``, ``data``."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(event, data, id) from the lines of a text/event-stream (comments and unparsable data skipped)."""
    kind, event_id = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                try:
                    parsed = json.loads("\n".join(data))
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    yield kind, parsed, event_id
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field_name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field_name == "event":
            kind = value
        elif field_name == "data":
            data.append(value)
        elif field_name == "id":
            event_id = value
