"""Deep art (issue 18), the first slice: a distilled teacher effect trained by `tandem train --task
stylize`, exported as an image-to-image bundle and served as the deepart app by the real server.

One short run is shared by the module: a dozen LFW photos in a plain folder, 64×64, one epoch."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tandem.apps.deepart import MAX_SIDE
from tandem.bundle import Bundle, TensorSpec
from tandem.bundle.runtime import OnnxModel
from tandem.errors import DataError
from tandem.export.stylize_export import load_stylizer
from tandem.training.stylize import StylizeConfig, train_stylize
from tests.integration.cli import tandem, tandem_json
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration
PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"]
TRAIN = ("--task", "stylize", "--teacher-effect", "detail", "--epochs", "1", "--photo-size", "64", "--crop", "32",
         "--batch-size", "4", "--no-progress")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, lfw_people) -> Path:
    """LFW photos in a folder of photos (no classes), one level down as a phone's camera roll might be."""
    root = tmp_path_factory.mktemp("photos") / "roll"
    for name in PEOPLE:
        (root / name).mkdir(parents=True)
        for src in sorted((lfw_people / name).glob("*.jpg"))[:4]:
            shutil.copy(src, root / name / src.name)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, photo_folder) -> Path:
    out = tmp_path_factory.mktemp("art") / "run"
    summary = tandem_json("train", "--data", photo_folder, "--out", out, *TRAIN)
    assert summary["epochs"] == 1 and summary["train_images"] + summary["held_out_images"] == 12
    return out


@pytest.fixture(scope="module")
def bundle(run) -> Path:
    out = run.parent / "bundle"
    manifest = tandem_json("export", run, "--out", out, "--name", "art")
    assert manifest["task"] == "image-to-image"
    return out


