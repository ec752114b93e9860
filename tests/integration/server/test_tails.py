"""Split tails on the real server: model ``NAME.tail.K`` over OIP v2 (httpx and tritonclient, JSON and
binary tensors, fp32 and int8-encoded), following alias moves, pinned by version number, and refused
where a tail makes no sense."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from tandem.bundle import Bundle, tail_name
from tandem.bundle.runtime import OnnxModel, load_session
from tandem.errors import InvalidRequest
from tandem.export.split import split_bundle
from tandem.protocol import activations
from tandem.registry.registry import Registry
from tandem.testing.bundles import make_bundle
from tests.integration.server.serving import Bearer, populate, running, test_settings

pytestmark = pytest.mark.integration
TAIL = tail_name("faces", 5)  # faces.tail.5: the tensor 'pooled', FP32 [-1, 3, 20, 15]


@pytest.fixture(scope="module")
def split_bundles(tmp_path_factory, photos) -> tuple[Path, Path, Path]:
    """v1 and v2 cut at k=5 and 7 (different weights), v3 not cut at all."""
    root = tmp_path_factory.mktemp("split")
    out = []
    for seed, ks in ((1, [5, 7]), (2, [5, 7]), (3, [])):
        b = make_bundle(root / f"v{seed}", None, seed=seed)
        if ks:
            split_bundle(b, ks, OnnxModel.open(Bundle.load(b)).pixels_from_files(photos))
        out.append(b)
    return out[0], out[1], out[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory, split_bundles):
    settings = test_settings(tmp_path_factory.mktemp("home"))
    keys = populate(settings, list(split_bundles))
    with running(settings) as server:
        yield server, keys


@pytest.fixture(scope="module")
def pixels(split_bundles, photos) -> np.ndarray:
    return OnnxModel.open(Bundle.load(split_bundles[0])).pixels_from_files(photos)


def head_and_whole(bundle: Path, pixels: np.ndarray, k: int = 5) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """What the device's head sends for ``pixels``, and the whole model's outputs."""
    b = Bundle.load(bundle)
    head = load_session(b.path(b.manifest.split(k).head))
    (mid,) = head.run(None, {"pixels": pixels})
    return mid, OnnxModel.open(b).run(pixels)


def binary(name: str, arr: np.ndarray, datatype: str, params: dict | None = None, req: dict | None = None):  # type: ignore[no-untyped-def]
    head = {"inputs": [{"name": name, "datatype": datatype, "shape": list(arr.shape),
                        "parameters": {"binary_data_size": arr.nbytes, **(params or {})}}],
            "parameters": {"binary_data_output": True, **(req or {})}}
    raw = json.dumps(head).encode()
    return raw + arr.tobytes(), {"Inference-Header-Content-Length": str(len(raw)),
                                 "Content-Type": "application/octet-stream"}


def outputs_of(resp) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    n = int(resp.headers.get("inference-header-content-length", len(resp.content)))
    header, offset, out = json.loads(resp.content[:n]), n, {}
    for t in header["outputs"]:
        size = t["parameters"]["binary_data_size"] if "parameters" in t else None
        if size is None:
            out[t["name"]] = np.asarray(t["data"], np.float32).reshape(t["shape"])
        else:
            out[t["name"]] = np.frombuffer(resp.content, np.float32, size // 4, offset).reshape(t["shape"])
            offset += size
    return out


def test_tail_metadata_and_readiness(http):
    meta = http.get(f"/v2/models/{TAIL}").json()
    assert meta["name"] == TAIL and meta["versions"] == ["1", "2", "3"]
    assert meta["inputs"] == [{"name": "pooled", "datatype": "FP32", "shape": [-1, 3, 20, 15]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "embedding"]
    assert http.get(f"/v2/models/{TAIL}/ready").json() == {"name": TAIL, "ready": True}
    assert http.get(f"/v2/models/{TAIL}/versions/2/ready").status_code == 200


def test_head_then_tail_equals_the_whole_model_on_lfw(http, split_bundles, pixels):
    mid, whole = head_and_whole(split_bundles[0], pixels)
    body, headers = binary("pooled", mid, "FP32")
    r = http.post(f"/v2/models/{TAIL}/versions/1/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    got = outputs_of(r)
    for name in ("probabilities", "embedding"):
        assert np.abs(got[name] - whole[name]).max() <= 1e-4
    as_json = http.post(f"/v2/models/{TAIL}/versions/1/infer", json={"inputs": [
        {"name": "pooled", "datatype": "FP32", "shape": list(mid.shape), "data": mid.reshape(-1).tolist()}]})
    assert as_json.status_code == 200 and as_json.json()["model_name"] == TAIL
    np.testing.assert_allclose(outputs_of(as_json)["probabilities"], got["probabilities"], atol=1e-6)


def test_int8_encoded_tensor_on_the_input_or_the_request(http, split_bundles, pixels):
    mid, whole = head_and_whole(split_bundles[0], pixels)
    q = activations.quantize(mid)
    tail = load_session(Bundle.load(split_bundles[0]).path("tail_5.onnx"))
    expected = dict(zip(["probabilities", "embedding"], tail.run(None, {"pooled": activations.dequantize(q)}),
                        strict=True))
    quant = {"scale": q.scale, "zero_point": q.zero_point}
    for params, req in ((quant, None), (None, quant)):
        body, headers = binary("pooled", q.values, "UINT8", params, req)
        r = http.post(f"/v2/models/{TAIL}/versions/1/infer", content=body, headers=headers)
        assert r.status_code == 200, r.text
        got = outputs_of(r)
        np.testing.assert_allclose(got["embedding"], expected["embedding"], atol=1e-6)
        assert (got["probabilities"].argmax(1) == whole["probabilities"].argmax(1)).all()
    assert len(body) < mid.nbytes / 3  # a quarter of the fp32 bytes, plus the JSON header


@pytest.mark.parametrize(("params", "error"), [
    (None, "parameters.scale"),
    ({"scale": 0.1}, "parameters.zero_point"),
    ({"scale": -1.0, "zero_point": 3}, "parameters.scale"),
    ({"scale": 0.1, "zero_point": 300}, "parameters.zero_point"),
])
def test_int8_without_valid_parameters_is_refused(http, pixels, split_bundles, params, error):
    q = activations.quantize(head_and_whole(split_bundles[0], pixels[:1])[0])
    body, headers = binary("pooled", q.values, "UINT8", params)
    r = http.post(f"/v2/models/{TAIL}/infer", content=body, headers=headers)
    assert r.status_code == 400 and error in r.json()["error"]


def test_whole_models_take_no_int8_inputs(http, pixels):
    body, headers = binary("pixels", pixels[:1], "FP32", {"scale": 1.0, "zero_point": 0})
    assert http.post("/v2/models/faces/infer", content=body, headers=headers).status_code == 400


def test_tritonclient_fp32_and_int8(served, split_bundles, pixels):
    server, keys = served
    mid, whole = head_and_whole(split_bundles[0], pixels)
    client = triton.InferenceServerClient(server.host_port)
    client.register_plugin(Bearer(keys.predict))
    try:
        inp = triton.InferInput("pooled", list(mid.shape), "FP32")
        inp.set_data_from_numpy(mid, binary_data=True)
        res = client.infer(TAIL, [inp], model_version="1")
        assert np.abs(res.as_numpy("embedding") - whole["embedding"]).max() <= 1e-4
        q = activations.quantize(mid)
        inp8 = triton.InferInput("pooled", list(mid.shape), "UINT8")
        inp8.set_data_from_numpy(q.values, binary_data=True)
        res8 = client.infer(TAIL, [inp8], model_version="1",
                            parameters={"scale": q.scale, "zero_point": q.zero_point})
        assert (res8.as_numpy("probabilities").argmax(1) == whole["probabilities"].argmax(1)).all()
        assert client.get_model_metadata(TAIL)["inputs"][0]["name"] == "pooled"
    finally:
        client.close()


def test_alias_moves_carry_the_tail_and_numbers_pin_it(served, http, split_bundles, pixels):
    server, _ = served
    mid, _ = head_and_whole(split_bundles[0], pixels)
    body, headers = binary("pooled", mid, "FP32")

    def served_version(path: str) -> str:
        r = http.post(path, content=body, headers=headers)
        assert r.status_code == 200, r.text
        n = int(r.headers["inference-header-content-length"])
        return json.loads(r.content[:n])["model_version"]

    assert served_version(f"/v2/models/{TAIL}/infer") == "1"  # production → v1
    v1 = outputs_of(http.post(f"/v2/models/{TAIL}/infer", content=body, headers=headers))
    with Registry.open(server.settings) as reg:
        reg.set_alias("faces", "production", 2)
    deadline = time.monotonic() + 30
    while served_version(f"/v2/models/{TAIL}/infer") != "2":  # the alias watcher's next poll
        assert time.monotonic() < deadline, "the tail did not follow the alias"
        time.sleep(0.1)
    assert served_version(f"/v2/models/{TAIL}/versions/production/infer") == "2"
    v2 = outputs_of(http.post(f"/v2/models/{TAIL}/infer", content=body, headers=headers))
    assert not np.allclose(v1["embedding"], v2["embedding"])  # v2's own tail, not v1's
    assert served_version(f"/v2/models/{TAIL}/versions/1/infer") == "1"  # a device with v1's head pins v1
    with Registry.open(server.settings) as reg:
        reg.set_alias("faces", "production", 3)  # v3 has no splits: its tail does not exist
    deadline = time.monotonic() + 30
    while http.post(f"/v2/models/{TAIL}/infer", content=body, headers=headers).status_code != 404:
        assert time.monotonic() < deadline, "the tail of a version without splits was still served"
        time.sleep(0.1)
    r = http.post(f"/v2/models/{TAIL}/infer", content=body, headers=headers)
    assert "no split at k=5" in r.json()["error"]
    assert served_version(f"/v2/models/{TAIL}/versions/2/infer") == "2"
    with Registry.open(server.settings) as reg:
        reg.set_alias("faces", "production", 1)


def test_tails_that_do_not_exist_or_routes_that_do_not_serve_them(http, pixels):
    r = http.get(f"/v2/models/{tail_name('faces', 6)}/versions/1")
    assert r.status_code == 404 and "no split at k=6" in r.json()["error"] and "5, 7" in r.json()["error"]
    assert http.get(f"/v2/models/{tail_name('nobody', 5)}").status_code == 404
    assert http.get(f"/v1/models/{TAIL}").status_code == 404  # TF-Serving: whole models only
    r = http.post(f"/v1/apps/classify/{TAIL}:predict", content=b"\xff\xd8", headers={"content-type": "image/jpeg"})
    assert r.status_code == 404 and "served at /v2/models" in r.json()["error"]


def test_a_model_may_not_be_named_like_a_tail(tmp_path):
    settings = test_settings(tmp_path / "home")
    bundle = make_bundle(tmp_path / "b", None, name=tail_name("faces", 3))
    with Registry.open(settings) as reg, pytest.raises(InvalidRequest, match="reserved"):
        reg.push(bundle)
