import json

import pytest

from tandem.bundle import SCHEMA_VERSION, Bundle, Manifest, TensorSpec, write_manifest
from tandem.bundle.preprocess import NormalizeSpec, PreprocessSpec
from tandem.errors import BundleError


def manifest(**kw) -> Manifest:
    base = dict(
        name="faces",
        inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[-1, 100, 75, 3])],
        outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2]),
                 TensorSpec(name="embedding", dtype="float32", shape=[-1, 8])],
        preprocessing=PreprocessSpec(height=100, width=75, normalize_in_graph=NormalizeSpec(mean=(0.5,) * 3, std=(0.2,) * 3)),
        labels=["a", "b"],
        models={"fp32": "model.onnx", "int8": "model.int8.onnx"},
    )
    base.update(kw)
    return Manifest(**base)


@pytest.fixture()
def bundle_dir(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    (root / "model.onnx").write_bytes(b"fp32 model bytes" * 100)
    (root / "model.int8.onnx").write_bytes(b"int8" * 50)
    (root / "extra").mkdir()
    (root / "extra" / "gallery.npz").write_bytes(b"gallery")
    write_manifest(root, manifest())
    return root


def test_write_then_load_round_trips_and_hashes_every_file(bundle_dir):
    b = Bundle.load(bundle_dir)
    assert set(b.manifest.files) == {"model.onnx", "model.int8.onnx", "extra/gallery.npz"}
    assert b.manifest.files["model.onnx"].size == 1600
    # Without variants a bundle is written as schema 2, which Tandems before schema 3 read too.
    assert b.manifest.schema_version == 2 < SCHEMA_VERSION
    assert b.model_path("int8") == (bundle_dir / "model.int8.onnx").resolve()
    assert b.total_bytes == 1600 + 200 + 7


def test_missing_file_is_refused_by_name(bundle_dir):
    (bundle_dir / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.int8\.onnx is missing"):
        Bundle.load(bundle_dir)


def test_changed_file_is_refused(bundle_dir):
    (bundle_dir / "model.onnx").write_bytes(b"X" * 1600)  # same size, other bytes
    with pytest.raises(BundleError, match=r"model\.onnx has sha256 .* the file was changed"):
        Bundle.load(bundle_dir)


def test_truncated_file_is_refused(bundle_dir):
    data = (bundle_dir / "model.onnx").read_bytes()
    (bundle_dir / "model.onnx").write_bytes(data[:100])
    with pytest.raises(BundleError, match="truncated"):
        Bundle.load(bundle_dir)


def test_other_schema_version_is_refused(bundle_dir):
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=f"schema_version {SCHEMA_VERSION + 1}"):
        Bundle.load(bundle_dir)


def test_a_schema_1_bundle_still_loads(bundle_dir):
    """Bundles written before face embeddings (schema 1, image classification) load as they were."""
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    raw["schema_version"] = 1
    raw.pop("task", None)
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    b = Bundle.load(bundle_dir)
    assert b.manifest.schema_version == 1 and b.manifest.task == "image-classification"
    raw["schema_version"] = True  # JSON true is no schema number, though Python counts it as 1
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema_version True"):
        Bundle.load(bundle_dir)


def test_bad_json_missing_manifest_and_missing_folder(bundle_dir, tmp_path):
    (bundle_dir / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(bundle_dir)
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        Bundle.load(bundle_dir)
    with pytest.raises(BundleError, match="no such bundle folder"):
        Bundle.load(tmp_path / "nowhere")


def test_invalid_field_is_reported(bundle_dir):
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    raw["inputs"][0]["dtype"] = "complex128"
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="invalid manifest"):
        Bundle.load(bundle_dir)


def test_model_not_listed_and_paths_outside_are_refused(bundle_dir):
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    raw["models"]["int8"] = "other.onnx"
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="not listed"):
        Bundle.load(bundle_dir)
    raw["models"]["int8"] = "model.int8.onnx"
    raw["files"]["../outside"] = raw["files"]["model.onnx"]
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.load(bundle_dir)


def test_editing_replaces_the_bundle_only_when_the_edit_completes(bundle_dir):
    from tandem import atomic
    from tandem.bundle import editing

    b = Bundle.load(bundle_dir)
    with pytest.raises(RuntimeError), editing(b) as stage:
        atomic.write_bytes(stage / "model.onnx", b"half-written")
        raise RuntimeError("crash before the manifest")
    assert Bundle.load(bundle_dir).manifest.files == b.manifest.files  # untouched, still verifies

    with editing(b) as stage:
        atomic.write_bytes(stage / "notes.txt", b"hello")
        write_manifest(stage, b.manifest)
    b2 = Bundle.load(bundle_dir)
    assert "notes.txt" in b2.manifest.files
    assert (bundle_dir / "model.onnx").read_bytes() == b"fp32 model bytes" * 100


@pytest.mark.parametrize("change, message", [
    ({"models": {"int8": "model.int8.onnx"}}, "fp32 model"),
    ({"inputs": []}, "exactly one input"),
    ({"outputs": []}, "an image-classification bundle gives at least one output"),
    ({"outputs": [TensorSpec(name="embedding", dtype="float32", shape=[-1, 8])] * 2},
     r"outputs must have distinct names, found \['embedding', 'embedding'\]"),
    ({"schema_version": 1, "task": "face-embedding"}, "schema_version 1 knows only image-classification"),
    ({"metrics": {"test_top1_fp32": float("nan")}}, "finite"),
])
def test_manifest_enforces_the_specs_musts(change, message):
    with pytest.raises(ValueError, match=message):
        manifest(**change)
