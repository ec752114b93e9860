"""Prometheus metrics of one server: requests, latencies, batches, queues, errors, and its processes.

Labels, the same rule in every metric:
- A metric about a model has both ``model`` (its registry name) and ``version`` (the version number,
  "3"), never one "name:version" label. An alias or a model's default is resolved first, so
  ``version`` is the version that served (``tandem_alias_swaps`` counts an alias's moves). On a request
  that concerns no model (health, /metrics, an OTA download) or failed before its model was found (an
  unknown name's 404, a refused key) both are "": a name no one has pushed never becomes a label.
  ``version`` alone is "" where no version of the model is concerned (an OTA check answered "no release
  for this device": the version the device claims to run is its word, not a label).
- ``error`` is the name of the TandemError class (tandem/errors.py) an error answer stands for: the
  one raised, or for an answer no exception made (no such route, a refusal at the in-flight budget) the
  class of its status (tandem.protocol.status). The root, ``TandemError``, is an unexpected exception:
  a bug, whose traceback is in the server log.

Each app gets its own CollectorRegistry, so several apps (tests, or two in one process) never
clash. With several uvicorn workers, `tandem serve` sets PROMETHEUS_MULTIPROC_DIR before the
workers start; every worker then writes its values to files there and /metrics, whichever worker
answers, adds them all up (prometheus_client's multiprocess mode), with each live worker's process
metrics labelled by its ``pid`` (server/workers.py). Gauges say how workers combine: a queue depth
adds up (``livesum``), a model counts as loaded if any worker has it (``livemax``); ``live``: a dead
worker's values are dropped.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from tandem.errors import TandemError
from tandem.protocol.status import error_for
from tandem.server.workers import WorkerProcesses, register_worker

# Latency buckets from 1 ms: a batch-1 call of the face model takes 3-5 ms on two cores.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def error_kind(status: int) -> str:
    """The ``error`` label of an error answer (``status`` ≥ 400) that no exception of ours made: the
    TandemError class of its status; a 500 then is an exception that escaped every handler (the root's)."""
    return TandemError.__name__ if status == 500 else type(error_for(status, "")).__name__


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tandem_requests", "HTTP requests answered, by route, model, version and status "
                                "(model and version \"\" when the request concerned no model).",
                                ["route", "model", "version", "status"], registry=r)
        self.latency = Histogram("tandem_request_duration_seconds", "Time from request to response, by route, "
                                 "model and version.", ["route", "model", "version"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.errors = Counter("tandem_errors", "Requests answered with an error, by route and error: the name of "
                              "the TandemError class the answer stands for (NotFound, InvalidRequest, RateLimited, "
                              "...; TandemError itself: an unexpected exception, see the server log).",
                              ["route", "error"], registry=r)
        self.batch_size = Histogram("tandem_batch_size", "Rows per ONNX Runtime call, by model and version.",
                                    ["model", "version"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("tandem_batch_requests", "Requests per ONNX Runtime call.",
                                        ["model", "version"], buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("tandem_inference_duration_seconds", "Time of one ONNX Runtime call.",
                                   ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_cpu = Counter("tandem_inference_cpu_seconds", "CPU time of the ONNX Runtime calls, by model "
                                     "and version: the CPU of the thread that made each call, from its start to its "
                                     "end (not the wall time, which includes waiting for a core; ONNX Runtime's own "
                                     "pool threads, of a session with more than one intra-op thread, are not "
                                     "counted). The server's CPU less this is what serving the calls cost.",
                                     ["model", "version"], registry=r)
        self.lone_calls = Counter("tandem_lone_calls", "ONNX Runtime calls of a lone request (its model otherwise "
                                  "idle) on the session with every core's threads.", ["model", "version"], registry=r)
        self.queue_depth = Gauge("tandem_queue_depth", "Requests waiting for their model's next batch.",
                                 ["model", "version"], registry=r, multiprocess_mode="livesum")
        self.loaded = Gauge("tandem_model_loaded", "1 for each loaded model version.", ["model", "version"],
                            registry=r, multiprocess_mode="livemax")
        self.swaps = Counter("tandem_alias_swaps", "Aliases switched to a newly loaded version, by model, the "
                             "version switched to, and alias (default: the model's default version).",
                             ["model", "version", "alias"], registry=r)
        self.auth_failures = Counter("tandem_auth_failures", "Failed API-key checks, by reason: missing_key, "
                                     "invalid_request, invalid_token (unknown or revoked), expired_token (a key past "
                                     "its expiry, tandem keys create --expires), insufficient_scope, and blocked "
                                     "(refused unchecked: the address failed too often).", ["reason"], registry=r)
        self.rate_limit_errors = Counter("tandem_rate_limit_backend_errors", "Rate-limit checks that failed "
                                         "(Redis unreachable); such requests are let through.", registry=r)
        # Over-the-air delivery (server/ota/).
        self.ota_checks = Counter("tandem_ota_checks", "OTA checks answered, by model, version and outcome: "
                                  "install or rollback (version: the one offered), current (up to date: the one "
                                  "the device has), none (no release for the device; version \"\").",
                                  ["model", "version", "outcome"], registry=r)
        self.ota_deltas_offered = Counter("tandem_ota_deltas_offered", "Delta patches offered in signed payloads, "
                                          "by model and the version they lead to.", ["model", "version"], registry=r)
        self.ota_downloads = Counter("tandem_ota_downloads", "OTA download answers, by object kind (manifest, file, "
                                     "delta) and status (200, 206, 304, 416).", ["kind", "status"], registry=r)
        self.ota_bytes = Counter("tandem_ota_bytes_served", "Bytes of OTA objects sent, by object kind.", ["kind"],
                                 registry=r)
        self.ota_mirrored = Counter("tandem_ota_mirrored", "OTA objects a signed payload sent to storage or a CDN "
                                    "(TANDEM_OTA_DOWNLOADS) besides this server's route, by object kind and mode "
                                    "(presigned, cdn).", ["kind", "mode"], registry=r)
        self.ota_reports = Counter("tandem_ota_reports", "Device health reports accepted, by model, version and "
                                   "whether they saw a load failure or inference error.", ["model", "version", "failed"],
                                   registry=r)
        self.ota_gate_trips = Counter("tandem_ota_health_gate_trips", "Releases the health gate halted and rolled "
                                      "back, by model and the release's version.", ["model", "version"], registry=r)
        self.overload = Counter("tandem_overload_refusals", "Requests turned away at a budget, by budget: in_flight "
                                "(TANDEM_MAX_IN_FLIGHT, TANDEM_MAX_IN_FLIGHT_OTA), decode (TANDEM_DECODE_THREADS/_QUEUE); "
                                "a model queue's are tandem_shed_requests.", ["budget"], registry=r)
        self.shed = Counter("tandem_shed_requests", "Requests a model's batcher answered 503 instead of running late "
                            "(TANDEM_MAX_QUEUE_MS), by model, version and reason: queue_timeout (it waited in the "
                            "queue past the budget), expected_wait (refused on arrival: the queue ahead would take "
                            "longer).", ["model", "version", "reason"], registry=r)

        folder = multiprocess_dir()
        if folder:
            register_worker(folder)
            # Collectors run in the order registered: the workers' first, as it removes a dead worker's
            # gauges before MultiProcessCollector reads the files. Every worker's values come from those;
            # nothing registered with self.registry is read.
            self._exposed = CollectorRegistry()
            self._exposed.register(WorkerProcesses(folder))
            MultiProcessCollector(self._exposed, folder)
        else:
            self._exposed = r
            r.register(WorkerProcesses(None))

    def observer(self, model: str, version: int) -> BatchStats:
        return BatchStats(self, model, str(version))

    def exposition(self) -> bytes:
        return generate_latest(self._exposed)


class BatchStats:
    """What one model's batcher reports (see batching.BatchObserver)."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._size = metrics.batch_size.labels(model, version)
        self._requests = metrics.batch_requests.labels(model, version)
        self._seconds = metrics.inference.labels(model, version)
        self._cpu = metrics.inference_cpu.labels(model, version)
        self._depth = metrics.queue_depth.labels(model, version)
        self._shed = metrics.shed
        self._labels = (model, version)

    def batch(self, rows: int, requests: int, seconds: float, cpu_seconds: float) -> None:
        self._size.observe(rows)
        self._requests.observe(requests)
        self._seconds.observe(seconds)
        self._cpu.inc(cpu_seconds)

    def queue(self, depth: int) -> None:
        self._depth.set(depth)

    def shed(self, reason: str) -> None:
        self._shed.labels(*self._labels, reason).inc()
