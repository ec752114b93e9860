"""The device's model store: atomic installs, rollback, deletion, keys at rest, and processes
killed (SIGKILL) at every step of an install."""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tandem.device import ModelStore, ModelUpdater
from tandem.device.faults import ENV, STEPS
from tandem.device.identity import Identity, Registration
from tandem.device.keystore import KeyStore
from tandem.device.model_store import StoredFile
from tandem.errors import ChecksumError, NotFound, ServerUnreachable
from tandem.security.apikeys import new_device_token
from tandem.security.signing import SigningKey
from tests.unit.ota_versions import API_KEY, MODEL, Version, make_version

REPO = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"  # nothing listens there: these tests run offline
TRUSTED = [SigningKey.generate().public]


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict[int, Version]:
    tmp = tmp_path_factory.mktemp("versions")
    return {v: make_version(tmp, v, seed=v) for v in (1, 2, 3)}


def install(store: ModelStore, v: Version) -> None:
    store.install(v.record, v.blobs, KeyStore(store.root, API_KEY), v.key)


def updater(root: Path, **kw) -> ModelUpdater:
    return ModelUpdater(NOWHERE, API_KEY, MODEL, trusted_keys=TRUSTED, store_dir=root, timeout=2, **kw)


def outputs(model_bytes: bytes) -> np.ndarray:
    x = np.random.default_rng(0).integers(0, 256, (2, 100, 75, 3), dtype=np.uint8)
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(["probabilities"], {"pixels": x})[0]


def assert_runs(root: Path, versions: dict[int, Version], expect: int) -> None:
    """The store opens offline into a working model, and it is exactly version ``expect``."""
    with updater(root) as u:
        loaded = u.load()
        assert loaded.version == expect
        x = np.random.default_rng(0).integers(0, 256, (2, 100, 75, 3), dtype=np.uint8)
        np.testing.assert_array_equal(loaded.model.run(x)["probabilities"], outputs(versions[expect].model))
        assert loaded.manifest.name == MODEL and u.load_failures == 0


def test_install_keeps_the_previous_version_and_rollback_switches_back(tmp_path, versions):
    store = ModelStore(tmp_path)
    install(store, versions[1])
    install(store, versions[2])
    p = store.current(MODEL)
    assert (p.version, p.previous, p.sequence) == (2, 1, 20)
    assert store.versions(MODEL) == [1, 2]
    assert_runs(tmp_path, versions, 2)
    with updater(tmp_path) as u:
        assert [(i.version, i.current, i.previous) for i in u.installed()] == [(1, False, True), (2, True, False)]
        assert u.rollback() == 1
    assert_runs(tmp_path, versions, 1)
    install(store, versions[3])  # leaving 1: it becomes the previous one, 2 goes
    p = store.current(MODEL)
    assert (p.version, p.previous) == (3, 1) and store.versions(MODEL) == [1, 3]
    assert store.last_sequence(MODEL) == 30


def test_reinstalling_a_kept_version_only_moves_the_pointer(tmp_path, versions):
    store = ModelStore(tmp_path)
    install(store, versions[1])
    install(store, versions[2])
    before = (store.version_dir(MODEL, 1) / "model.onnx.tde").stat().st_ino
    install(store, versions[1])  # a server rollback to the kept version
    assert (store.version_dir(MODEL, 1) / "model.onnx.tde").stat().st_ino == before
    assert store.current(MODEL).version == 1 and store.current(MODEL).previous == 2


def test_delete_falls_back_to_the_previous_and_all_keeps_the_replay_guard(tmp_path, versions):
    store = ModelStore(tmp_path)
    install(store, versions[1])
    install(store, versions[2])
    with updater(tmp_path) as u:
        u.delete(2)
        assert [(i.version, i.current) for i in u.installed()] == [(1, True)]
        assert_runs(tmp_path, versions, 1)
        u.delete("all")
        assert u.installed() == [] and u.installed_version() is None
        with pytest.raises(NotFound, match="no version of faces is installed"):
            u.load()
        with pytest.raises(NotFound, match="not installed"):
            u.delete(7)
    assert store.last_sequence(MODEL) == 20  # a replayed older manifest stays refused after a wipe
    assert json.loads((tmp_path / "keys.json").read_text())["keys"] == {}


def test_a_verified_answer_raises_the_replay_floor_without_an_install(tmp_path, versions):
    """A signed "stay" or a deferred install counts too (docs/ota.md §1): an older answer that has not
    expired yet is refused afterwards, on a device with nothing installed as on one with a version."""
    store = ModelStore(tmp_path)
    store.raise_sequence(MODEL, 12)
    assert store.last_sequence(MODEL) == 12
    install(store, versions[1])  # sequence 10 (an install never lowers the floor)
    assert store.last_sequence(MODEL) == 12
    store.raise_sequence(MODEL, 11)
    assert store.last_sequence(MODEL) == 12
    store.raise_sequence(MODEL, 40)
    assert store.last_sequence(MODEL) == 40 == ModelStore(tmp_path).last_sequence(MODEL)


def test_bytes_that_do_not_match_their_record_are_not_installed(tmp_path, versions):
    store = ModelStore(tmp_path)
    install(store, versions[1])
    v2 = versions[2]
    with pytest.raises(ChecksumError, match="do not match their record"):
        store.install(v2.record, {**v2.blobs, "model.onnx.tde": v2.blobs["model.onnx.tde"][:-1] + b"\0"})
    bad = StoredFile("0" * 64, 1, "../escape", False, "0" * 64, 1)
    record = v2.record.__class__(**{**v2.record.__dict__, "files": {**v2.record.files, "../escape": bad}})
    with pytest.raises(ChecksumError, match="not a plain relative name"):
        store.install(record, {**v2.blobs, "../escape": b"x"})
    assert store.versions(MODEL) == [1] and store.current(MODEL).version == 1


