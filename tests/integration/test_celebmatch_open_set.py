"""celebmatch for people the network never saw: train the embed objective briefly, export, enrol
people who were not in training, and ask about photos — through the CLI and through the server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tandem.testing.served import serve
from tests.conftest import make_folder_dataset
from tests.integration.cli import tandem, tandem_json

pytestmark = pytest.mark.integration


def _people(lfw_people: Path, at_least: int) -> list[str]:
    return sorted(p.name for p in lfw_people.iterdir() if len(list(p.glob("*.jpg"))) >= at_least)


@pytest.fixture(scope="module")
def open_set(tmp_path_factory, lfw_people):
    root = tmp_path_factory.mktemp("open_set")
    people = _people(lfw_people, 8)
    train_people, enrolled, stranger = people[:24], people[24:27], people[27]
    train_dir = make_folder_dataset(root / "train", lfw_people, train_people, 6)
    enrol_dir = make_folder_dataset(root / "enrol", lfw_people, enrolled, 4)
    env = {"TANDEM_HOME": str(root / "home")}
    # The small network from scratch (the dlib backbone has its own test below): whitening, split tails.
    tandem("train", "--data", train_dir, "--objective", "embed", "--backbone", "mobile", "--size", "48", "--epochs", "3",
           "--batch-size", "32",
           "--val-fraction", "0.25", "--out", root / "run", "--no-progress", env=env)
    tandem("export", root / "run", "--out", root / "bundle", "--name", "faces", env=env)
    summary = tandem_json("celebmatch", "enroll", root / "bundle", "--data", enrol_dir, env=env)
    return {"root": root, "bundle": root / "bundle", "enrolled": enrolled, "stranger": stranger, "env": env,
            "enrol_summary": summary, "train_people": train_people}


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_the_bundle_is_a_face_embedding_with_its_alignment_and_calibration(open_set):
    manifest = json.loads((open_set["bundle"] / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and manifest["task"] == "face-embedding"
    assert [o["name"] for o in manifest["outputs"]] == ["embedding"]
    faces = manifest["apps"]["faces"]
    assert faces["landmarks"] in manifest["files"] and faces["impostors"] in manifest["files"]
    assert set(faces["calibration"]) == {"face", "eyes", "nose", "mouth"}
    for curve in faces["calibration"].values():
        assert all(b >= a for a, b in zip(curve["y"], curve["y"][1:], strict=False))  # monotone
    run = json.loads((open_set["root"] / "run" / "dataset.json").read_text())
    by_part = {part: {run["labels"][i] for i in idx} for part, idx in run["split"].items()}
    assert not by_part["train"] & by_part["val"]  # identity-disjoint
    assert manifest["metrics"]["max_abs_onnx_torch"] < 1e-4


def test_enrolled_strangers_to_the_network_are_matched_and_others_get_no_close_match(open_set, lfw_people):
    enrolled = open_set["enrolled"]
    assert open_set["enrol_summary"]["identities"] == 3
    assert not set(enrolled) & set(open_set["train_people"])
    gallery = json.loads((open_set["bundle"] / "manifest.json").read_text())["apps"]["celebmatch"]
    threshold = gallery["threshold"]
    own = [sorted((lfw_people / name).glob("*.jpg"))[0] for name in enrolled]  # photos that were enrolled
    stranger = sorted((lfw_people / open_set["stranger"]).glob("*.jpg"))[:3]
    out = tandem("celebmatch", "match", open_set["bundle"], *own, *stranger, "--json", env=open_set["env"]).stdout
    lines = _lines(out)
    assert [line["photo"] for line in lines] == [str(p) for p in [*own, *stranger]]
    for line in lines:
        assert line["no_match"] == (line["top"][0]["similarity"] < threshold)
        assert all(0 <= t["percent"] <= 100 for t in line["top"]) and len(line["landmarks"]) == 5
    for name, line in zip(enrolled, lines[:3], strict=True):
        assert line["top"][0]["label"] == name  # the enrolled photo itself finds its person
    assert any(line["no_match"] for line in lines[3:])
    assert any(line["sentence"].startswith("No close match") for line in lines[3:])
    # A folder is answered photo by photo, in order.
    folder = tandem("celebmatch", "match", open_set["bundle"], open_set["root"] / "enrol" / enrolled[0], "--json",
                    env=open_set["env"]).stdout
    assert len(_lines(folder)) == 4


def test_noise_is_no_face_even_without_detection(open_set, tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (250, 250, 3), dtype=np.uint8)).save(noise)
    proc = tandem("celebmatch", "match", open_set["bundle"], noise, "--no-detect", "--json", ok=False,
                  env=open_set["env"])
    assert proc.returncode != 0 and "no face" in proc.stderr


def test_the_server_answers_the_same_with_no_match(open_set, lfw_people):
    env = {**os.environ, **open_set["env"], "TANDEM_DATABASE_URL": "", "TANDEM_REDIS_URL": "", "TANDEM_ACCESS_LOG": "0"}
    tandem("push", open_set["bundle"], env=env)
    key = tandem_json("keys", "create", "--scope", "predict", env=env)["key"]
    photo = sorted((lfw_people / open_set["stranger"]).glob("*.jpg"))[0]
    cli = _lines(tandem("celebmatch", "match", open_set["bundle"], photo, "--json", env=env).stdout)[0]
    served = serve(env=env)
    try:
        r = httpx.post(f"{served.url}/v1/apps/celebmatch/faces:predict?version=1", content=photo.read_bytes(),
                       headers={"authorization": f"Bearer {key}", "content-type": "image/jpeg"}, timeout=30)
    finally:
        served.stop()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["no_match"] == cli["no_match"] and body["top"][0]["label"] == cli["top"][0]["label"]
    assert body["top"][0]["similarity"] == pytest.approx(cli["top"][0]["similarity"], abs=1e-4)


def test_a_face_embedding_bundle_splits_for_split_inference(open_set, tmp_path):
    import shutil

    from tandem.bundle import Bundle
    from tandem.bundle.runtime import OnnxModel, load_session

    copy = tmp_path / "bundle"
    shutil.copytree(open_set["bundle"], copy)
    tandem("split", copy, "10", env=open_set["env"])
    b = Bundle.load(copy)
    s = b.manifest.split(10)
    head, tail = load_session(b.path(s.head)), load_session(b.path(s.tail))
    x = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    out = tail.run(None, {tail.get_inputs()[0].name: head.run(None, {"pixels": x})[0]})[0]
    assert np.abs(out - OnnxModel.open(b).run(x)["embedding"]).max() < 1e-5


@pytest.mark.litert
@pytest.mark.executorch
def test_a_face_embedding_gets_fp32_litert_and_executorch_variants_that_give_onnx_embeddings(open_set, lfw_people,
                                                                                           tmp_path):
    """`--formats` on an embed run: its fp32 variants, each checked at export on real test faces by the largest
    difference from PyTorch's embedding; int8 ones (no top class to agree on) are refused before any work."""
    from tandem.bundle import Bundle
    from tandem.bundle.executorch_runtime import ExecuTorchModel
    from tandem.bundle.litert_runtime import LiteRtModel
    from tandem.bundle.runtime import OnnxModel

    refused = tandem("export", open_set["root"] / "run", "--out", tmp_path / "no", "--formats", "onnx,litert-int8",
                     env=open_set["env"], ok=False)
    assert refused.returncode != 0 and "this is a face embedding" in refused.stderr
    assert "--formats onnx" in refused.stderr and not (tmp_path / "no").exists()
    out = tmp_path / "variants"
    tandem("export", open_set["root"] / "run", "--out", out, "--name", "faces", "--formats", "onnx,litert,executorch",
           env=open_set["env"])
    b = Bundle.load(out)
    m = b.manifest
    assert m.schema_version == 3 and set(m.variants) == {"onnx-fp32", "onnx-int8", "litert-fp32", "executorch-fp32"}
    for key, parity in ((k, v.parity) for k, v in m.variants.items()):
        # This run has no test part: its parity faces are training ones (up to 64), the same for every variant.
        assert parity is not None and (parity.on, parity.images, parity.top1_agreement) == ("train", 64, None), key
        assert key == "onnx-int8" or parity.max_abs <= 1e-4, (key, parity)
    photos = [sorted((lfw_people / name).glob("*.jpg"))[0] for name in open_set["enrolled"]]
    onnx = OnnxModel.open(b)
    pixels = onnx.pixels_from_files(photos)
    want = onnx.run(pixels)["embedding"]
    for runner in (LiteRtModel, ExecuTorchModel):
        got = runner.open(b).run(pixels)["embedding"]
        assert got.dtype == np.float32 and got.shape == want.shape and np.abs(got - want).max() <= 1e-4, runner


