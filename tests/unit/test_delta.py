"""Delta patches on real exported models: byte-identical rebuilds, small patches for small
changes, and refusals (never crashes) for wrong sources and damaged patches."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import zstandard
from onnx import numpy_helper

from tandem import delta
from tandem.apps.celebmatch.gallery import VIEWS, Gallery
from tandem.delta import format as tdp
from tandem.delta import tensors
from tandem.errors import ChecksumError, PatchError, TandemError
from tandem.export.onnx_export import export_onnx
from tandem.export.quantize import quantize_int8
from tandem.models.mobilenet import EmbeddingNet, NetConfig

SMALL = dict(width=0.5, embedding_dim=64, last_channels=128, stages=((1, 16, 1, 1), (4, 24, 2, 2), (4, 40, 2, 2)))
H, W = 48, 36
REPO = Path(__file__).resolve().parents[2]


def _export(net: EmbeddingNet, out: Path) -> tuple[bytes, bytes]:
    export_onnx(net.eval(), out / "model.onnx", H, W)
    calib = np.random.default_rng(0).integers(0, 256, (16, H, W, 3), dtype=np.uint8)
    quantize_int8(out / "model.onnx", out / "model.int8.onnx", calib)
    return (out / "model.onnx").read_bytes(), (out / "model.int8.onnx").read_bytes()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[bytes, bytes]]:
    """fp32 and int8 exports of: a network (v1), the same after a head-only fine-tune (head), and
    another training from scratch (retrain), all through Tandem's real exporter."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = EmbeddingNet(NetConfig(num_classes=6, **SMALL))
    for name in ("v1", "head", "retrain"):
        (root / name).mkdir()
    out = {"v1": _export(net, root / "v1")}
    with torch.no_grad():  # what training only the classifier changes: its weight and bias
        net.classifier.weight.add_(0.01 * torch.randn_like(net.classifier.weight))
        net.classifier.bias.add_(0.01 * torch.randn_like(net.classifier.bias))
    out["head"] = _export(net, root / "head")
    torch.manual_seed(1)
    out["retrain"] = _export(EmbeddingNet(NetConfig(num_classes=6, **SMALL)), root / "retrain")
    return out


def _roundtrip(old: bytes, new: bytes, kind: str = "onnx") -> bytes:
    patch = delta.diff(old, new, kind)
    rebuilt = delta.apply(old, patch)
    assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(new).hexdigest()
    return patch


def _changed_payload_bytes(old: bytes, new: bytes) -> int:
    before = {old[p.start:p.end] for p in tensors.payloads(old)}
    return sum(p.end - p.start for p in tensors.payloads(new) if new[p.start:p.end] not in before)


@pytest.mark.parametrize("precision", [0, 1], ids=["fp32", "int8"])
def test_a_head_only_fine_tune_costs_little_more_than_the_head(models, precision):
    old, new = models["v1"][precision], models["head"][precision]
    assert old != new
    patch = _roundtrip(old, new)
    changed = _changed_payload_bytes(old, new)
    # The exporter wrote every other tensor byte for byte as before, so they travel as references.
    assert 0 < changed < len(new) * 0.05
    # Little more than the head, and a small part of the file: under a tenth, as int8 keeps the classifier float
    # (export/quantize.py), which makes its 6x64 weights 1,536 bytes, 3.4% of this small model's int8 file.
    assert len(patch) < changed + 4096 and len(patch) < len(new) * 0.10
    assert delta.patch_kind(patch) == "onnx"


def test_changing_only_the_last_gemm_initializers_gives_a_tiny_patch(models):
    old = models["v1"][0]
    model = onnx.load_from_string(old)
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    inits = {i.name: i for i in model.graph.initializer}
    touched = [name for name in gemm.input if name in inits]
    assert touched, "the last Gemm reads its weights from initializers"
    for name in touched:
        x = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((x * 1.01).astype(x.dtype), name))
    new = model.SerializeToString()
    patch = _roundtrip(old, new)
    head_bytes = sum(numpy_helper.to_array(inits[n]).nbytes for n in touched)
    assert len(patch) < head_bytes + 4096
    assert len(patch) < len(new) * 0.05


