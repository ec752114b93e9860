"""Triton's extensions to OIP v2, each through tritonclient as a Triton user calls it: model
configuration, statistics, classification (and, with an admin key, the model repository)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tests.integration.server.serving import Bearer, populate, running, test_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory, bundles):
    settings = test_settings(tmp_path_factory.mktemp("home"), max_batch_size=8, max_delay_ms=2.0)
    keys = populate(settings, list(bundles))
    with running(settings) as server:
        yield server, keys


def _client(server, key: str) -> triton.InferenceServerClient:
    client = triton.InferenceServerClient(server.host_port)
    client.register_plugin(Bearer(key))
    return client


@pytest.fixture(scope="module")
def tc(served):
    server, keys = served
    client = _client(server, keys.predict)
    yield client
    client.close()


@pytest.fixture(scope="module")
def onnx_v1(bundles):
    return OnnxModel.open(Bundle.load(bundles[0]))


@pytest.fixture(scope="module")
def pixels(onnx_v1, photos) -> np.ndarray:
    return onnx_v1.pixels_from_files(photos)


def _input(pixels: np.ndarray, binary: bool = True) -> triton.InferInput:
    inp = triton.InferInput("pixels", list(pixels.shape), "UINT8")
    inp.set_data_from_numpy(pixels, binary_data=binary)
    return inp


def test_server_metadata_declares_the_extensions(tc):
    extensions = tc.get_server_metadata()["extensions"]
    assert {"binary_tensor_data", "classification", "model_configuration", "model_repository",
            "statistics"} <= set(extensions)


def test_model_config_is_tritons(tc):
    config = tc.get_model_config("faces")
    assert config["name"] == "faces" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8  # the server's batcher: dims below leave the batch out
    assert config["input"] == [{"name": "pixels", "data_type": "TYPE_UINT8", "dims": [100, 75, 3]}]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [4]},
                                {"name": "embedding", "data_type": "TYPE_FP32", "dims": [32]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    assert tc.get_model_config("faces", "2")["name"] == "faces"
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        tc.get_model_config("nope")


def _stats_of(tc, version: str) -> dict:
    (entry,) = tc.get_inference_statistics("faces", version)["model_stats"]
    assert entry["name"] == "faces" and entry["version"] == version
    return entry


def test_statistics_count_requests_rows_and_model_calls(tc, pixels):
    before = _stats_of(tc, "2")
    tc.infer("faces", [_input(pixels)], model_version="2")
    tc.infer("faces", [_input(pixels[:1], binary=False)], model_version="2")
    with pytest.raises(InferenceServerException, match="output 'logits' is not an output"):
        tc.infer("faces", [_input(pixels)], model_version="2", outputs=[triton.InferRequestedOutput("logits")])
    after = _stats_of(tc, "2")
    assert after["inference_count"] - before["inference_count"] == len(pixels) + 1
    got, was = after["inference_stats"], before["inference_stats"]
    assert got["success"]["count"] - was["success"]["count"] == 2
    assert got["success"]["ns"] > was["success"]["ns"]
    assert got["fail"]["count"] - was["fail"]["count"] == 1
    # Each success's time, split as Triton splits it; no response cache.
    for part in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert got[part]["count"] - was[part]["count"] == 2, part
    assert got["compute_infer"]["ns"] > was["compute_infer"]["ns"]
    assert got["cache_hit"] == got["cache_miss"] == {"count": 0, "ns": 0}
    # One model call per request here, or fewer when the batcher merged them.
    assert 1 <= after["execution_count"] - before["execution_count"] <= 2
    assert sum(b["compute_infer"]["count"] for b in after["batch_stats"]) == after["execution_count"]
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0

    # Every version of the model this worker holds, and every model of the server.
    assert {e["version"] for e in tc.get_inference_statistics("faces")["model_stats"]} >= {"1", "2"}
    everything = tc.get_inference_statistics()["model_stats"]
    assert ("faces", "2") in {(e["name"], e["version"]) for e in everything}


def test_classification_gives_the_top_k_as_score_index_label(tc, pixels, onnx_v1):
    probabilities = onnx_v1.run(pixels)["probabilities"]
    labels = onnx_v1.labels
    for binary in (True, False):
        out = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
        res = tc.infer("faces", [_input(pixels)], model_version="1", outputs=[out])
        (meta,) = res.get_response()["outputs"]
        assert meta["datatype"] == "BYTES" and meta["shape"] == [len(pixels), 2]
        got = res.as_numpy("probabilities")
        assert got.shape == (len(pixels), 2)
        for row, scores in zip(got, probabilities, strict=True):
            best = np.argsort(-scores, kind="stable")[:2]
            parsed = [s.decode().split(":") if isinstance(s, bytes) else s.split(":") for s in row]
            assert [int(p[1]) for p in parsed] == list(best)
            assert [p[2] for p in parsed] == [labels[i] for i in best]
            assert all(abs(float(p[0]) - scores[i]) <= 1e-5 for p, i in zip(parsed, best, strict=True))


def test_classification_asks_for_more_classes_than_there_are_gets_them_all(tc, pixels):
    out = triton.InferRequestedOutput("probabilities", class_count=10)
    res = tc.infer("faces", [_input(pixels[:1])], outputs=[out])
    assert res.as_numpy("probabilities").shape == (1, 4)


@pytest.mark.parametrize(("params", "text"), [
    ({"classification": 0}, "parameters.classification must be a whole number of classes from 1 up, got 0"),
    ({"classification": "2"}, "got '2'"),
])
def test_a_bad_class_count_is_a_precise_400(served, params, text):
    server, keys = served
    body = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3], "data": [0] * 22500}],
            "outputs": [{"name": "probabilities", "parameters": params}]}
    with server.client(keys.predict) as http:
        r = http.post("/v2/models/faces/infer", json=body)
    assert r.status_code == 400 and text in r.json()["error"]


@pytest.fixture(scope="module")
def admin(served):
    server, keys = served
    client = _client(server, keys.admin)
    yield client
    client.close()


def _index(client) -> dict[str, list[str]]:
    """name → the versions READY in this worker ([] when the model is UNAVAILABLE here)."""
    out: dict[str, list[str]] = {}
    for entry in client.get_model_repository_index():
        versions = out.setdefault(entry["name"], [])
        if entry["state"] == "READY":
            versions.append(entry["version"])
        else:
            assert entry["state"] == "UNAVAILABLE" and "not loaded in this worker" in entry["reason"]
    return out


def test_the_repository_lists_loads_and_unloads_models(served, admin, tc, pixels):
    tc.infer("faces", [_input(pixels[:1])], model_version="2")  # version 2 loaded too, beside production's 1
    assert _index(admin) == {"faces": ["1", "2"]}

    admin.unload_model("faces")
    assert _index(admin) == {"faces": []}
    server, keys = served
    with server.client(keys.admin) as http:  # tritonclient.http does not send Triton's {"ready": true}
        assert http.post("/v2/repository/index", json={"ready": True}).json() == []

    admin.load_model("faces")  # the default version: alias production, v1
    assert _index(admin) == {"faces": ["1"]}
    # A request for another version loads it on demand, as before, and its counts start anew.
    assert tc.get_inference_statistics("faces", "2")["model_stats"][0]["inference_count"] == 0
    assert tc.infer("faces", [_input(pixels[:1])], model_version="2").get_response()["model_version"] == "2"
    assert _index(admin) == {"faces": ["1", "2"]}


def test_repository_calls_need_an_admin_key_and_a_known_model(admin, tc):
    with pytest.raises(InferenceServerException, match="needs a key with scope 'admin'"):
        tc.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="needs a key with scope 'admin'"):
        tc.unload_model("faces")
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        admin.load_model("nope")
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        admin.unload_model("nope")
    with pytest.raises(InferenceServerException, match=r"load takes no parameters .*config.*tandem push"):
        admin.load_model("faces", config='{"max_batch_size": 4}')
