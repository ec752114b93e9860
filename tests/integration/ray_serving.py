"""One local Ray cluster for the whole test session (2 CPUs, loopback), Ray Serve's proxy on a free
port, and the Tandem app deployed on it with given settings: `Running`, like serving.running()."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tandem.ray_cluster import collect_ray_leftovers
from tandem.server.app import create_app
from tandem.settings import Settings
from tandem.testing.processes import free_port
from tests.integration.server.serving import Running

TEMP_DIR = "/tmp/tandem-ray-tests"
REPLICA_PREFIX = "SERVE_REPLICA::tandem#TandemServer#"


@dataclass(frozen=True)
class Cluster:
    address: str  # what `--address` takes to join it from another process
    url: str  # Ray Serve's proxy


@contextlib.contextmanager
def local_cluster() -> Iterator[Cluster]:
    ray = pytest.importorskip("ray", reason="the Ray tests need tandem[ray]")
    from tandem.server.ray_serve import haproxy_env
    from tandem.settings import Settings

    # As `tandem serve --ray` starts its own instance: Ray Serve behind HAProxy (set before Ray Serve
    # is imported here or in any process of the cluster).
    ingress = haproxy_env(Settings(), drain_s=1.0)
    os.environ.update(ingress)
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=TEMP_DIR, logging_level=logging.WARNING,
             log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield Cluster(ray.get_runtime_context().gcs_address, f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
        ray.shutdown()
        collect_ray_leftovers()
        shutil.rmtree(ingress["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)


@contextlib.contextmanager
def deployed(cluster: Cluster, settings: Settings, replicas: int = 2) -> Iterator[Running]:
    """The app on Ray Serve with ``settings``; ``Running.app`` is an unstarted twin, for its routes."""
    from tandem.server.ray_serve import Scaling, deploy, undeploy

    port = int(cluster.url.rsplit(":", 1)[1])
    deploy(settings, Scaling(replicas), "127.0.0.1", port)
    try:
        yield Running(cluster.url, create_app(settings), settings)
    finally:
        undeploy()


def ray_settings(settings: Settings) -> Settings:
    # Replicas reserve no CPU, so a deployment never keeps the 2-CPU cluster from a training test.
    return settings.model_copy(update={"ray_replica_cpus": 0.0})


def replica_pids() -> dict[str, int]:
    """Replica name → process id of every running replica of the app."""
    import ray

    pids = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(REPLICA_PREFIX):
            with contextlib.suppress(ray.exceptions.RayActorError, ValueError):
                handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                pids[actor["name"]] = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=10)
    return pids


def kill_replica() -> tuple[str, int]:
    """SIGKILL one replica's process, as the OOM killer or a lost node would."""
    name, pid = sorted(replica_pids().items())[0]
    os.kill(pid, signal.SIGKILL)
    return name, pid


def healthy_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get("tandem")
    if app is None:
        return 0
    dep = app.deployments["TandemServer"]
    return dep.replica_states.get("RUNNING", 0) if dep.status == "HEALTHY" else 0


def wait_for(condition, what: str, timeout: float = 60) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start