@pytest.mark.parametrize("precision", [0, 1], ids=["fp32", "int8"])
def test_a_full_retrain_still_rebuilds_byte_for_byte(models, precision):
    old, new = models["v1"][precision], models["retrain"][precision]
    patch = _roundtrip(old, new)
    # Everything changed: the patch is the new tensors compressed, never much more than the file.
    assert len(patch) < len(new) * 1.02 + 1024


def test_an_unchanged_file_costs_a_few_bytes_per_tensor(models):
    old = models["v1"][0]
    patch = _roundtrip(old, old)
    assert len(patch) < 100 * len(tensors.payloads(old)) + 1024


def test_a_small_nudge_to_every_weight_is_sent_as_xor_and_shrinks(models):
    old = models["v1"][0]
    model = onnx.load_from_string(old)
    rng = np.random.default_rng(3)
    for init in model.graph.initializer:
        x = numpy_helper.to_array(init)
        if x.dtype == np.float32 and x.size >= 16:
            nudged = x * (1 + rng.normal(0, 1e-4, x.shape))
            init.CopyFrom(numpy_helper.from_array(nudged.astype(np.float32), init.name))
    new = model.SerializeToString()
    patch = _roundtrip(old, new)
    assert len(patch) < 0.8 * _changed_payload_bytes(old, new)


