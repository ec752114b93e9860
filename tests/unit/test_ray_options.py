"""The Ray options' own rules, without starting Ray: replicas or autoscaling, the HAProxy ingress's
environment, and flags that only mean something with --workers / --ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.cli.main import app
from tandem.errors import ConfigError
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
