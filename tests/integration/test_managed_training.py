"""Managed training end to end: a real Ray head (`ray start --head`, its own process session, its own
ports), a real `tandem serve` with TANDEM_RAY_JOBS_ADDRESS, and `tandem train --remote` packing a few
LFW people, uploading them, following the Ray Job with the progress bar to the version it pushed, which
the registry then holds. Then a training stopped halfway (DELETE), and one whose push meets a full
artifact store: each says why, and neither leaves a version behind."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tandem.protocol.training import SSE, sse_events
from tandem.registry.registry import Registry
from tandem.settings import Settings
from tandem.testing.ray_nodes import RayNodes, ray_nodes
from tandem.testing.served import Served, serve
from tests.conftest import make_folder_dataset
from tests.faults.harness import tmpfs
from tests.integration.cli import tandem

pytestmark = [pytest.mark.integration, pytest.mark.ray]

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"]
VENV_BIN = Path(sys.executable).parent
TINY = ["--epochs", "1", "--batch-size", "8", "--stem-stride", "2", "--val-fraction", "0.2"]


@pytest.fixture(scope="module")
def head() -> Iterator[RayNodes]:
    """A Ray head alone (2 CPUs, not pinned), its dashboard serving Ray Jobs; its jobs' `python` is this venv's,
    as for a user who started it with the venv activated."""
    with ray_nodes(0, head_cpus=2, pin=False, env={"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}) as h:
        yield h


@dataclass
class Service:
    served: Served
    env: dict[str, str]
    key: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.served.url, headers={"authorization": f"Bearer {self.key}"}, timeout=60)


@contextlib.contextmanager
def service(head: RayNodes, home: Path, **extra: str) -> Iterator[Service]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update({"TANDEM_HOME": str(home), "TANDEM_RAY_JOBS_ADDRESS": head.dashboard, "TANDEM_RAY_JOBS_TOKEN": head.token,
                "TANDEM_ACCESS_LOG": "0",
                "TANDEM_PRELOAD": "0", **extra})
    key = json.loads(tandem("keys", "create", "--scope", "train", "--json", env=env).stdout)["key"]
    served = serve(env=env, log=home / "serve.log")
    try:
        yield Service(served, env, key)
    finally:
        served.stop()


def registry_of(svc: Service) -> Registry:
    return Registry.open(Settings(home=Path(svc.env["TANDEM_HOME"]), database_url=None,
                                  artifacts=svc.env.get("TANDEM_ARTIFACTS")).registry)


def events(svc: Service, training_id: str, until_kind: str = "end", timeout_s: float = 300) -> Iterator[tuple[str, dict]]:
    deadline = time.monotonic() + timeout_s
    with svc.client() as c, c.stream("GET", f"/v1/trainings/{training_id}", headers={"accept": SSE},
                                     timeout=httpx.Timeout(60, read=timeout_s)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith(SSE)
        for kind, data, _ in sse_events(r.iter_lines()):
            yield kind, data
            if kind == until_kind or time.monotonic() > deadline:
                return


def test_train_remote_pushes_a_version_through_a_ray_job(head, tmp_path, lfw_people):
    data = make_folder_dataset(tmp_path / "faces", lfw_people, PEOPLE, 8)
    with service(head, tmp_path / "home") as svc:
        proc = tandem("train", "--remote", svc.served.url, "--data", data, "--name", "faces", "--alias", "production",
                      *TINY, env={**svc.env, "TANDEM_API_KEY": svc.key}, timeout=600)
        out = proc.stdout
        # The same bar and epoch lines as a local run, then the version it pushed.
        assert "submitted training tandem-train-" in out and "training on 24 photos in 3 classes" in out, out
        assert "epoch 1/1: loss" in out and "pushed faces version 1 and pointed production at it" in out, out
        training_id = out.split("submitted training ", 1)[1].split()[0]
        with registry_of(svc) as reg:
            v = reg.resolve("faces", "production")
            assert v.version == 1 and reg.get("faces", 1).pushed_by == f"training {training_id}"
            manifest = json.loads((v.bundle_dir / "manifest.json").read_text())
            assert manifest["name"] == "faces" and sorted(manifest["labels"]) == sorted(PEOPLE)
        with svc.client() as c:
            r = c.get(f"/v1/trainings/{training_id}")
            assert r.status_code == 200, r.text
            snapshot = r.json()
            assert snapshot["status"] == "SUCCEEDED" and snapshot["version"] == 1 and len(snapshot["epochs"]) == 1
            assert snapshot["spec"]["epochs"] == 1 and snapshot["alias"] == "production" and "error" not in snapshot
            assert c.delete(f"/v1/trainings/{training_id}").status_code == 409  # it has ended
        # Replayed from its log: a client reconnecting after event 3 gets what followed.
        replay = list(events(svc, training_id))
        assert [k for k, _ in replay][-1] == "end" and replay[-1][1]["version"] == 1
        assert any(k == "pushed" for k, _ in replay) and any(k == "epoch" for k, _ in replay)


def test_a_stopped_training_pushes_nothing(head, tmp_path, lfw_people):
    data = make_folder_dataset(tmp_path / "faces", lfw_people, PEOPLE, 8)
    from tandem.data.archive import pack_dataset

    pack_dataset(data, tmp_path / "faces.zip")
    with service(head, tmp_path / "home") as svc, svc.client() as c:
        r = c.post("/v1/trainings", params={"name": "faces", "epochs": 500, "batch_size": 8, "stem_stride": 2},
                   content=(tmp_path / "faces.zip").read_bytes(), headers={"content-type": "application/zip"})
        assert r.status_code == 202, r.text
        training_id = r.json()["id"]
        assert r.json()["summary"]["images"] == 24
        for kind, _ in events(svc, training_id, until_kind="step"):
            if kind == "step":  # it is training
                break
        r = c.delete(f"/v1/trainings/{training_id}")
        assert r.status_code == 202 and r.json()["stopping"], r.text
        end = [d for k, d in events(svc, training_id) if k == "end"][-1]
        assert end["status"] == "STOPPED" and end["version"] is None
        assert "stopped" in end.get("error", "stopped"), end
        with registry_of(svc) as reg:
            assert reg.models() == []


def test_a_push_into_a_full_store_fails_clearly_and_leaves_no_version(head, tmp_path, lfw_people):
    data = make_folder_dataset(tmp_path / "faces", lfw_people, PEOPLE, 8)
    with tmpfs(tmp_path / "objects", "1m") as objects:  # room for the photos, not for the model
        if objects is None:
            pytest.skip("cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN)")
        with service(head, tmp_path / "home", TANDEM_ARTIFACTS=str(objects)) as svc:
            proc = tandem("train", "--remote", svc.served.url, "--data", data, "--name", "faces", *TINY,
                          env={**svc.env, "TANDEM_API_KEY": svc.key}, ok=False, timeout=600)
            assert proc.returncode != 0
            assert "failed: the artifact store at" in proc.stderr and "is out of space" in proc.stderr, proc.stderr
            with registry_of(svc) as reg:
                assert reg.models() == []  # the version did not appear, not even in part
