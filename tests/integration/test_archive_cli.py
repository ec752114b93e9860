"""`tandem pack` and `tandem push X.tandem` in subprocesses: a bundle travels as one file, and an
archive that tries to write outside its folder is refused with nothing pushed."""

from __future__ import annotations

import zipfile

import pytest

from tandem.errors import BundleError
from tests.integration.cli import tandem, tandem_json
from tests.integration.registry_backends import Backend, make_bundle

pytestmark = pytest.mark.integration


def test_pack_then_push_the_archive(tmp_path):
    env = Backend("sqlite", tmp_path / "home", None).env()
    bundle = make_bundle(tmp_path / "faces", seed=b"one")
    out = tandem("pack", bundle, env=env).stdout
    archive = tmp_path / "faces.tandem"
    assert archive.is_file() and "tandem push" in out
    pushed = tandem_json("push", archive, env=env)
    assert (pushed["name"], pushed["version"]) == ("faces", 1)
    again = tandem_json("pack", bundle, "--out", tmp_path / "again.tandem", env=env)
    assert again["archive"] == str(tmp_path / "again.tandem") and again["name"] == "faces"
    assert again["size"] == archive.stat().st_size and len(again["sha256"]) == 64  # the same bytes again

    slip = tmp_path / "slip.tandem"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(slip, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("../escaped", b"outside")
    refused = tandem("push", slip, env=env, ok=False)
    assert refused.returncode == BundleError.exit_code and "not a plain relative path" in refused.stderr
    assert not (tmp_path / "escaped").exists()
    assert [v["version"] for v in tandem_json("versions", "faces", env=env)] == [1]
