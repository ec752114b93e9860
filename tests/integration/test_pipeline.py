"""train → export → info → predict → celebmatch, through the real CLI on real LFW photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tandem import advisor as advisor_pkg
from tandem.bundle import Bundle
from tandem.testing.bundles import make_bundle
from tests.conftest import make_folder_dataset, write_png
from tests.integration.cli import tandem, tandem_in_fresh_python, tandem_json

pytestmark = pytest.mark.integration
PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]
TRAIN_ARGS = ["--min-faces", "1", "--batch-size", "16", "--stem-stride", "2", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, lfw_people) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    make_folder_dataset(root / "faces", lfw_people, PEOPLE, 15)
    return root


@pytest.fixture(scope="module")
def run_dir(work) -> Path:
    summary = tandem_json("train", "--data", work / "faces", "--out", work / "run", "--epochs", "2", "--name", "faces", *TRAIN_ARGS)
    assert summary["epochs"] == 2 and summary["classes"] == 4 and summary["train_images"] == 4 * 10  # 15 each: 10 train, 2 val, 3 test
    return work / "run"


@pytest.fixture(scope="module")
def bundle_dir(run_dir, work) -> Path:
    # ONNX only: the other formats (minutes more) have tests/integration/test_variant_export.py.
    proc = tandem("export", run_dir, "--out", work / "bundle", "--formats", "onnx", "--json")
    manifest = json.loads(proc.stdout)
    assert manifest["name"] == "faces" and "model.int8.onnx" in manifest["files"]
    # The exporter's own chatter (onnxscript's INFO lines, torch's warnings) stays in the debug log.
    assert proc.stderr == "", proc.stderr
    return work / "bundle"


def test_train_writes_checkpoints_history_and_plots(run_dir):
    for name in ("checkpoint.pt", "best.pt", "config.json", "dataset.json"):
        assert (run_dir / name).is_file()
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for png in ("curves.png", "confusion.png"):
        with Image.open(run_dir / png) as im:
            assert im.format == "PNG" and im.width > 300
    split = json.loads((run_dir / "dataset.json").read_text())["split"]
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 60


def test_export_writes_a_verified_bundle_with_measured_metrics(bundle_dir):
    b = Bundle.load(bundle_dir)
    m = b.manifest
    assert m.name == "faces" and m.labels == sorted(PEOPLE)
    assert set(m.files) == {"model.onnx", "model.int8.onnx"}
    assert m.metrics["max_abs_onnx_torch"] <= 1e-4
    for key in ("test_top1_fp32", "test_top1_int8", "test_top5_fp32", "test_balanced_fp32"):
        assert 0 <= m.metrics[key] <= 1
    assert m.metrics["test_images"] == 12
    assert m.files["model.int8.onnx"].size < 0.4 * m.files["model.onnx"].size
    assert m.inputs[0].dtype == "uint8" and m.inputs[0].shape == [-1, 100, 75, 3]
    assert m.fingerprint is not None and len(m.fingerprint.data) == 64
    # The commit of the code that trained it, recorded in the run folder at train time (None outside a checkout).
    from tandem.training import provenance

    here = provenance.code_revision()
    assert (m.training.get("code") or {}).get("git_commit") == (here or {}).get("git_commit")


def test_info_prints_readably_and_as_json(bundle_dir):
    out = tandem("info", bundle_dir).stdout
    assert "verified" in out and "model.int8.onnx" in out and "test_top1_fp32" in out
    assert tandem_json("info", bundle_dir)["schema_version"] == 2


def test_advise_training_prices_the_run_here_on_ray_and_on_gpus_beside_serving(run_dir, tmp_path):
    # The run alone: its own epoch times, the shipped prices and benchmark figures; no torch needed for that.
    out, torch_loaded = tandem_in_fresh_python("advise", "--training", run_dir, "--training-epochs", "30",
                                               "--nodes", "2", "--nodes", "8", "--out", tmp_path / "t", "--json")
    assert not torch_loaded
    training = json.loads(out)["training"]
    seconds = sorted(h["seconds"] for h in json.loads((run_dir / "history.json").read_text()))
    job = training["job"]
    assert (job["task"], job["epochs"], job["images"], job["basis"]) == ("classify", 30, 40, "measured")
    assert job["epoch_s"] == pytest.approx((seconds[0] + seconds[1]) / 2)  # the median of two epochs
    places = training["placements"]
    assert {"this-machine", "ray-c7i-2", "ray-c7i-8", "gpu-h200", "gpu-t4"} <= set(places)
    assert places["this-machine"]["basis"] == "measured" and places["this-machine"]["currency"] == "USD"
    assert places["ray-c7i-8"]["epoch_s"] < places["ray-c7i-2"]["epoch_s"] < places["this-machine"]["epoch_s"]
    # --stem-stride 2 and batches of 16: not the network the H200 measured, so scaled by its measured speedup.
    assert places["gpu-h200"]["basis"] == "scaled" and "speedup" in places["gpu-h200"]["source"]
    assert all(p["cost"] >= 0 and p["wall_s"] > 0 for p in places.values())
    assert (tmp_path / "t" / "training.html").is_file() and (tmp_path / "t" / "training.json").is_file()

    # With a bundle (a tiny one: quick to profile): in advice.json and the report, next to the cloud's cost per request.
    summary = tandem_json("advise", make_bundle(tmp_path / "b", None), "--training", run_dir, "--network", "4g",
                          "--repeats", "2", "--out", tmp_path / "a")
    serving = summary["training"]["serving"]
    assert serving["cloud_usd_per_1000"] == summary["best"]["4g"]["cost"]["cloud"]
    assert serving["predictions_per_training"]["this-machine"] > 0
    assert json.loads((tmp_path / "a" / "advice.json").read_text())["training"]["job"]["images"] == 40
    assert "What training costs where" in (tmp_path / "a" / "report.html").read_text()

    # Bad input: a negative price, a run folder without history, neither a bundle nor --training.
    bad = tmp_path / "prices.toml"
    bad.write_text((Path(advisor_pkg.__file__).parent / "prices.toml").read_text().replace("price = 5.408", "price = -5.408"))
    proc = tandem("advise", "--training", run_dir, "--prices", bad, ok=False)
    assert proc.returncode != 0 and "[gpu.h200] price must be ≥ 0, got -5.408" in proc.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "dataset.json"):
        (bare / name).write_bytes((run_dir / name).read_bytes())
    proc = tandem("advise", "--training", bare, ok=False)
    assert proc.returncode != 0 and "holds no epoch yet" in proc.stderr
    proc = tandem("advise", ok=False)
    assert proc.returncode != 0 and "--training RUN" in proc.stderr


def test_predict_runs_on_onnx_runtime_alone(bundle_dir, lfw_people):
    photo = sorted((lfw_people / "Hugo_Chavez").glob("*.jpg"))[-1]
    out, torch_loaded = tandem_in_fresh_python("predict", bundle_dir, photo, "--json", "--top-k", "3")
    assert not torch_loaded
    result = json.loads(out)
    top = result["predictions"][0]["top"]
    assert len(top) == 3 and len({t["label"] for t in top}) == 3 and {t["label"] for t in top} <= set(PEOPLE)
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5 and probs[-1] > 0


def test_predict_int8_and_fp32_agree_on_most_images(bundle_dir, lfw_people):
    photos = [sorted((lfw_people / p).glob("*.jpg"))[-1] for p in PEOPLE]
    a = tandem_json("predict", bundle_dir, *photos)
    b = tandem_json("predict", bundle_dir, *photos, "--int8")
    assert b["precision"] == "int8" and len(b["predictions"]) == 4
    agree = sum(x["top"][0]["label"] == y["top"][0]["label"] for x, y in zip(a["predictions"], b["predictions"], strict=True))
    assert agree >= 3


@pytest.fixture(scope="module")
def enrolled(bundle_dir, work) -> dict:
    return tandem_json("celebmatch", "enroll", bundle_dir, "--data", work / "faces", "--max-per-identity", "6")


def test_celebmatch_enroll_then_match_a_photo(bundle_dir, enrolled, lfw_people):
    assert enrolled["identities"] == 4 and enrolled["images"] >= 20
    b = Bundle.load(bundle_dir)  # re-verified after the gallery was added
    assert "gallery.npz" in b.manifest.files and b.manifest.apps["celebmatch"]["identities"] == 4
    photo = sorted((lfw_people / "Tony_Blair").glob("*.jpg"))[-1]
    result = tandem_json("celebmatch", "match", bundle_dir, photo)
    assert result["sentence"].startswith("You look ")
    assert len(result["top"]) == 3 and set(result["parts"]) == {"eyes", "nose", "mouth"}
    assert result["face_box"] is not None
    text = tandem("celebmatch", "match", bundle_dir, photo).stdout
    assert "You look" in text and "eyes" in text


def test_celebmatch_says_clearly_when_no_face_is_found(bundle_dir, enrolled, work):
    proc = tandem("celebmatch", "match", bundle_dir, write_png(work / "noise.png", 300, 300), ok=False)
    assert proc.returncode != 0 and "no face found" in proc.stderr
    assert "(or --no-detect for a photo that is already a cropped, aligned face)" in proc.stderr  # the CLI's own control


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(work):
    """Interrupted mid-schedule (after 2 of 3 epochs, where the cosine decay is under way) and
    resumed, a run must end bit-identical to one that never stopped."""
    args = ["--data", work / "faces", "--epochs", "3", "--subset", "0.7", *TRAIN_ARGS]
    whole, cut = work / "whole", work / "cut"
    tandem("train", "--out", whole, *args)
    tandem("train", "--out", cut, "--stop-after", "2", *args)
    assert json.loads((cut / "history.json").read_text())[-1]["epoch"] == 2
    tandem("train", "--out", cut, "--resume", *args)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert a["best_epoch"] == b["best_epoch"]
    assert torch.load(cut / "best.pt", weights_only=True)["epoch"] == b["best_epoch"]
    # --subset 0.7 of 15 photos each: 10 per person, split 7/1/2
    split = json.loads((cut / "dataset.json").read_text())["split"]
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (4 * 7, 4 * 1, 4 * 2)
    proc = tandem("train", "--out", cut, "--resume", *args[:3], "2", *args[4:], ok=False)
    assert proc.returncode == 4 and "would go backwards" in proc.stderr


def test_resume_refuses_changed_settings_and_train_refuses_to_overwrite(work, run_dir):
    proc = tandem("train", "--data", work / "faces", "--out", run_dir, "--epochs", "3", "--resume",
                  *TRAIN_ARGS[:-1], "4", ok=False)
    assert proc.returncode == 4 and "different settings (seed)" in proc.stderr
    proc = tandem("train", "--data", work / "faces", "--out", run_dir, "--epochs", "2", *TRAIN_ARGS, ok=False)
    assert proc.returncode == 4 and "--resume" in proc.stderr


def test_celebmatch_match_runs_without_torch(bundle_dir, enrolled, lfw_people):
    photo = sorted((lfw_people / "Gerhard_Schroeder").glob("*.jpg"))[-1]
    out, torch_loaded = tandem_in_fresh_python("celebmatch", "match", bundle_dir, photo, "--json")
    assert not torch_loaded and json.loads(out)["sentence"].startswith("You look")


def test_export_never_overwrites_something_that_is_not_a_bundle(run_dir, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    proc = tandem("export", run_dir, "--out", precious, ok=False)
    assert proc.returncode == 5 and "is not a bundle" in proc.stderr
    assert (precious / "thesis.txt").read_text() == "years of work"
    proc = tandem("export", run_dir, "--out", run_dir.parent, ok=False)
    assert proc.returncode == 5 and "overlaps the run folder" in proc.stderr


def test_folder_problems_are_reported_not_crashed_on(work, tmp_path):
    data = make_folder_dataset(tmp_path / "d", work / "faces", PEOPLE[:2], 6)
    (data / PEOPLE[0] / "readme.txt").write_text("not a photo")
    (data / PEOPLE[1] / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    summary = tandem_json("train", "--data", data, "--out", tmp_path / "r", "--epochs", "1", *TRAIN_ARGS)
    assert summary["classes"] == 2
    run = json.loads((tmp_path / "r" / "dataset.json").read_text())
    assert run["skipped_files"] == 1  # readme.txt
    where = next(part for part, idx in run["split"].items() if run["files"].index(f"{PEOPLE[1]}/broken.jpg") in idx)
    if where in ("train", "val"):
        seen = len(run["split"]["train"]) + len(run["split"]["val"])
        assert run["notes"] == [f"skipped 1 unreadable image file(s) of {seen} (training and validation)"]
    else:  # a test image: export skips it and measures on the rest
        manifest = tandem_json("export", tmp_path / "r", "--out", tmp_path / "b", "--formats", "onnx")
        assert manifest["metrics"]["test_images"] == len(run["split"]["test"]) - 1
    (data / "Nobody").mkdir()
    proc = tandem("train", "--data", data, "--out", tmp_path / "r2", *TRAIN_ARGS, ok=False)
    assert proc.returncode == 3 and "no images: Nobody" in proc.stderr
    proc = tandem("train", "--data", data, "--out", tmp_path / "r3", "--name", "my model", *TRAIN_ARGS, ok=False)
    assert proc.returncode == 2 and "--name 'my model'" in proc.stderr


def test_bad_inputs_get_clear_errors_and_nonzero_exits(work, bundle_dir, tmp_path):
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    write_png(one / "only" / "a.png")
    proc = tandem("train", "--data", one, "--out", tmp_path / "r", *TRAIN_ARGS, ok=False)
    assert proc.returncode == 3 and "at least 2 classes" in proc.stderr

    proc = tandem("train", "--data", "lfw", "--out", tmp_path / "r", env={"TANDEM_DATA_HOME": str(tmp_path / "void")}, ok=False)
    assert proc.returncode == 2 and "lfw_home" in proc.stderr

    broken = tmp_path / "broken-run"
    broken.mkdir()
    for name in ("config.json", "dataset.json"):
        (broken / name).write_bytes((work / "run" / name).read_bytes())
    (broken / "best.pt").write_bytes((work / "run" / "best.pt").read_bytes()[:1000])
    proc = tandem("export", broken, "--out", tmp_path / "b", ok=False)
    assert proc.returncode == 4 and "corrupt or truncated" in proc.stderr
    assert not (tmp_path / "b").exists()

    cut = tmp_path / "cut-bundle"
    cut.mkdir()
    for f in bundle_dir.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    (cut / "model.onnx").write_bytes((bundle_dir / "model.onnx").read_bytes()[:5000])
    proc = tandem("predict", cut, work / "noise.png", ok=False)
    assert proc.returncode == 5 and "model.onnx" in proc.stderr and "truncated" in proc.stderr

    proc = tandem("predict", bundle_dir, tmp_path / "missing.jpg", ok=False)
    assert proc.returncode == 3 and "no such file" in proc.stderr


def test_runtime_refuses_pixels_of_the_wrong_size(bundle_dir):
    from tandem.bundle.runtime import OnnxModel
    from tandem.errors import ImageError

    model = OnnxModel.open(Bundle.load(bundle_dir))
    with pytest.raises(ImageError, match="expected"):
        model.run(np.zeros((1, 64, 64, 3), np.uint8))