def test_a_run_folder_holds_the_teachers_pictures_history_and_a_contact_sheet(run):
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1]
    assert 5 < history[0]["val_psnr"] < 100 and 0 < history[0]["val_ssim"] <= 1
    with Image.open(run / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 3 * 64  # photo, teacher, student
    with np.load(run / "teacher.npz") as z:
        assert z["photos"].shape == z["teacher"].shape == (12, 64, 64, 3)
    dataset = json.loads((run / "dataset.json").read_text())
    assert len(dataset["held_out"]) == 1 and not set(dataset["held_out"]) & set(dataset["train"])


def test_resume_continues_the_run(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = StylizeConfig.from_json(json.loads((copy / "config.json").read_text()))
    cfg.out, cfg.epochs = copy, 2
    result = train_stylize(cfg, resume=True, show_progress=False)
    assert result.epochs == 2
    assert [row["epoch"] for row in json.loads((copy / "history.json").read_text())] == [1, 2]
    r = tandem("train", "--data", "lfw", "--out", copy, "--resume", ok=False)  # forgot --task stylize
    assert r.returncode != 0 and "holds a --task stylize run: resume it with --task stylize" in r.stderr


def test_the_bundle_matches_torch_at_any_size_and_records_the_effect(run, bundle):
    b = Bundle.load(bundle)
    m = b.manifest
    assert [t.shape for t in m.inputs] == [[-1, -1, -1, 3]]
    assert [(t.name, t.dtype) for t in m.outputs] == [("image", "float32"), ("image_uint8", "uint8")]
    art = m.apps["deepart"]
    assert art["effect"] == "detail" and art["teacher"].startswith("cv2.detailEnhance(")
    assert art["psnr_db"] == round(m.metrics["psnr_db_fp32"], 2) and 0 < art["ssim"] <= 1
    assert m.metrics["max_abs_onnx_torch"] <= 1e-3
    assert ("int8" in m.models) == (art["int8"] == "kept")
    photo = np.random.default_rng(0).integers(0, 256, (1, 45, 70, 3), dtype=np.uint8)
    got = OnnxModel.open(b).infer({"pixels": photo})["image"]
    model, _ = load_stylizer(run)
    with torch.no_grad():
        want = model(torch.from_numpy(photo)).numpy()
    assert got.shape == (1, 45, 70, 3) and np.abs(got - want).max() <= 1e-3
    info = tandem("info", bundle).stdout
    assert "image apps: deepart (POST /v1/apps/APP/art:predict)" in info and "N×H×W×3" in info


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def test_phone_variants_are_fixed_at_the_training_size_and_paint_as_onnx_does(run, bundle, lfw_people):
    from tandem.bundle.executorch_runtime import ExecuTorchModel
    from tandem.bundle.litert_runtime import LiteRtModel

    out = run.parent / "bundle-phones"
    manifest = tandem_json("export", run, "--out", out, "--name", "art", "--formats", "onnx,litert,executorch,coreml")
    variants = manifest["variants"]
    phones = ("litert-fp32", "litert-int8", "executorch-fp32", "executorch-int8", "coreml-fp16")
    assert set(variants) >= {"onnx-fp32", *phones}
    for key in phones:
        v = variants[key]
        assert v["inputs"][0]["shape"] == [1, 64, 64, 3] and [t["name"] for t in v["outputs"]] == ["image", "image_uint8"]
        assert [t["dtype"] for t in v["outputs"]] == ["float32", "uint8"]
        if key.endswith("fp32"):
            assert v["parity"]["max_abs"] <= 1.0 and v["parity"]["on"] == "test" and v["parity"]["psnr_db"] > 50
        elif key.endswith("int8"):  # no top class: its pictures are its bar
            assert v["parity"]["psnr_db"] >= 30 and v["parity"]["top1_agreement"] is None
            assert (out / v["file"]).stat().st_size < (out / variants[key.replace("int8", "fp32")]["file"]).stat().st_size
    # Core ML predicts only on Apple's systems: its program was read back instead, the uint8 picture an RGB image.
    core = variants["coreml-fp16"]
    assert core["parity"] is None and core["spec_check"]["spec_ok"]
    assert "outputs 'image' float32 [1, 64, 64, 3], 'image_uint8' an RGB image 64 wide and 64 high" in core["spec_check"]["checked"]
    from tandem.export.coreml_export import check_spec

    as_array = [TensorSpec(name=n, dtype="float32", shape=[1, 64, 64, 3]) for n in ("image", "image_uint8")]
    record, failed = check_spec(out / core["file"], 64, 64, as_array)  # a manifest that wants no picture out
    assert not record.spec_ok and len(failed) == 1
    assert "'image_uint8' float32 [1, 64, 64, 3]: found" in failed[0] and "imageType" in failed[0]
    assert variants["onnx-fp32"]["inputs"][0]["shape"] == [-1, -1, -1, 3]
    b = Bundle.load(out)
    photo = np.asarray(ImageOps.fit(Image.open(sorted((lfw_people / PEOPLE[0]).glob("*.jpg"))[-1]).convert("RGB"),
                                    (64, 64)))[None]  # a photo the run never saw
    want = OnnxModel.open(b, "fp32").infer({"pixels": photo})
    for runner in (LiteRtModel.open(b), ExecuTorchModel.open(b)):
        got = runner.run(photo)
        assert np.abs(got["image"] - want["image"]).max() <= 1e-3
        assert np.abs(got["image_uint8"].astype(int) - want["image_uint8"].astype(int)).max() <= 1
    # The device SDK on the LiteRT file: photos of any size, each painted at 64×64 and given back at its own size.
    from tandem.device import HybridModel

    wide = Image.fromarray(photo[0]).resize((90, 60))
    painted = HybridModel(out, runtime="litert", policy="only_device").predict([wide, wide.resize((40, 30))])
    assert painted.pixels().shape == (2, 64, 64, 3)
    pictures = painted.pictures()
    assert [p.shape for p in pictures] == [(60, 90, 3), (30, 40, 3)] and pictures[0].dtype == np.uint8
    assert np.array_equal(pictures[0], np.asarray(Image.fromarray(painted.pixels()[0]).resize((90, 60), Image.BILINEAR)))
    # The default export (no --formats) makes none: the fixed size is for apps that ask for it.
    assert not json.loads((bundle / "manifest.json").read_text()).get("variants")


def test_the_server_paints_a_photo_as_jpeg_or_png_by_accept(tmp_path, bundle, lfw_people):
    settings = test_settings(tmp_path / "home")
    keys = populate(settings, [bundle], production=None)
    with Image.open(sorted((lfw_people / "Donald_Rumsfeld").glob("*.jpg"))[0]) as original:
        photo = original.resize((150, 100))
    with running(settings) as server, server.client(keys.predict) as http:
        url = "/v1/apps/deepart/art:predict"
        r = http.post(url, content=_jpeg(photo), headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg" and r.headers["x-tandem-model"] == "art"
        assert Image.open(io.BytesIO(r.content)).size == (150, 100)
        r = http.post(url, content=_jpeg(photo), headers={"content-type": "image/jpeg",
                                                           "accept": "image/jpeg;q=0.5, image/png"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        painted = Image.open(io.BytesIO(r.content))
        assert painted.format == "PNG" and painted.size == (150, 100)
        # A big photo is painted with its longest side at MAX_SIDE, its aspect kept.
        big = Image.new("RGB", (2 * MAX_SIDE + 200, MAX_SIDE + 100), (200, 120, 40))
        r = http.post(url, content=_jpeg(big), headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (MAX_SIDE, 512)
        r = http.post(url, content=_jpeg(photo.resize((12, 30))), headers={"content-type": "image/jpeg"})
        assert r.status_code == 400 and "at least 16 pixels on each side" in r.json()["error"]
        r = http.post("/v1/apps/classify/art:predict", content=_jpeg(photo), headers={"content-type": "image/jpeg"})
        assert r.status_code == 404 and "art v1 is not a classifier (task image-to-image" in r.json()["error"]
        # OIP v2: uint8 pixels of any size in, the picture's float pixels out.
        pixels = np.asarray(photo.resize((40, 24)), np.uint8)[None]
        r = http.post("/v2/models/art/infer", json={"inputs": [{"name": "pixels", "datatype": "UINT8",
                                                                "shape": list(pixels.shape),
                                                                "data": pixels.reshape(-1).tolist()}]})
        assert r.status_code == 200, r.text
        image, rounded = r.json()["outputs"]
        assert image["name"] == "image" and image["shape"] == [1, 24, 40, 3] and image["datatype"] == "FP32"
        assert rounded["datatype"] == "UINT8" and rounded["data"] == np.rint(image["data"]).astype(int).tolist()
        # uint8 out: the rounded picture alone, a quarter of the float's bytes.
        r = http.post("/v2/models/art/infer", json={"inputs": [{"name": "pixels", "datatype": "UINT8",
                                                                "shape": list(pixels.shape),
                                                                "data": pixels.reshape(-1).tolist()}],
                                                    "outputs": [{"name": "image_uint8"}]})
        assert r.status_code == 200, r.text
        [out] = r.json()["outputs"]
        assert out["name"] == "image_uint8" and out["datatype"] == "UINT8" and out["shape"] == [1, 24, 40, 3]
        assert min(out["data"]) >= 0 and max(out["data"]) <= 255


def test_bad_input_is_refused_before_anything_is_written(tmp_path, photo_folder):
    r = tandem("train", "--data", photo_folder, "--out", tmp_path / "a", "--task", "stylize", "--teacher-effect",
               "oil", ok=False)
    assert r.returncode != 0 and "unknown --teacher-effect 'oil': use stylization, pencil, detail, edge-preserving, smooth" in r.stderr
    assert not (tmp_path / "a").exists()
    r = tandem("train", "--data", photo_folder, "--out", tmp_path / "a", "--task", "stylize", "--teacher-effect",
               "detail", "--workers", "2", ok=False)
    assert r.returncode != 0 and "--task stylize trains on one machine" in r.stderr and not (tmp_path / "a").exists()
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "readme.txt").write_text("no photos here")
    with pytest.raises(DataError, match="no photos in it or its sub-folders"):
        train_stylize(StylizeConfig(data=str(empty), out=tmp_path / "b", effect="detail"), show_progress=False)
    assert not (tmp_path / "b").exists()
    (empty / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (empty / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.raises(DataError, match="none of the 1 training photos can be read"):
        train_stylize(StylizeConfig(data=str(empty), out=tmp_path / "b", effect="detail"), show_progress=False)
    assert not (tmp_path / "b").exists()


def test_a_photo_that_cannot_be_read_is_left_out(tmp_path, photo_folder):
    folder = shutil.copytree(photo_folder / PEOPLE[0], tmp_path / "few")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    cfg = StylizeConfig(data=str(folder), out=tmp_path / "run", effect="edge-preserving", epochs=1, photo_size=32,
                        crop=16, batch_size=4)
    result = train_stylize(cfg, show_progress=False)
    dataset = json.loads((cfg.out / "dataset.json").read_text())
    assert result.train_images + result.held_out_images == 4
    assert "broken.jpg" not in dataset["train"] + dataset["held_out"]


def _style_picture(path: Path) -> Path:
    """A picture of bold diagonal colour strokes: a style anyone can see on a photo."""
    rng = np.random.default_rng(7)
    pixels = np.zeros((96, 96, 3), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    for colour in ((250, 200, 30), (30, 80, 220), (230, 60, 40)):
        pixels[((xx + yy + int(rng.integers(0, 12))) // 6) % 3 == len(np.unique(pixels)) % 3] = colour
    Image.fromarray(pixels).save(path)
    return path


def test_a_neural_style_is_learned_from_a_style_picture_exported_and_served(tmp_path, photo_folder, lfw_people):
    style = _style_picture(tmp_path / "strokes.png")
    out = tmp_path / "runs" / "strokes"
    summary = tandem_json("train", "--data", photo_folder, "--out", out, "--task", "stylize", "--style-image", style,
                          "--epochs", "1", "--photo-size", "64", "--crop", "32", "--batch-size", "4", "--no-progress")
    assert summary["best_val_style_loss"] > 0 and summary["best_val_content_loss"] >= 0
    assert summary["best_val_psnr_db"] is None
    history = json.loads((out / "history.json").read_text())
    assert {"val_loss", "val_style_loss", "val_content_loss"} <= set(history[0])
    with Image.open(out / "style.png") as kept:
        assert kept.size == (64, 64)  # the style at the photos' scale, kept by the run
    style.unlink()  # the run no longer needs the original: a resume and an export read its own copy
    resumed = tandem_json("train", "--data", photo_folder, "--out", out, "--task", "stylize", "--resume", "--epochs", "2",
                          "--photo-size", "64", "--crop", "32", "--batch-size", "4", "--no-progress")
    assert resumed["epochs"] == 2
    manifest = tandem_json("export", out, "--out", tmp_path / "bundle")
    art = manifest["apps"]["deepart"]
    assert manifest["name"] == "strokes" and art["effect"] == "neural-style" and art["style"] == "strokes"
    assert art["teacher"] is None and art["style_picture"] == "style.png" and "style.png" in manifest["files"]
    assert manifest["metrics"]["max_abs_onnx_torch"] <= 1e-3 and manifest["metrics"]["style_loss_fp32"] > 0
    assert ("int8" in manifest["models"]) == (art["int8"] == "kept")
    photo = np.array(Image.open(sorted((lfw_people / PEOPLE[1]).glob("*.jpg"))[0]).resize((50, 38)), np.uint8)[None]
    got = OnnxModel.open(Bundle.load(tmp_path / "bundle")).infer({"pixels": photo})["image"]
    model, _ = load_stylizer(out)
    with torch.no_grad():
        want = model(torch.from_numpy(photo)).numpy()
    assert got.shape == (1, 38, 50, 3) and np.abs(got - want).max() <= 1e-3


def test_before_after_pairs_are_learned_and_bad_pairs_refused(tmp_path, photo_folder):
    pairs = tmp_path / "sepia"
    for i, src in enumerate(sorted(photo_folder.rglob("*.jpg"))[:8]):
        with Image.open(src) as img:
            (pairs / "input").mkdir(parents=True, exist_ok=True)
            (pairs / "target").mkdir(parents=True, exist_ok=True)
            img.save(pairs / "input" / f"p{i}.jpg")
            ImageOps.colorize(ImageOps.grayscale(img), "#2b1a0e", "#f4e3c1").save(pairs / "target" / f"p{i}.png")
    out = tmp_path / "run"
    summary = tandem_json("train", "--data", pairs, "--out", out, "--task", "stylize", "--epochs", "1",
                          "--photo-size", "64", "--crop", "32", "--batch-size", "4", "--no-progress")
    assert summary["train_images"] + summary["held_out_images"] == 8 and 5 < summary["best_val_psnr_db"] < 100
    manifest = tandem_json("export", out, "--out", tmp_path / "bundle")
    assert manifest["apps"]["deepart"]["effect"] == "pairs" and "pairs:sepia" in manifest["apps"]["deepart"]["summary"]
    with np.load(out / "teacher.npz") as z:  # the targets are the pairs' own pictures, not an effect's
        assert z["teacher"].shape == (8, 64, 64, 3) and z["teacher"].std(axis=-1).mean() < 30  # sepia: near-grey

    (pairs / "target" / "p0.png").unlink()
    r = tandem("train", "--data", pairs, "--out", tmp_path / "bad", "--task", "stylize", ok=False)
    assert r.returncode != 0 and "1 input(s) without a target (e.g. p0.jpg)" in r.stderr and not (tmp_path / "bad").exists()
    with Image.open(pairs / "input" / "p0.jpg") as img:
        img.resize((30, 20)).save(pairs / "target" / "p0.png")
    r = tandem("train", "--data", pairs, "--out", tmp_path / "bad", "--task", "stylize", ok=False)
    assert r.returncode != 0 and "differ in size (input/p0.jpg is 250×250, target/p0.png 30×20" in r.stderr
    assert not (tmp_path / "bad").exists()


def test_a_style_picture_that_is_not_a_picture_writes_nothing(tmp_path, photo_folder):
    (tmp_path / "style.jpg").write_text("<html>not a picture</html>")
    r = tandem("train", "--data", photo_folder, "--out", tmp_path / "run", "--task", "stylize", "--style-image",
               tmp_path / "style.jpg", ok=False)
    assert r.returncode != 0 and "--style-image: " in r.stderr and not (tmp_path / "run").exists()
    r = tandem("train", "--data", photo_folder, "--out", tmp_path / "run", "--task", "stylize", "--style-image",
               tmp_path / "style.jpg", "--teacher-effect", "detail", ok=False)
    assert r.returncode != 0 and "give one of them" in r.stderr
    r = tandem("train", "--data", photo_folder, "--out", tmp_path / "run", "--task", "stylize", ok=False)
    assert r.returncode != 0 and "--style-image PICTURE, or --data DIR holding input/ and target/" in r.stderr


def test_the_device_sdk_paints_a_photo_at_its_own_size_on_the_device_and_in_the_cloud(tmp_path, bundle, lfw_people):
    from tandem.device import CloudClient, HybridModel
    from tandem.errors import ImageError

    with Image.open(sorted((lfw_people / PEOPLE[2]).glob("*.jpg"))[0]) as original:
        photo = original.resize((90, 60))
    device = HybridModel(bundle, policy="only_device")
    here = device.predict(photo)
    assert here.where == "device" and here.pixels().shape == (1, 60, 90, 3) and here.pixels().dtype == np.uint8
    assert len(here.pictures()) == 1 and np.array_equal(here.pictures()[0], here.pixels()[0])  # painted at its size
    with pytest.raises(ImageError, match="come in 2 sizes"):
        device.predict([photo, photo.resize((40, 30))])
    with pytest.raises(Exception, match="pixels\\(\\) is for image-to-image models"):
        here.pixels("nothing")
    settings = test_settings(tmp_path / "home")
    keys = populate(settings, [bundle], production=None)
    with running(settings) as server, CloudClient(server.url, "art", api_key=keys.predict) as cloud:
        there = HybridModel(bundle, cloud, policy="only_cloud").predict(photo)
    assert there.where == "cloud" and there.pixels().shape == (1, 60, 90, 3)
    assert np.abs(there.pixels().astype(int) - here.pixels()).max() <= 1  # the same network, either side
