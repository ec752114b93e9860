"""App size, bytes per update, update latency and the weights (tandem.advisor.appsize, updates, runtimes,
weights, tradeoffs), on numbers small enough to check by hand and on real tiny bundles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tandem.advisor import CutProfile, ModelProfile, NetworkProfile, advise, decide
from tandem.advisor import report as report_mod
from tandem.advisor.appsize import app_size, check_platform, variants
from tandem.advisor.networks import NETWORKS
from tandem.advisor.runtimes import PLATFORMS, PUBLISHED, RuntimeLibrary, measure_linux, measure_web, runtime_libraries
from tandem.advisor.tradeoffs import device_variant, tradeoffs
from tandem.advisor.updates import (
    DEFAULT_CHECK_EVERY_S,
    alias_latency,
    bundle_update,
    measure_update,
    ota_latency,
    update_latency,
)
from tandem.advisor.weights import CRITERIA, parse_weights, score
from tandem.bundle import Bundle, Parity, Software, TensorSpec, Variant, write_manifest
from tandem.errors import InvalidRequest
from tandem.security.encryption import OVERHEAD
from tandem.testing.bundles import EMBED, make_bundle

LINK = NetworkProfile("test", rtt_ms=50.0, up_mbps=1.0, down_mbps=8.0, loss=0.0, radio="lte")


def with_variant(root: Path, key: str, data: bytes, gallery: bytes | None = None) -> Bundle:
    """Add variant ``key`` (file bytes ``data``) and optionally an app file to the bundle at ``root``."""
    b = Bundle.load(root)
    fmt, precision = key.split("-")
    rel = f"model.{precision}.{ {'litert': 'tflite', 'executorch': 'pte', 'coreml': 'mlpackage'}[fmt]}"
    (root / rel).write_bytes(data)
    m = b.manifest
    variant = Variant(format=fmt, precision=precision, file=rel,
                      inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[1, 100, 75, 3])],
                      outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[1, 4]),
                               TensorSpec(name="embedding", dtype="float32", shape=[1, EMBED])],
                      runtime=Software(name="rt", version="1"), parity=Parity(images=1, on="test", max_abs=0.0))
    apps = dict(m.apps)
    if gallery is not None:
        (root / "gallery.npz").write_bytes(gallery)
        apps["celebmatch"] = {"gallery": "gallery.npz"}
    write_manifest(root, m.model_copy(update={"variants": {**m.variants, key: variant}, "apps": apps,
                                              "schema_version": 3}))
    return Bundle.load(root)


def runtimes(**override: RuntimeLibrary | None) -> dict:
    table = {p: {f: PUBLISHED.get((p, f)) for f in ("onnx", "litert", "executorch", "coreml")} for p in PLATFORMS}
    table["linux"]["onnx"] = RuntimeLibrary("ONNX Runtime", "linux", 5_000_000, "measured", "lib", "here")
    for k, v in override.items():
        platform, fmt = k.split("_")
        table[platform][fmt] = v
    return table


# --- weights ------------------------------------------------------------------------------------


def test_weights_default_to_latency_and_sum_to_one():
    assert parse_weights(None) == {"latency": 1.0, "energy": 0.0, "cost": 0.0, "size": 0.0, "updates": 0.0}
    w = parse_weights(" latency=3, size=1 ")
    assert w["latency"] == pytest.approx(0.75) and w["size"] == pytest.approx(0.25) and set(w) == set(CRITERIA)


@pytest.mark.parametrize(("spec", "message"), [
    ("speed=1", "unknown objective 'speed'; choose from latency, energy, cost, size, updates"),
    ("latency", "NAME=NUMBER pairs"),
    ("latency=1,latency=2", "latency is given twice"),
    ("size=big", "size='big' is not a number"),
    ("cost=-1", "must be a finite number ≥ 0"),
    ("energy=nan", "must be a finite number ≥ 0"),
    ("latency=0,size=0", "at least one weight must be > 0"),
])
def test_bad_weights_say_what_is_wrong(spec, message):
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_weights(spec)


@pytest.fixture()
def profile() -> ModelProfile:
    """A 10 ms model of 4 MB; cuts after 2 ms (40 kB sent, 3 kB head) and after 9 ms (800 B sent, 15 kB head)."""
    def cut(k: int, head_ms: float, tail_ms: float, nbytes: int) -> CutProfile:
        return CutProfile(k=k, tensor=f"t{k}", node=f"n{k}", op="Conv", shape=[1, nbytes // 4], tensor_bytes=nbytes,
                          int8_bytes=nbytes // 4 + 8, head_ms=head_ms, tail_ms=tail_ms, quantize_ms=0.5,
                          dequantize_ms=0.25, head_file_bytes=1000 * k, head_peak_bytes=2000 * k)

    return ModelProfile(
        bundle="b", name="m", version=1, machine="test", threads=1, repeats=1, input_bytes=9600, output_bytes=200,
        whole_ms=10.0, int8_ms=5.0, images_per_s=200.0, batch=8, fp32_file_bytes=4_000_000,
        int8_file_bytes=1_000_000, peak_activation_bytes=100_000, peak_bytes=4_100_000, rss_bytes=0,
        compute_nodes=20, cuts=[cut(3, 2.0, 8.0, 40_000), cut(15, 9.0, 1.0, 800)])


def test_one_weight_alone_ranks_by_that_objective_and_latency_reproduces_the_fastest(profile):
    advice = advise(profile, [NETWORKS[n] for n in ("offline", "2g", "4g", "wifi")] + [LINK])
    for net in advice.networks:
        preds = advice.predictions[net.name]
        for objective in ("latency", "energy", "cost"):
            ranked = score(preds, parse_weights(f"{objective}=1"), {})
            assert ranked[0].placement == decide(preds, objective).best
    # Sizes: the device carries 4 MB, a split its head (1 kB per node), the cloud nothing.
    size = {"size": lambda p: float(p.app_bytes)}
    ranked = score(advice.predictions["4g"], parse_weights("size=1"), size)
    assert [s.placement for s in ranked[:2]] == ["cloud", "split@3"]
    assert ranked[0].norms == {"size": 0.0} and ranked[-1].placement == "device" and ranked[-1].score == 1.0
    # Half and half: normalised latency plus normalised size, each over the range on that network.
    both = {s.placement: s for s in score(advice.predictions["4g"], parse_weights("latency=1,size=1"), size)}
    lat = {p.placement: p.latency_ms for p in advice.predictions["4g"]}
    lo, hi = min(lat.values()), max(lat.values())
    assert both["split@15"].score == pytest.approx(((lat["split@15"] - lo) / (hi - lo) + 15e3 / 4e6) / 2)
    with pytest.raises(InvalidRequest, match="no figures to weigh updates"):
        score(advice.predictions["4g"], parse_weights("updates=1"), {})


# --- app size -----------------------------------------------------------------------------------


def test_app_size_is_model_plus_app_files_plus_the_platforms_runtime(tmp_path):
    root = make_bundle(tmp_path / "b", None)
    b = with_variant(root, "litert-int8", b"t" * 30_000, gallery=b"g" * 5_000)
    b = with_variant(root, "coreml-fp16", b"c" * 50_000)
    onnx = b.manifest.files["model.onnx"].size
    assert {k: v.bytes for k, v in variants(b.manifest).items()} == {
        "onnx-fp32": onnx, "litert-int8": 30_000, "coreml-fp16": 50_000}
    size = app_size(b.manifest, runtimes(ios_executorch=None))
    assert size.extras == {"gallery.npz": 5_000}
    assert set(size.platforms["ios"]) == {"onnx-fp32", "litert-int8", "coreml-fp16"}
    assert set(size.platforms["android"]) == set(size.platforms["linux"]) == {"onnx-fp32", "litert-int8"}
    assert set(size.platforms["web"]) == {"onnx-fp32"}  # the browser app runs ONNX only
    lite = size.platforms["android"]["litert-int8"]
    assert (lite.runtime, lite.runtime_basis) == ("LiteRT", "published")
    assert lite.total_bytes == 30_000 + 5_000 + 3_200_000
    assert size.platforms["ios"]["coreml-fp16"].total_bytes == 55_000  # Core ML comes with iOS
    assert size.smallest("ios").variant == "coreml-fp16" and size.smallest("android").variant == "litert-int8"
    # A runtime with no figure (LiteRT on Linux when ai-edge-litert is not installed) has no total.
    assert size.platforms["linux"]["litert-int8"].total_bytes is None
    assert size.smallest("linux").variant == "onnx-fp32"
    data = json.loads(json.dumps(size.to_dict()))
    assert data["smallest"]["ios"] == "coreml-fp16" and data["platforms"]["web"]["onnx-fp32"]["model_bytes"] == onnx
    assert "coreml" not in data["runtimes"]["android"] and data["runtimes"]["ios"]["coreml"]["basis"] == "built-in"
    assert device_variant(size, "android", {"onnx-fp32"}) == "onnx-fp32"  # only what the update has
    with pytest.raises(InvalidRequest, match="no platform 'windows'"):
        check_platform("windows")


def test_published_runtime_figures_cite_their_sources_and_linux_and_web_are_measured(tmp_path):
    for (platform, fmt), lib in PUBLISHED.items():
        assert lib.basis in ("published", "built-in") and lib.source and lib.what
        assert (lib.platform, lib.bytes is not None) == (platform, True), fmt
    ort = measure_linux("onnx")  # the onnxruntime wheel is a dependency of Tandem
    assert ort is not None and ort.basis == "measured" and ort.bytes > 1_000_000 and "libonnxruntime.so" in ort.what
    assert measure_web([tmp_path / "none"]) is None
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "ort-wasm-simd-threaded-abc.wasm").write_bytes(b"\0" * 10_000)
    (assets / "ort-wasm-simd-threaded-abc.mjs").write_bytes(b"export{}\n" * 100)
    (assets / "index.js").write_bytes(b"x" * 99)
    web = measure_web([tmp_path / "none", assets])
    assert web is not None and web.bytes == 10_900 and web.compressed_bytes < 1_000 and web.basis == "measured"
    table = runtime_libraries([assets])
    assert table["web"]["onnx"] == web and table["web"]["litert"] is None and table["ios"]["coreml"].bytes == 0


# --- updates ------------------------------------------------------------------------------------


def test_bytes_per_update_full_from_a_bundle_and_delta_between_versions(tmp_path):
    old = with_variant(make_bundle(tmp_path / "v1", None, seed=1), "litert-int8", os.urandom(50_000),
                       gallery=b"gallery" * 1000)
    tflite = old.path("model.int8.tflite").read_bytes()
    new = with_variant(make_bundle(tmp_path / "v2", None, seed=2), "litert-int8", tflite[:49_000] + b"new!" * 250,
                       gallery=b"gallery" * 1000)
    onnx = new.manifest.files["model.onnx"].size

    full = bundle_update(new)
    assert full.source == "bundle" and full.variants["onnx-fp32"].delta_bytes is None
    assert full.variants["onnx-fp32"].full_bytes == onnx + OVERHEAD + 7000 + OVERHEAD  # model + gallery, encrypted

    u = measure_update(old, new)
    assert (u.source, u.model) == ("registry", "faces")
    lite = u.variants["litert-int8"]
    model, gallery = lite.files
    assert (model.path, model.kind, gallery.path) == ("model.int8.tflite", "bytes", "gallery.npz")
    assert gallery.delta_bytes == 0  # unchanged: nothing to download
    assert OVERHEAD < model.delta_bytes < 5_000 < model.full_bytes == 50_000 + OVERHEAD  # 1 kB changed of 50 kB
    assert lite.delta_bytes == model.delta_bytes and lite.bytes == lite.delta_bytes
    ox = u.variants["onnx-fp32"].files[0]
    assert ox.kind == "onnx" and ox.full_bytes == onnx + OVERHEAD and ox.delta_bytes is not None
    # The same version twice: nothing changed. A variant the older version lacks: full files only.
    assert measure_update(new, new).variants["onnx-fp32"].delta_bytes == 0
    assert measure_update(Bundle.load(make_bundle(tmp_path / "v0", None)), new).variants["litert-int8"].delta_bytes is None
    other = Bundle.load(make_bundle(tmp_path / "x", None, name="other"))
    with pytest.raises(InvalidRequest, match="between versions of one model"):
        measure_update(other, new)


def test_update_latency_over_the_air_by_alias_and_through_the_stores(tmp_path):
    # 1 Mbps up, 8 Mbps down, 50 ms RTT: the check (600 B up, 2 kB down) and one GET of 1 MB.
    o = ota_latency(LINK, [1_000_000], check_every_s=3600)
    check_ms = 50 + 600 * 8 / 1000 + 2000 * 8 / 8000
    get_ms = 50 + 400 * 8 / 1000 + 1_000_300 * 8 / 8000
    assert o.download_s == pytest.approx((check_ms + get_ms) / 1000)
    assert (o.expected_s, o.worst_s) == pytest.approx((1800 + o.download_s, 3600 + o.download_s))
    assert ota_latency(NETWORKS["offline"], [1], 3600) is None  # no update reaches an offline device
    a = alias_latency(poll_s=0.5, load_ms=10.0, warmup_runs=3, whole_ms=2.0, batch_ms=8.0)
    assert (a.expected_s, a.worst_s) == pytest.approx((0.25 + 0.04, 0.5 + 0.04))
    with pytest.raises(InvalidRequest, match="poll interval"):
        alias_latency(poll_s=0, load_ms=1, warmup_runs=1, whole_ms=1, batch_ms=1)

    new = Bundle.load(make_bundle(tmp_path / "b", None))
    lat = update_latency(bundle_update(new), "onnx-fp32", [LINK, NETWORKS["offline"]], 3600, a)
    data = json.loads(json.dumps(lat.to_dict()))
    assert data["app_store"]["ios"]["review_s"] == 86400 and data["app_store"]["android"]["up_to_s"] == 7 * 86400
    assert data["ota"]["networks"]["offline"] is None and data["ota"]["bytes"] == sum(lat.bytes)
    with pytest.raises(InvalidRequest, match="no variant 'litert-int8'"):
        update_latency(bundle_update(new), "litert-int8", [LINK], 3600, a)
    from tandem.cli import advise as cli

    assert cli.DEFAULT_CHECK_EVERY_S == DEFAULT_CHECK_EVERY_S


def test_tradeoffs_weigh_size_and_updates_into_the_recommendation_and_the_report(tmp_path, profile):
    b = Bundle.load(make_bundle(tmp_path / "b", None))
    advice = advise(profile, [NETWORKS["offline"], NETWORKS["4g"], LINK])
    size = app_size(b.manifest, runtimes())
    alias = alias_latency(poll_s=0.5, load_ms=10.0, warmup_runs=3, whole_ms=10.0, batch_ms=40.0)

    def weigh(spec: str):
        return tradeoffs(advice, size, bundle_update(b), platform="android", weights=parse_weights(spec),
                         check_every_s=3600, alias=alias)

    fastest = weigh("latency=1")
    assert {n: r.best.placement for n, r in fastest.recommended.items()} == {
        n: advice.decisions[n]["latency"].best for n in advice.decisions}
    easy = weigh("updates=1")  # the cloud updates by an alias move in under a second; the device waits ~30 min
    assert easy.recommended["4g"].best.placement == "cloud" and easy.recommended["offline"].best.placement == "device"
    device = easy.recommended["4g"].device
    assert device.values["updates"] == pytest.approx(1800 + easy.latency.ota["4g"].download_s)
    small = weigh("latency=1,size=1")
    dev = small.recommended["test"].device
    assert dev.values["size"] == b.manifest.files["model.onnx"].size + 12_200_000  # ONNX Runtime's published AAR
    data = json.loads(json.dumps(small.to_dict()))
    assert set(data) == {"app_size", "updates", "weights", "recommended"}
    assert data["app_size"]["platform"] == "android" and data["app_size"]["device_variant"] == "onnx-fp32"
    assert data["weights"]["size"] == 0.5 and data["recommended"]["test"]["placement"]

    json_path, html_path = report_mod.write(advice, tmp_path / "out", "tandem advise", tradeoffs=small)
    assert json.loads(json_path.read_text())["updates"]["latency"]["alias"]["expected_s"] == pytest.approx(0.25 + 0.16)
    page = html_path.read_text()
    for text in ("Recommended placement, weighed", "App size and updates", "Bytes per update over the air",
                 "Update latency", "published", "measured", "12.2 MB", "tensorflow/tensorflow#57196"):
        assert text in page
