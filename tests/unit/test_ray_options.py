"""The Ray options' own rules, without starting Ray: replicas or autoscaling, the HAProxy ingress's
environment, and flags that only mean something with --workers / --ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.cli.main import app
from tandem.errors import ConfigError
from tandem.server import ray_serve
from tandem.server.ray_serve import Scaling, haproxy_env, replica_settings
from tandem.settings import Settings
from tandem.training.distributed import RayOptions
from tandem.training.run import TrainConfig


def test_replicas_or_autoscaling():
    assert Scaling.parse(None, None).options() == {"num_replicas": 1}
    assert Scaling.parse(3, None).options() == {"num_replicas": 3}
    auto = Scaling.parse(None, "1, 4, 8")
    assert auto.most == 4 and auto.options() == {"autoscaling_config": {
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8.0, "initial_replicas": 1}}
    for bad in ("1,4", "a,b,c", "4,1,8", "0,0,8", "1,2,0"):
        with pytest.raises(ConfigError, match="--autoscale"):
            Scaling.parse(None, bad)
    with pytest.raises(ConfigError, match="not both"):
        Scaling.parse(2, "1,4,8")


def test_replicas_share_this_machines_cores_like_uvicorn_workers():
    s = Settings(home=Path("/nonexistent"))
    assert replica_settings(s, Scaling(2), local=True).workers == min(2, replica_settings(s, Scaling(64), True).workers)
    assert replica_settings(s, Scaling(8), local=False) is s


def test_each_haproxy_ingress_gets_its_own_files_and_ports():
    s = Settings(home=Path("/nonexistent"))
    env = haproxy_env(s, drain_s=2.0)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2.0"
    # Ray adds a 64-character folder; HAProxy's admin socket path may not exceed 97 bytes.
    assert len(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]) + 65 <= 97
    ports = {env[k] for k in env if k.endswith("_PORT")}
    assert len(ports) == 4 and "8404" not in ports
    assert haproxy_env(s.model_copy(update={"ray_haproxy": False})) == {}


@pytest.mark.parametrize(("cores", "threads"), [(1, "1"), (2, "1"), (8, "2"), (16, "4"), (64, "16")])
def test_haproxy_gets_a_quarter_of_the_cores_as_threads_and_the_environment_wins(monkeypatch, cores, threads):
    monkeypatch.delenv("RAY_SERVE_HAPROXY_NBTHREAD", raising=False)
    monkeypatch.setattr(ray_serve, "local_cpus", lambda: cores)
    s = Settings(home=Path("/nonexistent"))
    assert haproxy_env(s)["RAY_SERVE_HAPROXY_NBTHREAD"] == threads  # Ray's own default is 4 at any size
    monkeypatch.setenv("RAY_SERVE_HAPROXY_NBTHREAD", "3")
    assert haproxy_env(s)["RAY_SERVE_HAPROXY_NBTHREAD"] == "3"


def test_workers_need_two_images_each_per_batch():
    cfg = TrainConfig(data="-", out=Path("-"), batch_size=6)
    RayOptions(workers=3).validate(cfg)
    with pytest.raises(ConfigError, match="--batch-size 6 is too small for 4 workers"):
        RayOptions(workers=4).validate(cfg)


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--data", "x", "--out", "y", "--address", "auto"], "add --workers N"),
    (["train", "--data", "x", "--out", "y", "--gpus-per-worker", "1"], "add --workers N"),
])
def test_ray_flags_without_workers_are_refused(args, message):
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)


def test_a_replica_keeps_its_caches_in_its_own_nodes_home_but_never_moves_the_registry(tmp_path):
    from pydantic import SecretStr

    from tandem.server.ray_serve import node_local

    shared = Settings(home=tmp_path / "driver", database_url="postgresql+psycopg://db/tandem", artifacts="s3://b/objects")
    assert node_local(shared, None) is shared and node_local(shared, str(tmp_path / "driver")) is shared
    moved = node_local(shared, str(tmp_path / "node"))
    assert moved.home == tmp_path / "node" and moved.registry_url == shared.registry_url
    assert moved.artifacts == "s3://b/objects"
    # A registry under the home (SQLite, objects/) stays the command's: a node's empty folder is not it.
    local = Settings(home=tmp_path / "driver", database_url=None, artifacts=None)
    moved = node_local(local, str(tmp_path / "node"))
    assert moved.home == tmp_path / "node"
    assert moved.registry_url == f"sqlite:///{tmp_path / 'driver' / 'registry.db'}"
    assert moved.artifacts == str(tmp_path / "driver" / "objects")
    assert isinstance(moved.database_url, SecretStr)


def test_serving_on_a_cluster_warns_of_a_registry_only_one_machine_has(tmp_path):
    from tandem.server.ray_serve import cluster_warnings

    assert cluster_warnings(Settings(home=tmp_path, database_url="postgresql+psycopg://db/t", artifacts="s3://b/p")) == []
    problems = cluster_warnings(Settings(home=tmp_path, database_url=None, artifacts=None))
    assert len(problems) == 2 and "TANDEM_DATABASE_URL" in problems[0] and "TANDEM_ARTIFACTS" in problems[1]
    # Behind HAProxy each replica's own server listens on --host: loopback is out of other machines' reach.
    shared = Settings(home=tmp_path, database_url="postgresql+psycopg://db/t", artifacts="s3://b/p")
    assert ["--host 0.0.0.0" in p for p in cluster_warnings(shared, "127.0.0.1")] == [True]
    assert cluster_warnings(shared, "10.0.0.7") == [] and cluster_warnings(shared.model_copy(update={"ray_haproxy": False}),
                                                                           "localhost") == []


def test_ray_trains_checkpoints_go_where_every_node_reaches(tmp_path):
    from tandem.ray_cluster import train_storage
    from tandem.settings import RegistrySettings

    s3 = RegistrySettings(s3_endpoint_url="http://127.0.0.1:9000", s3_region="eu-west-1", s3_access_key_id="k",
                          s3_secret_access_key="s")
    here = train_storage(None, tmp_path / "run" / "ray", "run", s3)
    assert here.path == str(tmp_path / "run" / "ray") and here.filesystem is None
    folder = train_storage("/mnt/shared/ray", tmp_path / "run" / "ray", "run", s3)
    assert folder.path.startswith("/mnt/shared/ray/run-") and folder.filesystem is None
    bucket = train_storage("s3://bucket/ray-train/", tmp_path / "run" / "ray", "run", s3)
    assert bucket.path.startswith("bucket/ray-train/run-") and bucket.filesystem.region == "eu-west-1"
    assert train_storage("s3://bucket/p", tmp_path, "run", s3).path != bucket.path  # a prefix per run
    for bad in ("relative/folder", "s3://"):
        with pytest.raises(ConfigError, match="TANDEM_RAY_STORAGE"):
            train_storage(bad, tmp_path, "run", s3)


def test_the_serve_config_builder_takes_replicas_or_autoscale():
    from tandem.server.ray_serve import app as builder

    with pytest.raises(ConfigError, match="not port"):
        builder({"replicas": 2, "port": 8000})
    with pytest.raises(ConfigError, match="whole number"):
        builder({"replicas": "two"})
    with pytest.raises(ConfigError, match="--autoscale"):
        builder({"autoscale": "1,4"})
