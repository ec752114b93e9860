"""A real Ray cluster of two nodes: a head and one more node, each its own `ray start` process tree
with its own address, CPU (pinned to a core of its own), session folder and TANDEM_HOME, as on two
machines (tandem.testing.ray_nodes). Everything the nodes share goes through the network: the
registry on PostgreSQL, artifacts (and Ray Train's checkpoints) in an S3 bucket, rate limits in
Redis, training data through Ray's object store. Nothing a node needs is in another's folder.

- `tandem train --workers 2 --address HEAD` trains with one worker on each node.
- `tandem serve --ray --replicas 2 --address HEAD` puts a replica on each node, each loading the
  bundle from the bucket into its own node's home; they answer as plain `tandem serve` does, to the
  bit. Then the second node is lost (SIGKILL to every process it runs) while clients keep sending:
  HAProxy retries on the surviving replica, and almost nothing fails.

The cluster is started once for the file (about 25 s on 2 busy cores); the training runs first,
since the serving test ends by killing a node.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tandem.bundle import Bundle
from tandem.bundle.preprocess import decode_image, to_input
from tandem.settings import RaySettings
from tandem.testing.bundles import make_bundle
from tandem.testing.processes import free_port, until
from tandem.testing.ray_nodes import RayNodes, ray_nodes
from tandem.testing.served import serve
from tests.conftest import make_folder_dataset
from tests.integration.cli import tandem
from tests.integration.registry_backends import postgres_schema
from tests.integration.server.serving import populate, running, test_settings
from tests.integration.server.test_limits import REDIS_URL, redis_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.ray]

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]
REPLICA = "ServeReplica:tandem:TandemServer"
TRAIN_WORKER = "RayTrainWorker"
CLIENTS = 4  # concurrent clients while the node is killed


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> Iterator[RayNodes]:
    from tandem.server.ray_serve import haproxy_env

    token = secrets.token_hex(3)
    bases: list[Path] = []

    def node_env(name: str) -> dict[str, str]:
        # Each node: its own Tandem home (caches), and its own HAProxy files and ports, as `ray start` on a
        # machine of its own would be given (docs/scale.md, "Deployment").
        bases.append(Path("/tmp") / f"thap-{token}-{name}")
        return {"TANDEM_HOME": str(tmp_path_factory.mktemp(f"home-{name}")),
                **haproxy_env(RaySettings(), drain_s=1.0, base=bases[-1])}

    try:
        with ray_nodes(workers=1, node_env=node_env) as cluster:
            yield cluster
    finally:
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)


def test_two_workers_train_across_two_nodes_with_checkpoints_in_a_bucket(nodes, s3, tmp_path, lfw_people):
    faces = make_folder_dataset(tmp_path / "faces", lfw_people, PEOPLE[:3], 8)
    bucket = s3.new_bucket()
    env = {**nodes.client_env, **s3.env(bucket), "TANDEM_HOME": str(tmp_path / "driver-home"),
           # Ray Train's checkpoints go to the bucket: the worker of rank 0 may be on either node.
           "TANDEM_RAY_STORAGE": f"s3://{bucket}/ray-train", "TANDEM_RAY_ADDRESS": ""}
    proc = tandem("train", "--data", faces, "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "8",
                  "--stem-stride", "2", "--val-fraction", "0.25", "--seed", "0", "--workers", "2",
                  "--address", nodes.address, env=env)
    assert "epoch 1/1: loss" in proc.stdout, proc.stdout
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1] and history[0]["workers"] == 2
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "best.pt").exists()
    assert not (tmp_path / "run" / "ray").exists()  # the checkpoints went to the bucket, not the run folder
    # One worker on each node (each node has one CPU, each worker reserves one).
    assert nodes.placement(TRAIN_WORKER, state=None) == {"head": 1, "node1": 1}


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory, lfw_people) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundles")
    faces = make_folder_dataset(root / "faces", lfw_people, PEOPLE, 5)
    return make_bundle(root / "v1", faces, seed=1), make_bundle(root / "v2", faces, seed=2)


def infer_body(photo: Path, bundle: Path) -> tuple[bytes, dict[str, str]]:
    pixels = to_input(decode_image(photo), Bundle.load(bundle).manifest.preprocessing)[None]
    head = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape),
                                   "parameters": {"binary_data_size": pixels.nbytes}}]}).encode()
    return head + np.ascontiguousarray(pixels).tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def test_replicas_on_two_nodes_answer_as_plain_serving_and_losing_a_node_loses_almost_nothing(
        nodes, s3, tmp_path, two_bundles, lfw_people):
    redis_or_skip()
    bucket = s3.new_bucket()
    with postgres_schema() as url:
        settings = test_settings(tmp_path / "driver-home", database_url=url, redis_url=REDIS_URL,
                                 rate_limit_burst=1_000_000, rate_limit_per_s=1_000_000.0, **s3.settings(bucket))
        keys = populate(settings, list(two_bundles), production=1)
        env = {"TANDEM_HOME": str(settings.home), "TANDEM_DATABASE_URL": url, "TANDEM_REDIS_URL": REDIS_URL,
               **s3.env(bucket), "TANDEM_ACCESS_LOG": "0", "TANDEM_RATE_LIMIT_BURST": "1000000",
               "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RAY_ADDRESS": "",
               # Both nodes share this machine's ports: one ingress, on the head. One replica per node.
               "TANDEM_RAY_PROXY_LOCATION": "HeadOnly", "TANDEM_RAY_MAX_REPLICAS_PER_NODE": "1"}
        # --host 0.0.0.0: each replica's own server listens where the ingress does, and HAProxy reaches the
        # replica of node1 at that node's address.
        served = serve("--ray", "--replicas", "2", "--address", nodes.address, "--host", "0.0.0.0",
                       env={**os.environ, **nodes.client_env, **env},
                       port=free_port(), timeout_s=240)
        try:
            # Ready answers once a replica serves; wait for both (each loads the models on its own).
            until(lambda: nodes.serve_replicas("tandem", "TandemServer").get("RUNNING") == 2, "both replicas running",
                  120, 0.5)
            # ... and in HAProxy's list, passing its health checks (Serve tells it of a new replica in its own time).
            until(lambda: len(nodes.haproxy_replicas()) == 2, "HAProxy to send to both replicas", 60, 0.25)
            assert nodes.placement(REPLICA) == {"head": 1, "node1": 1}
            # The ingress is HAProxy, on the head only (HeadOnly), as the nodes' environment asked.
            assert [n.name for n in nodes.nodes if any(b"haproxy" in _cmdline(p) for p in n.pids())] == ["head"]
            homes = {n.name: Path(n.env["TANDEM_HOME"]) for n in nodes.nodes}
            # Each replica built the bundle from the bucket into its own node's home; the driver's has none.
            for name in ("head", "node1"):
                assert (homes[name] / "bundles" / "faces" / "1").is_dir(), name
                assert any((homes[name] / "cache" / "objects").rglob("*")), name
            assert not (settings.home / "bundles").exists()

            photos = [sorted((lfw_people / p).glob("*.jpg"))[-1] for p in PEOPLE]
            bodies = [infer_body(p, two_bundles[0]) for p in photos]
            auth = {"authorization": f"Bearer {keys.predict}"}
            with running(settings) as plain, httpx.Client(headers=auth, timeout=30) as http:
                want = [http.post(f"{plain.url}/v2/models/faces/infer", content=b, headers=h).content for b, h in bodies]
                before = nodes.haproxy_replicas()
                got = [http.post(f"{served.url}/v2/models/faces/infer", content=b, headers=h).content
                       for _ in range(4) for b, h in bodies]
            assert got == want * 4
            # HAProxy sent some of those 16 to each replica (its stats: requests per server, both UP).
            sent = nodes.haproxy_replicas()
            assert len(sent) == 2 and all(sent[k] > before.get(k, 0) for k in sent), (before, sent)

            failed, total, recovered_s = _kill_node_under_load(nodes, served.url, bodies[0], auth)
            print(f"\nnode1 killed under load: {len(failed)} of {total} requests failed {failed}; "
                  f"every request succeeded again {recovered_s:.2f} s after the kill")
            assert total >= 200
            assert len(failed) < 0.01 * total, failed
        finally:
            out, _ = served.stop(grace_s=60)
        assert served.proc.returncode == 0, out


def _kill_node_under_load(nodes: RayNodes, url: str, body: tuple[bytes, dict[str, str]],
                          auth: dict[str, str]) -> tuple[list[tuple[float, int]], int, float]:
    """CLIENTS clients in a closed loop; node1 is killed 1.5 s in; they go on until Ray has declared its
    replica dead (its node missed its health checks: ~15 s) and Serve has rewritten HAProxy's list, then 2 s
    more. (failures as (sent - kill, status), requests, seconds from the kill to the answer of the last
    failed request.)"""
    log: list[tuple[float, float, int]] = []  # (sent, answered, status; 0: no HTTP answer)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=30) as c:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    status = c.post("/v2/models/faces/infer", content=body[0], headers=body[1]).status_code
                except httpx.TransportError:
                    status = 0
                log.append((sent, time.monotonic(), status))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        replica = [p for p in nodes.workers[0].pids() if _cmdline(p).startswith(b"ray::ServeReplica")]
        assert len(replica) == 1, replica
        cpu0 = _cpu_s(replica[0])
        time.sleep(1.5)
        # node1's replica was serving its share when it was lost (HAProxy spreads requests over both).
        assert _cpu_s(replica[0]) - cpu0 > 0.05
        killed_at = nodes.kill(nodes.workers[0])
        # The survivor only: the lost replica cannot be replaced (the head's one CPU is taken).
        until(lambda: nodes.placement(REPLICA) == {"head": 1}, "Ray to declare node1's replica dead", 90, 0.5)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failed = [(round(s - killed_at, 3), st) for s, _, st in log if st != 200]
    last = max((a for _, a, st in log if st != 200), default=killed_at)
    return failed, len(log), max(0.0, last - killed_at)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return b""


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