def _gallery(names: list[str], seed: int, rows: dict[int, int] | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    vectors = {v: rng.normal(size=(len(names), 128)).astype(np.float32) for v in VIEWS}
    for row, other_seed in (rows or {}).items():  # re-enrol some identities from other photos
        other = np.random.default_rng(other_seed)
        for v in VIEWS:
            vectors[v][row] = other.normal(size=128)
    centers = {v: np.zeros(128, np.float32) for v in VIEWS}
    return Gallery(names, np.full(len(names), 5), vectors, centers).to_bytes()


def test_a_gallery_with_one_identity_re_enrolled_costs_about_that_identity():
    names = [f"person_{i:03d}" for i in range(150)]
    old, new = _gallery(names, 0), _gallery(names, 0, rows={17: 99})
    patch = _roundtrip(old, new, "bytes")
    one_identity = len(VIEWS) * 128 * 4
    assert len(patch) < 2 * one_identity + 2048
    assert len(patch) < len(new) * 0.05
    assert delta.patch_kind(patch) == "bytes"


def test_a_gallery_with_new_identities_rebuilds_byte_for_byte():
    names = [f"person_{i:03d}" for i in range(40)]
    _roundtrip(_gallery(names, 0), _gallery([*names, "newcomer_a", "newcomer_b"], 0), "bytes")


def test_onnx_kind_on_a_file_that_is_not_onnx_falls_back_to_bytes():
    old = b"\xff\xfe not a protobuf" * 100
    patch = _roundtrip(old, old + b"tail", "onnx")
    assert delta.patch_kind(patch) == "bytes"


def test_empty_files_and_unknown_kinds():
    _roundtrip(b"", b"")
    _roundtrip(b"", b"new")
    _roundtrip(b"old", b"")
    with pytest.raises(ValueError, match="'onnx' or 'bytes'"):
        delta.diff(b"a", b"b", "zip")


def test_a_patch_for_another_source_is_refused(models):
    v1, head, retrain = models["v1"][0], models["head"][0], models["retrain"][0]
    patch = delta.diff(v1, head, "onnx")
    with pytest.raises(ChecksumError, match="download the full file"):
        delta.apply(retrain, patch)
    with pytest.raises(ChecksumError, match="not to the installed"):
        delta.apply(v1[:-1], patch)


def test_a_patch_whose_result_misses_its_hash_is_refused(models):
    v1, head = models["v1"][0], models["head"][0]
    patch = bytearray(delta.diff(v1, head, "onnx"))
    patch[56:88] = hashlib.sha256(b"something else").digest()  # the target sha256 in the header
    with pytest.raises(ChecksumError, match="the patch is corrupt"):
        delta.apply(v1, bytes(patch))


def test_damaged_patches_raise_patch_errors_never_crash(models):
    old, new = models["v1"][1], models["head"][1]
    patch = delta.diff(old, new, "onnx")
    rng = np.random.default_rng(0)
    cuts = [*sorted({int(c) for c in rng.integers(0, len(patch), 60)}), 0, 3, tdp.HEADER_SIZE, len(patch) - 1]
    for cut in cuts:
        with pytest.raises(TandemError):
            delta.apply(old, patch[:cut])
    for _ in range(300):
        damaged = bytearray(patch)
        for pos in rng.integers(0, len(patch), int(rng.integers(1, 4))):
            damaged[pos] ^= int(rng.integers(1, 256))
        try:
            out = delta.apply(old, bytes(damaged))
        except (PatchError, ChecksumError):
            continue
        assert out == new  # a flip zstd never reads (e.g. in padding) may still rebuild the file exactly
    with pytest.raises(PatchError, match="unexpected bytes"):
        delta.apply(old, patch + b"\0")
    with pytest.raises(PatchError, match="not a Tandem delta patch"):
        delta.apply(old, b"PK\x03\x04" + patch[4:])


def _header(kind: int, old: bytes, target_size: int, target_sha: bytes = b"\0" * 32) -> bytes:
    return tdp.Header(kind, len(old), hashlib.sha256(old).digest(), target_size, target_sha).pack()


def test_declared_sizes_are_capped_before_anything_is_allocated():
    old = b"x" * 100
    with pytest.raises(PatchError, match="over the"):
        delta.apply(old, _header(tdp.KIND_BYTES, old, 1 << 40))
    with pytest.raises(PatchError, match="over the 50-byte limit"):
        delta.apply(old, _header(tdp.KIND_BYTES, old, 60), max_size=50)
    section = struct.pack("<QQ", 1 << 40, 10) + b"\0" * 10
    with pytest.raises(PatchError, match="over the 1000-byte limit"):
        delta.apply(old, _header(tdp.KIND_BYTES, old, 1000) + section)


def test_a_compression_bomb_stops_at_the_declared_length():
    old = b"x" * 100
    small_window = zstandard.ZstdCompressionParameters.from_level(3, window_log=17)
    bomb = zstandard.ZstdCompressor(compression_params=small_window).compress(b"\0" * (64 << 20))  # 64 MiB in KBs
    assert len(bomb) < 1 << 16
    patch = _header(tdp.KIND_BYTES, old, 1000) + struct.pack("<QQ", 1000, len(bomb)) + bomb
    with pytest.raises(PatchError, match="decompresses to more than 1000 bytes"):
        delta.apply(old, patch)


def test_an_op_list_that_names_a_missing_tensor_is_refused(models):
    old = models["v1"][0]
    ops = struct.pack("<BH", tensors.OP_COPY, 7) + b"missing" + b"\0" * 32
    patch = (_header(tdp.KIND_ONNX, old, 100) + tdp.section(ops) + tdp.section(b"") + tdp.section(b""))
    with pytest.raises(PatchError, match="that the source model does not have"):
        delta.apply(old, patch)
    bad_op = _header(tdp.KIND_ONNX, old, 100) + tdp.section(b"\x09") + tdp.section(b"") + tdp.section(b"")
    with pytest.raises(PatchError, match="unknown op 9"):
        delta.apply(old, bad_op)
    greedy = struct.pack("<BQ", tensors.OP_LITERAL, 50)
    short = _header(tdp.KIND_ONNX, old, 100) + tdp.section(greedy) + tdp.section(b"abc") + tdp.section(b"")
    with pytest.raises(PatchError, match="more between-tensor bytes than it carries"):
        delta.apply(old, short)


def test_apply_needs_neither_onnx_nor_torch(models, tmp_path):
    old, new = models["v1"][0], models["head"][0]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "patch").write_bytes(delta.diff(old, new, "onnx"))
    code = (
        "import sys, hashlib, pathlib\n"
        "from tandem import delta\n"
        f"d = pathlib.Path({str(tmp_path)!r})\n"
        "out = delta.apply((d / 'old').read_bytes(), (d / 'patch').read_bytes())\n"
        "print(hashlib.sha256(out).hexdigest(), 'onnx' in sys.modules, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert proc.stdout.split() == [hashlib.sha256(new).hexdigest(), "False", "False"]
