"""`tandem serve` end to end: two worker processes sharing one rate limit through Redis, with their
metrics added up and each one's process metrics, driven by tritonclient."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tandem.registry.registry import Registry
from tandem.testing.processes import until
from tandem.testing.served import serve
from tests.integration.server.serving import Bearer, populate, test_settings
from tests.integration.server.test_limits import REDIS_URL, redis_or_skip

pytestmark = pytest.mark.integration


def test_serve_with_two_workers_shares_the_rate_limit_and_the_metrics(tmp_path, bundles):
    redis_or_skip()
    settings = test_settings(tmp_path / "home")
    keys = populate(settings, list(bundles))
    env = {**os.environ, "TANDEM_HOME": str(settings.home), "TANDEM_REDIS_URL": REDIS_URL,
           "TANDEM_RATE_LIMIT_BURST": "3", "TANDEM_RATE_LIMIT_PER_S": "0.01", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_DATABASE_URL": "", "TANDEM_MAX_BATCH_SIZE": "16", "TANDEM_MAX_DELAY_MS": "3"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = serve("--workers", "2", "--max-batch-size", "4", env=env, timeout_s=90)
    url = server.url
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        client.register_plugin(Bearer(keys.predict))
        try:
            pixels = np.zeros((2, 100, 75, 3), np.uint8)
            inp = triton.InferInput("pixels", list(pixels.shape), "UINT8")
            inp.set_data_from_numpy(pixels)
            assert client.infer("faces", [inp]).as_numpy("probabilities").shape == (2, 4)
        finally:
            client.close()

        with Registry.open(settings) as reg:
            limited = reg.create_key("predict", "limited")[0]
            readers = [reg.create_key("predict", f"config {i}")[0] for i in range(6)]  # a bucket each
        # Whichever worker answers has the option (over the environment's 16) and the environment's other
        # settings: the Settings object the command built travels to the workers.
        for key in readers:
            config = httpx.get(f"{url}/v2/models/faces/config", headers={"authorization": f"Bearer {key}"})
            assert config.status_code == 200, config.text
            assert config.json()["max_batch_size"] == 4
            assert config.json()["dynamic_batching"] == {"max_queue_delay_microseconds": 3000}
        # A new connection per request, so that both workers take some of them.
        codes = [httpx.get(f"{url}/v2/models/faces", headers={"authorization": f"Bearer {limited}"}).status_code
                 for _ in range(8)]
        assert sorted(codes) == [200] * 3 + [429] * 5

        def metrics() -> str:
            return httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {keys.admin}"}).text

        # The server answers once one worker is up; on a busy machine the other may still be starting.
        folder = until(lambda: _multiproc_folder(server.proc.pid), "the metrics folder of the server's workers")
        until(lambda: len(list(folder.glob("worker_*.pid"))) == 2, "both workers registered", timeout=60)
        text = metrics()
        # Every worker's counts, added up; the model's name and version apart, and neither on a request
        # refused before its model was looked up.
        assert _count(text, 'model="faces",route="/v2/models/{name}",status="200",version="1"') >= 3
        assert _count(text, 'model="",route="/v2/models/{name}",status="429",version=""') == 5
        assert 'tandem_requests_total{model="faces",route="/v2/models/{name}/infer",status="200",version="1"}' in text

        # Each worker's process metrics, whichever worker answers.
        workers = _process_metrics(text)
        assert len(workers) == 2 and all(_parent(pid) == server.proc.pid for pid in workers), workers
        # A worker that dies: uvicorn starts another; the dead one's series and live gauges go at the next
        # scrape. (Polled in the folder, not /metrics: the admin key's bucket holds 3 requests.)
        dead = min(workers)
        assert Path(_environ(dead)["PROMETHEUS_MULTIPROC_DIR"]) == folder  # the one the command made
        os.kill(dead, signal.SIGKILL)

        def replaced() -> set[int] | None:
            registered = {int(m.name[7:-4]) for m in folder.glob("worker_*.pid")} - {dead}
            return registered if len(registered) == 2 else None

        registered = until(replaced, "a new worker in place of the killed one", timeout=60)
        text = metrics()
        assert _process_metrics(text) == registered
        assert not list(folder.glob(f"gauge_live*_{dead}.db")) and not (folder / f"worker_{dead}.pid").exists()
        assert 'tandem_model_loaded{model="faces",version="1"} 1.0' in text
    finally:
        server.stop()
    assert not folder.exists()  # the command's own folder, removed when it stops


def _count(text: str, labels: str) -> float:
    found = re.search(rf"^tandem_requests_total\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def _process_metrics(text: str) -> set[int]:
    """The pids /metrics gives process metrics for (each with its CPU, memory and open files)."""
    pids = [set(map(int, re.findall(rf'^{name}\{{pid="(\d+)"\}} ', text, re.M)))
            for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds")]
    assert pids[0] == pids[1] == pids[2], pids
    return pids[0]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])


def _multiproc_folder(pid: int) -> Path | None:
    """The multiprocess metrics folder the command at ``pid`` made for its workers, once one has started."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            folder = _environ(int(child)).get("PROMETHEUS_MULTIPROC_DIR")
        except OSError:  # a child that has just ended
            continue
        if folder:
            return Path(folder)
    return None


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)
