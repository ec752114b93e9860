"""The metrics' label rules (server/prometheus.py) and the workers' process metrics (server/workers.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Receive, Scope, Send

from tandem.errors import TandemError
from tandem.server.endpoint import CALL
from tandem.server.observe import Observe
from tandem.server.prometheus import Metrics, error_kind
from tandem.server.workers import WorkerProcesses, register_worker
from tandem.testing.processes import stop

# A new metric about a model goes here, with a `model` and a `version` label.
ABOUT_A_MODEL = {
    "tandem_requests", "tandem_request_duration_seconds", "tandem_batch_size", "tandem_batch_requests",
    "tandem_inference_duration_seconds", "tandem_inference_cpu_seconds", "tandem_lone_calls", "tandem_queue_depth", "tandem_model_loaded",
    "tandem_alias_swaps", "tandem_ota_checks", "tandem_ota_deltas_offered", "tandem_ota_reports",
    "tandem_ota_health_gate_trips", "tandem_shed_requests",
}
PROCESS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
           "process_open_fds", "process_max_fds", "process_start_time_seconds")


def _labels(metrics: Metrics) -> dict[str, tuple[str, ...]]:
    return {w._name: w._labelnames for w in vars(metrics).values() if isinstance(w, MetricWrapperBase)}


def _error_names() -> set[str]:
    names, todo = set(), [TandemError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


@pytest.fixture
def metrics(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return Metrics()


def test_every_metric_about_a_model_has_a_model_and_a_version_label(metrics):
    labels = _labels(metrics)
    assert {name for name, names in labels.items() if "model" in names} == ABOUT_A_MODEL
    for name in ABOUT_A_MODEL:
        assert "version" in labels[name], name
    assert all("model" in names for names in labels.values() if "version" in names)


def test_requests_are_counted_with_model_and_version_apart_and_errors_by_their_class(metrics):
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        call = scope[CALL]
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("a bug")
        call.route = path
        if path == "/served":
            call.serving("faces", 3)
        status = {"/served": 200, "/refused": 503, "/teapot": 418}.get(path, 404)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def requests() -> None:
        transport = httpx.ASGITransport(Observe(app, metrics, log_requests=False), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://tandem") as client:
            for path in ("/served", "/nowhere", "/refused", "/teapot", "/boom"):
                await client.get(path)

    asyncio.run(requests())

    def count(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert count("tandem_requests_total", route="/served", model="faces", version="3", status="200") == 1
    assert count("tandem_request_duration_seconds_count", route="/served", model="faces", version="3") == 1
    assert count("tandem_requests_total", route="/nowhere", model="", version="", status="404") == 1
    errors = {s.labels["route"]: s.labels["error"] for family in metrics.registry.collect()
              if family.name == "tandem_errors" for s in family.samples if s.name.endswith("_total")}
    assert errors == {"/nowhere": "NotFound", "/refused": "Unavailable", "/teapot": "InvalidRequest",
                      "unmatched": "TandemError"}  # /boom: an exception nothing caught


def test_every_error_status_has_a_tandem_error_class():
    names = _error_names()
    for status in (*range(400, 432), *range(500, 512)):
        assert error_kind(status) in names, status


def test_one_process_has_its_process_metrics(metrics):
    for name in PROCESS:
        assert metrics.registry.get_sample_value(name, {"pid": str(os.getpid())}) is not None, name
    assert f'process_open_fds{{pid="{os.getpid()}"}}' in metrics.exposition().decode()


# A worker as far as metrics go: it registers, and counts 2 queued requests in a live gauge.
WORKER = """
import sys, time
from prometheus_client import Gauge
from tandem.server.workers import register_worker
register_worker(sys.argv[1])
Gauge("queued", "Requests queued.", multiprocess_mode="livesum").set(2)
print("ready", flush=True)
time.sleep(60)
"""


def test_each_live_worker_has_process_metrics_and_a_dead_one_stops_counting(tmp_path):
    folder = str(tmp_path)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, folder], env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline() == "ready\n"
        register_worker(folder)  # this process is not a child of the workers' supervisor: a reused pid
        registry = CollectorRegistry()
        registry.register(WorkerProcesses(folder, supervisor=os.getpid()))  # the workers are this process's
        MultiProcessCollector(registry, folder)
        alive, dead = (str(w.pid) for w in workers)
        for pid in (alive, dead):
            for name in PROCESS:
                assert registry.get_sample_value(name, {"pid": pid}) is not None, (name, pid)
        assert registry.get_sample_value("process_open_fds", {"pid": str(os.getpid())}) is None
        assert registry.get_sample_value("queued") == 4.0

        workers[1].kill()
        os.waitid(os.P_PID, workers[1].pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: what a supervisor sees first
        assert registry.get_sample_value("queued") == 2.0
        assert registry.get_sample_value("process_resident_memory_bytes", {"pid": dead}) is None
        assert registry.get_sample_value("process_resident_memory_bytes", {"pid": alive}) > 0
        assert sorted(os.listdir(folder)) == [f"gauge_livesum_{alive}.db", f"worker_{alive}.pid"]
    finally:
        for w in workers:
            stop(w, signal.SIGKILL, grace_s=5)
