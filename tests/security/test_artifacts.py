"""Hostile bundles and archives pushed with the real `tandem push` (issue 14, section 3): manifest paths
that are not plain (``..``, ``.``, absolute, backslashes, case-folded duplicates, a file that is a
folder) and archives whose zip headers lie about sizes are refused, and nothing of them is stored."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tandem.bundle.archive import pack
from tandem.errors import BundleError
from tests.integration.cli import tandem, tandem_json
from tests.security.target import environment

pytestmark = [pytest.mark.integration, pytest.mark.redteam("artifacts")]


def listing(bundle: Path, change) -> Path:
    """``bundle`` with its manifest's file list changed by ``change(files, root)`` (the files on disk
    made to match, so that the bundle itself verifies)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest["files"], bundle)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _alias(to: str, make_file: bool = False):
    def change(files: dict, root: Path) -> None:
        files[to] = dict(files["model.onnx"])
        if make_file:
            target = root / to
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / "model.onnx", target)
    return change


BAD = {
    "dot-dot": (_alias("gallery/../model.onnx"), "'..' part"),
    "dot": (_alias("./model.onnx"), "'.' or '..' part"),
    "absolute": (_alias("/etc/hostname"), "outside the bundle|not a relative path"),
    "backslash": (_alias("sub\\model.onnx", make_file=True), "not a relative path"),
    "case-duplicate": (_alias("MODEL.onnx", make_file=True), "folds case"),
    "file-and-folder": (_alias("model.onnx/inner", make_file=False), "also a folder|not a usable path|missing"),
}


@pytest.fixture()
def registry_env(tmp_path) -> dict[str, str]:
    return environment(tmp_path / "home")


def stored(env: dict[str, str]) -> list[Path]:
    objects = Path(env["TANDEM_HOME"]) / "objects"
    return [p for p in objects.rglob("*") if p.is_file()] if objects.exists() else []


@pytest.mark.parametrize("case", list(BAD))
def test_push_refuses_a_manifest_path_that_is_not_plain(tiny_bundles, tmp_path, registry_env, case):
    change, words = BAD[case]
    bundle = listing(shutil.copytree(tiny_bundles["v1"], tmp_path / "bundle"), change)
    refused = tandem("push", bundle, env=registry_env, ok=False)
    assert refused.returncode == BundleError.exit_code, refused.stderr
    assert any(w in refused.stderr for w in words.split("|")), refused.stderr
    assert stored(registry_env) == []  # nothing of it kept


def lying(archive: Path, out: Path, claims: dict[str, int]) -> Path:
    """A copy of ``archive`` whose central directory claims ``claims`` (uncompressed sizes) for some entries."""
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.filename in claims:
                at = raw.find(b"PK\x01\x02")
                while raw[at + 46:at + 46 + len(info.filename)] != info.filename.encode():
                    at = raw.find(b"PK\x01\x02", at + 4)
                raw[at + 24:at + 28] = claims[info.filename].to_bytes(4, "little")
    out.write_bytes(bytes(raw))
    return out


def test_an_archive_claiming_more_than_its_manifest_is_refused_before_writing(tiny_bundles, tmp_path, registry_env):
    archive = pack(tiny_bundles["v1"], tmp_path / "faces.tandem")
    liar = lying(archive, tmp_path / "liar.tandem", {"model.onnx": 3_000_000_000})
    refused = tandem("push", liar, env=registry_env, ok=False)
    assert refused.returncode == BundleError.exit_code
    assert "says it holds 3,000,000,000 bytes, its manifest says" in refused.stderr, refused.stderr
    assert stored(registry_env) == []


def test_an_archive_member_longer_than_its_manifest_says_is_cut_off(tiny_bundles, tmp_path, registry_env):
    """Zip and manifest agree on 100 bytes; the entry holds more. Extraction stops at 100 (and the
    bundle is refused): what the zip's data would give is never believed."""
    bundle = shutil.copytree(tiny_bundles["v1"], tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["size"] = 100
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    archive = tmp_path / "long.tandem"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("manifest.json", *[n for n in manifest["files"] if n != "manifest.json"]):
            zf.write(bundle / name, name)
    liar = lying(archive, tmp_path / "liar.tandem", {"model.onnx": 100})
    refused = tandem("push", liar, env=registry_env, ok=False)
    assert refused.returncode == BundleError.exit_code, refused.stderr
    assert stored(registry_env) == []


def test_a_plain_bundle_and_archive_still_push(tiny_bundles, tmp_path, registry_env):
    assert tandem_json("push", tiny_bundles["v1"], env=registry_env)["version"] == 1
    archive = pack(tiny_bundles["v2"], tmp_path / "v2.tandem")
    assert tandem_json("push", archive, env=registry_env)["version"] == 2