def test_a_damaged_current_version_opens_the_previous_and_counts_a_failure(tmp_path, versions):
    store = ModelStore(tmp_path)
    install(store, versions[1])
    install(store, versions[2])
    blob = store.version_dir(MODEL, 2) / "model.onnx.tde"
    blob.write_bytes(blob.read_bytes()[:-10])
    with updater(tmp_path) as u:
        assert u.load().version == 1
        assert u.load_failures == 1
        u.rollback()
        u.delete(2)
        assert u.load().version == 1


def test_damaged_names_the_files_that_no_longer_match(tmp_path, versions):
    store = ModelStore(tmp_path)
    install(store, versions[1])
    assert store.damaged(MODEL, 1) == []
    folder = store.version_dir(MODEL, 1)
    blob = folder / "model.onnx.tde"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0x80  # one bit: the size is right, the sha256 is not
    blob.write_bytes(bytes(data))
    assert store.damaged(MODEL, 1) == ["model.onnx"]
    blob.unlink()
    assert store.damaged(MODEL, 1) == ["model.onnx"]
    with pytest.raises(ChecksumError, match="is missing"):
        store.read(MODEL, 1, "model.onnx")
    (folder / "version.json").write_text("{")
    assert store.damaged(MODEL, 1) == ["version.json"]


def test_models_and_keys_are_encrypted_at_rest(tmp_path, versions):
    store = ModelStore(tmp_path)
    install(store, versions[1])
    v1 = versions[1]
    stored = (store.version_dir(MODEL, 1) / "model.onnx.tde").read_bytes()
    tail = v1.model[-4096:-2048]  # weights of the last initializers
    assert tail not in stored and not (store.version_dir(MODEL, 1) / "model.onnx").exists()
    keys = (tmp_path / "keys.json").read_bytes()
    assert v1.key not in keys and base64.b64encode(v1.key) not in keys
    assert KeyStore(tmp_path, API_KEY).get(MODEL, 1) == v1.key
    assert KeyStore(tmp_path, "tdm_another_key").get(MODEL, 1) is None
    # Keys in memory only: opening the model needs the server to hand the key out again.
    (tmp_path / "keys.json").unlink()
    with updater(tmp_path, keep_keys=False) as u, pytest.raises(ServerUnreachable, match="data key for faces v1"):
        u.load()


def test_the_registration_is_kept_wrapped_and_bound_to_its_server(tmp_path):
    token, parsed = new_device_token()
    Identity(tmp_path, "https://models.example/", API_KEY).save(Registration(parsed.key_id, token))
    assert Identity(tmp_path, "https://models.example", API_KEY).load() == Registration(parsed.key_id, token)
    text = (tmp_path / "device.json").read_text()
    assert parsed.key_id in text and parsed.secret not in text and token not in text
    assert Identity(tmp_path, "https://other.example", API_KEY).load() is None  # another server: register there
    assert Identity(tmp_path, "https://models.example", "tdm_another_key").load() is None  # another app key
    (tmp_path / "device.json").write_text('{"device_id": "' + "a" * 32 + '"}')  # a self-chosen id from before
    assert Identity(tmp_path, "https://models.example", API_KEY).load() is None
    with updater(tmp_path) as u, pytest.raises(ServerUnreachable, match="device registration: cannot reach"):
        u.device_id  # noqa: B018 - registering needs the server


def _install_in_a_child(root: Path, v: Version, tmp: Path, step: str | None) -> subprocess.CompletedProcess:
    spec = tmp / f"install-v{v.record.version}.pickle"
    spec.write_bytes(pickle.dumps((v.record, v.blobs, v.key)))
    code = (
        "import pickle, sys\n"
        "from tandem.device.keystore import KeyStore\n"
        "from tandem.device.model_store import ModelStore\n"
        "from tests.unit.ota_versions import API_KEY\n"
        "record, blobs, key = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "store = ModelStore(sys.argv[2])\n"
        "store.install(record, blobs, KeyStore(store.root, API_KEY), key)\n"
    )
    env = {k: val for k, val in os.environ.items() if k != ENV}
    if step is not None:
        env[ENV] = step
    return subprocess.run([sys.executable, "-c", code, str(spec), str(root)], cwd=REPO, env=env,
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("step", [s for s in STEPS if s not in ("download", "delta")])  # the store's own steps
def test_a_process_killed_at_any_install_step_leaves_a_whole_model(tmp_path, versions, step):
    root = tmp_path / "store"
    store = ModelStore(root)
    install(store, versions[1])
    install(store, versions[2])  # current 2, previous 1: installing 3 also removes 1 (step cleanup)

    proc = _install_in_a_child(root, versions[3], tmp_path, step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    moved = STEPS.index(step) >= STEPS.index("pointed")
    assert_runs(root, versions, 3 if moved else 2)

    # What the killed install left behind is cleared, and installing again completes.
    proc = _install_in_a_child(root, versions[3], tmp_path, None)
    assert proc.returncode == 0, proc.stderr
    assert_runs(root, versions, 3)
    assert store.versions(MODEL) == [2, 3]
    assert [p.name for p in (root / MODEL / "versions").iterdir() if p.name.startswith(".")] == []
    assert set(json.loads((root / "keys.json").read_text())["keys"]) == {f"{MODEL}/2", f"{MODEL}/3"}


def test_the_device_sdk_needs_neither_torch_nor_onnx():
    code = "import sys, tandem.device, tandem.delta; print('torch' in sys.modules, 'onnx' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert proc.stdout.split() == ["False", "False"]
