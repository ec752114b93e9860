"""POST /v1/trainings refuses bad input with a clear 400 (413, 415, 404) before anything is stored and
before any job is submitted: the server here names a Ray job API that does not answer, so a request
that got as far as submitting would get 503 instead. (The real cluster: test_managed_training.py.)"""

from __future__ import annotations

import io
import json
import random
import stat
import tarfile
import zipfile

import pytest

from tandem.registry.registry import Registry
from tandem.testing.processes import free_port
from tests.conftest import write_png
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> bytes:
    return write_png(tmp_path_factory.mktemp("png") / "x.png", 20, 16).read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = test_settings(tmp_path_factory.mktemp("home"), ray_jobs_address=f"http://127.0.0.1:{free_port()}",
                             training_max_dataset_bytes=LIMIT)
    keys = populate(settings, [], production=None)
    with running(settings) as server:
        yield server, keys


def _zip(entries: dict[str, bytes], links: tuple[str, ...] = (), deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            kind = stat.S_IFLNK | 0o777 if name in links else stat.S_IFDIR | 0o755 if name.endswith("/") else stat.S_IFREG | 0o644
            info.external_attr = kind << 16
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            zf.writestr(info, data)
    return buf.getvalue()


def _stored(server) -> set[str]:
    with Registry.open(server.settings) as reg:
        return {o.sha256 for o in reg.store.objects()}


def test_bad_archives_get_a_clear_400_and_nothing_is_stored(served, png):
    server, keys = served
    good = {"a/1.png": png, "b/1.png": png}
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        for name, data in good.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("b/evil.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    cases = {
        "traversal": (_zip({**good, "../../evil.png": png}), "is not a plain relative path inside the dataset"),
        "symlink (zip)": (_zip({**good, "a/evil.png": b"/etc/passwd"}, links=("a/evil.png",)),
                          "'a/evil.png' is not a regular file (a link or a device)"),
        "symlink (tar)": (tar.getvalue(), "'b/evil.png' is not a regular file (a link or a device)"),
        "bomb": (_zip({**good, "b/2.png": b"\0" * (4 << 20)}, deflate=True), "a zip bomb, not a photo"),
        # Sent compressed 2:1 (no bomb), so the upload fits the limit and what it unpacks to does not.
        "unpacks too large": (_zip({**good, "b/2.png": png[:16] + bytes(random.Random(0).randrange(16)
                                                                         for _ in range(400_000))}, deflate=True),
                              "unpacks to more than 262,144 bytes"),
        "non-image": (_zip({**good, "a/fake.jpg": b"#!/bin/sh\nrm -rf /\n"}), "its bytes are not JPEG, PNG"),
        "other file": (_zip({**good, "a/readme.txt": b"hi"}), "'a/readme.txt' is not a photo"),
        "one class": (_zip({"a/1.png": png, "a/2.png": png}), "needs at least 2 classes; the archive holds only 'a'"),
        "empty class": (_zip({**good, "c/": b""}), "class folder(s) 'c' hold no photos"),
        "not an archive": (b"GIF89a not an archive at all", "neither a zip nor a tar archive"),
    }
    before = _stored(server)
    with server.client(keys.train) as c:
        for case, (body, message) in cases.items():
            r = c.post("/v1/trainings", params={"name": "faces", "epochs": 1}, content=body,
                       headers={"content-type": "application/zip"})
            assert r.status_code == 400, (case, r.status_code, r.text)
            assert message in r.json()["error"], (case, r.text)
    assert _stored(server) == before  # no archive of them was kept
    assert not list((server.settings.home / "uploads").iterdir())  # nor any upload's temporary file


def test_the_spec_and_the_body_are_checked_before_the_upload_is_read(served, png):
    server, keys = served
    body = _zip({"a/1.png": png, "b/1.png": png})
    with server.client(keys.train) as c:
        for params, message in (({"name": "bad/name"}, "model name 'bad/name' is not one"),
                                ({"name": "faces", "alias": "Prod"}, "alias 'Prod' is not a valid alias name"),
                                ({"name": "faces", "epochs": "lots"}, "epochs='lots' is not an integer"),
                                ({"name": "faces", "task": "stylize"}, "managed training runs classify"),
                                ({"epochs": "2"}, "needs a name"),
                                ({"name": "faces", "wrkers": "2"}, "unknown training field 'wrkers'")):
            r = c.post("/v1/trainings", params=params, content=body, headers={"content-type": "application/zip"})
            assert r.status_code == 400 and message in r.json()["error"], (params, r.text)
        big = c.post("/v1/trainings", params={"name": "faces"}, content=b"x" * (LIMIT + 1),
                     headers={"content-type": "application/zip"})
        assert big.status_code == 413 and "TANDEM_TRAINING_MAX_DATASET_BYTES" in big.json()["error"]
        r = c.post("/v1/trainings", params={"name": "faces"}, content=body, headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "application/zip" in r.json()["error"]
        r = c.post("/v1/trainings", json={"dataset": "0" * 64, "name": "faces"})
        assert r.status_code == 404 and "no dataset" in r.json()["error"]
        r = c.post("/v1/trainings", json={"dataset": "../../etc", "name": "faces"})
        assert r.status_code == 400 and "is not a sha256" in r.json()["error"]
        with Registry.open(server.settings) as reg:  # a stored object that is no dataset: checked like an upload
            onnx = reg.store.put_bytes(b"\x08\x07not a dataset")
        r = c.post("/v1/trainings", json={"dataset": onnx, "name": "faces"})
        assert r.status_code == 400 and "neither a zip nor a tar archive" in r.json()["error"]
        # Everything right: the archive is stored, and only then is Ray asked (which does not answer here).
        r = c.post("/v1/trainings", params={"name": "faces"}, content=body, headers={"content-type": "application/zip"})
        assert r.status_code == 503 and "Ray's job API at http://127.0.0.1:" in r.json()["error"], r.text
        assert r.headers["retry-after"]
        r = c.get("/v1/trainings/tandem-train-0123456789abcdef")
        assert r.status_code == 503 and "does not answer" in r.json()["error"]
        assert c.get("/v1/trainings/raysubmit_1234").status_code == 404


def test_a_predict_key_may_not_train_and_training_off_says_how_to_turn_it_on(tmp_path, served, png):
    server, keys = served
    with server.client(keys.predict) as c:
        r = c.post("/v1/trainings", params={"name": "faces"}, content=b"x", headers={"content-type": "application/zip"})
        assert r.status_code == 403 and "scope 'train'" in r.json()["error"]
    settings = test_settings(tmp_path / "home")  # no TANDEM_RAY_JOBS_ADDRESS
    off_keys = populate(settings, [], production=None)
    with running(settings) as off, off.client(off_keys.train) as c:
        r = c.post("/v1/trainings", params={"name": "faces"}, content=_zip({"a/1.png": png, "b/1.png": png}),
                   headers={"content-type": "application/zip"})
        assert r.status_code == 404 and "set TANDEM_RAY_JOBS_ADDRESS" in r.json()["error"]
        r = c.get("/v1/trainings/tandem-train-0123456789abcdef")
        assert r.status_code == 404 and "TANDEM_RAY_JOBS_ADDRESS is unset" in r.json()["error"]
        doc = c.get("/openapi.json", headers={"authorization": f"Bearer {off_keys.admin}"}).json()
        assert {"post"} <= set(doc["paths"]["/v1/trainings"]) and "delete" in doc["paths"]["/v1/trainings/{id}"]
        assert json.dumps(doc)  # serialisable as served