def test_the_dlib_backbone_recognises_never_trained_people_from_their_other_photos(tmp_path, lfw_people):
    """The default backbone, fine-tuned one epoch: people outside training, enrolled from 3 photos,
    are found from photos that were not enrolled, and a stranger gets no close match."""
    people = _people(lfw_people, 8)
    train_people, enrolled, stranger = people[:12], people[12:16], people[16]
    train_dir = make_folder_dataset(tmp_path / "train", lfw_people, train_people, 4)
    enrol_dir = make_folder_dataset(tmp_path / "enrol", lfw_people, enrolled, 3)
    env = {"TANDEM_HOME": str(tmp_path / "home")}
    trained = tandem_json("train", "--data", train_dir, "--objective", "embed", "--epochs", "1", "--batch-size", "16",
                          "--val-fraction", "0.25", "--out", tmp_path / "runs" / "faces", env=env)
    assert trained["best_val_verification"] > 0.5
    tandem("export", tmp_path / "runs" / "faces", "--out", tmp_path / "bundle", env=env)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["name"] == "faces"  # no --name: the run folder's name, kept through export
    assert manifest["training"]["network"]["arch"] == "dlib-resnet" and manifest["training"]["backbone"] == "dlib"
    assert manifest["inputs"][0]["shape"][1:] == [150, 150, 3]
    tandem_json("celebmatch", "enroll", tmp_path / "bundle", "--data", enrol_dir, env=env)
    others = [sorted((lfw_people / name).glob("*.jpg"))[5] for name in enrolled]  # never enrolled
    strange = sorted((lfw_people / stranger).glob("*.jpg"))[:2]
    lines = _lines(tandem("celebmatch", "match", tmp_path / "bundle", *others, *strange, "--json", env=env).stdout)
    assert [line["top"][0]["label"] for line in lines[:4]] == enrolled
    assert not any(line["no_match"] for line in lines[:4])
    assert all(line["no_match"] for line in lines[4:])
