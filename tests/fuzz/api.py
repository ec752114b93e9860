"""API fuzzing with schemathesis: a real server, its own /openapi.json, every phase and check.

``served()`` starts a real uvicorn over a real registry (two versions of a celebmatch-enrolled
model, both released over the air) with a key of every scope. ``fuzz()`` loads the document the
server serves and runs schemathesis's engine over it as one caller (no key, or a key of one scope):
the examples, coverage (boundary values and schema-invalid data), fuzzing and stateful phases
(following the document's links), and every built-in check: no 5xx, status codes, content types,
headers and bodies as documented, schema-invalid data refused, no undocumented method accepted,
no route that takes a request without its key.

Dictionaries steer a share of the generated names towards what the registry holds (the model, its
versions and aliases, the tensor names, the stored OTA objects): the document allows any model
name, but only a known one reaches the code behind the lookup.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from tandem.registry.ota import Ota
from tandem.registry.registry import Registry
from tandem.testing.bundles import make_bundle
from tests.conftest import make_folder_dataset
from tests.integration.server.serving import Keys, Running, populate, running, test_settings

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]
# Callers: none, an API key of each scope, where "device" is a registered device's credential (what the
# OTA routes take) and "fleet" the fleet's device-scope API key (which registers devices).
SCOPES = ("none", "predict", "device", "fleet", "admin")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# A request the document allows can still name a tensor, model, face or byte range that does not
# exist: the schema cannot say which, so those documented refusals count as accepting valid data.
VALID_DATA_STATUSES = ["2XX", "3XX", 400, 401, 403, 404, 413, 415, 416, 422, 429]


@dataclass
class Served:
    server: Running
    keys: Keys
    dictionaries: dict[str, dict[str, list]]

    def key(self, scope: str) -> str | None:
        return {"none": None, "device": self.keys.registered, "fleet": self.keys.device}.get(
            scope, getattr(self.keys, scope, None))


@dataclass
class Outcome:
    """What one run did: requests sent, answers by status, and each failed check with how to reproduce it."""

    scope: str
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def report(self) -> str:
        lines = [f"{len(self.failures)} failed checks, {len(self.errors)} errors as caller {self.scope!r} "
                 f"({self.requests} requests, statuses {dict(sorted(self.statuses.items()))}):"]
        lines += [f"- {op}: {check}: {detail}" for (op, check, _), detail in sorted(self.failures.items())]
        lines += [f"- error: {e}" for e in self.errors]
        return "\n".join(lines)


@contextlib.contextmanager
def served(root: Path, lfw_people: Path) -> Iterator[Served]:
    faces = make_folder_dataset(root / "faces", lfw_people, PEOPLE, 5)
    bundles = [make_bundle(root / "v1", faces, seed=1), make_bundle(root / "v2", faces, seed=2)]
    # Fuzzing sends thousands of requests with one key: no rate limit may answer in the server's place.
    settings = test_settings(root / "home", rate_limit_per_s=1_000_000, rate_limit_burst=1_000_000,
                             device_rate_limit_per_s=1_000_000, device_rate_limit_burst=1_000_000,
                             per_device_rate_limit_per_s=1_000_000, per_device_rate_limit_burst=1_000_000,
                             device_enrol_per_s=1_000_000, device_enrol_burst=1_000_000,
                             ota_report_interval_s=1e-6)
    keys = populate(settings, bundles)
    with Registry.open(settings) as reg:
        ota = Ota(reg, settings)
        for version in (1, 2):  # v2 after v1: the release of v2 stores a delta from v1
            ota.releases.release("faces", version, "production")
        objects = ota.snapshot().objects
    shas = sorted({o.sha256 for o in objects} | {o.plain_sha256 for o in objects}
                  | {o.from_sha256 for o in objects if o.from_sha256})
    dictionaries = {
        "models": {"values": ["faces", "faces.tail.3", "missing"]},
        "refs": {"values": ["1", "2", "3", "production", "latest", "beta"]},
        "labels": {"values": ["production", "latest", "beta"]},
        "tensors": {"values": ["pixels", "probabilities", "embedding"]},
        "objects": {"values": shas},
        "ranges": {"values": ["bytes=0-", "bytes=10-20", "bytes=-5", "bytes=999999999-", "bytes=5-1",
                              "bytes=0-1,2-3"]},
    }
    with running(settings) as server:
        yield Served(server, keys, dictionaries)


def _config(served_: Served, scope: str, examples: int, seed: int | None, phases: tuple[str, ...]) -> SchemathesisConfig:
    often = lambda dictionary: {"dictionary": dictionary, "probability": 0.6}
    data: dict = {
        "workers": 1,
        "generation": {"max-examples": examples, "deterministic": seed is not None},
        "phases": {phase: {"enabled": phase in phases} for phase in PHASES},
        "request-timeout": 30,
        "dictionaries": served_.dictionaries,
        "parameters": {
            "path.name": often("models"), "path.model": often("models"), "path.version": often("refs"),
            "path.label": often("labels"), "path.sha256": often("objects"), "path.from_sha256": often("objects"),
            "path.to_sha256": often("objects"), "header.Range": often("ranges"), "header.If-Range": often("objects"),
            "body.model": often("models"), "body.inputs[*].name": often("tensors"),
        },
        "checks": {"positive_data_acceptance": {"expected-statuses": VALID_DATA_STATUSES}},
    }
    if seed is not None:
        data["seed"] = seed
    key = served_.key(scope)
    if key is not None:
        data["auth"] = {"openapi": {"bearer": {"bearer": key}}}
    return SchemathesisConfig.from_dict(data)


def fuzz(served_: Served, scope: str, examples: int, seed: int | None = 0, phases: tuple[str, ...] = PHASES) -> Outcome:
    """Run ``phases`` as caller ``scope``. ``seed``: a fixed seed and deterministic generation (the
    same requests on every run); None: fresh random inputs."""
    config = _config(served_, scope, examples, seed, phases)
    url = served_.server.url
    # The document itself needs a predict key (or admin) to read, whatever key the run uses.
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config,
                                           headers={"authorization": f"Bearer {served_.keys.admin}"})
    outcome = Outcome(scope)
    t0 = time.perf_counter()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _count(outcome, event.recorder)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            outcome.errors.append(str(getattr(event, "value", None) or getattr(event, "exception", event))[:500])
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _count(outcome: Outcome, recorder) -> None:  # type: ignore[no-untyped-def]
    for interaction in recorder.interactions.values():
        outcome.requests += 1
        if interaction.response is not None:
            outcome.statuses[interaction.response.status_code] += 1
    for checks in recorder.checks.values():
        for check in checks:
            info = check.failure_info
            if info is None:
                continue
            key = (recorder.label, check.name, info.failure.title)
            if key not in outcome.failures:
                message = " ".join(info.failure.message.split())[:400]
                outcome.failures[key] = f"{info.failure.title}: {message}\n    {info.code_sample[:600]}"
