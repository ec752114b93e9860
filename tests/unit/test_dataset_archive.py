"""Dataset archives for managed training (tandem/data/archive.py): every kind of bad archive is refused
with a message that says what is wrong, before anything is written; good ones unpack to class folders.
And the training spec and event lines of protocol/training.py."""

from __future__ import annotations

import hashlib
import io
import math
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from tandem.data.archive import Limits, extract_dataset, inspect_dataset, pack_dataset
from tandem.errors import DataError, InvalidRequest
from tandem.protocol.training import (
    TrainingSpec,
    event_line,
    is_training_id,
    new_training_id,
    parse_event,
    sse_events,
    sse_frame,
)
from tests.conftest import write_png


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> bytes:
    return write_png(tmp_path_factory.mktemp("png") / "x.png", 20, 16).read_bytes()


def _zip(path: Path, entries: dict[str, bytes | None], deflate: bool = False) -> Path:
    """A zip of ``entries`` (None: a folder entry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name" on the duplicates case
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
            for name, data in entries.items():
                if data is None:
                    zf.writestr(zipfile.ZipInfo(name if name.endswith("/") else name + "/"), b"")
                else:
                    zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _good(png: bytes) -> dict[str, bytes | None]:
    return {"faces/a/1.png": png, "faces/a/2.png": png, "faces/b/1.png": png}


def refused(path: Path, limits: Limits | None = None) -> str:
    with pytest.raises(DataError) as e:
        inspect_dataset(path, limits or Limits())
    assert e.value.status_code == 400
    return str(e.value)


def test_a_good_zip_and_tar_unpack_to_class_folders(tmp_path, png):
    z = _zip(tmp_path / "d.zip", {**_good(png), "faces/.DS_Store": b"x", "__MACOSX/faces/._1.png": b"x"})
    summary = inspect_dataset(z)
    assert summary.format == "zip" and summary.classes == {"a": 2, "b": 1} and summary.images == 3
    extract_dataset(z, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "a/1.png", "a/2.png", "b/1.png"]
    assert (tmp_path / "out" / "a" / "1.png").read_bytes() == png
    t = _tar(tmp_path / "d.tgz", [(_file("./a/1.png"), png), (_file("./b/1.jpg"), png)], "w:gz")
    assert extract_dataset(t, tmp_path / "out2").classes == {"a": 1, "b": 1}
    assert (tmp_path / "out2" / "b" / "1.jpg").read_bytes() == png


def test_packing_a_folder_gives_the_same_bytes_every_time(tmp_path, png):
    for cls, n in (("cats", 2), ("dogs", 3)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "data" / cls / f"{i}.png").write_bytes(png)
    (tmp_path / "data" / "cats" / "notes.txt").write_text("not a photo")  # left out, as `tandem train` leaves it
    one = pack_dataset(tmp_path / "data", tmp_path / "one.zip")
    pack_dataset(tmp_path / "data", tmp_path / "two.zip")
    assert one.classes == {"cats": 2, "dogs": 3}
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("one.zip", "two.zip")]
    assert digest[0] == digest[1]
    assert inspect_dataset(tmp_path / "one.zip").classes == {"cats": 2, "dogs": 3}


@pytest.mark.parametrize("name", ["../evil.png", "faces/../../evil.png", "/etc/evil.png", "a\\..\\evil.png",
                                  "C:/evil.png", "a//b.png"])
def test_traversal_is_refused(tmp_path, png, name):
    message = refused(_zip(tmp_path / "d.zip", {**_good(png), name: png}))
    assert "is not a plain relative path inside the dataset" in message, message
    message = refused(_tar(tmp_path / "d.tar", [(_file("a/1.png"), png), (_file("b/1.png"), png),
                                                 (_file(name), png)]))
    assert "is not a plain relative path inside the dataset" in message, message


def test_links_and_devices_are_refused(tmp_path, png):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for name, data in _good(png).items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("faces/a/evil.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert "'faces/a/evil.png' is not a regular file (a link or a device)" in refused(z)
    for kind, target in ((tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "a/1.png"), (tarfile.CHRTYPE, "")):
        t = _tar(tmp_path / f"{kind!r}.tar", [(_file("a/1.png"), png), (_file("b/1.png"), png),
                                              (_file("b/evil.png", kind, target), None)])
        assert "'b/evil.png' is not a regular file (a link or a device)" in refused(t)


def test_bombs_and_oversized_archives_are_refused_before_anything_is_written(tmp_path, png):
    bomb = _zip(tmp_path / "bomb.zip", {**_good(png), "faces/b/huge.png": b"\0" * (8 << 20)}, deflate=True)
    assert bomb.stat().st_size < 100_000
    message = refused(bomb)
    assert "'faces/b/huge.png' inflates from" in message and "a zip bomb, not a photo" in message
    with pytest.raises(DataError):
        extract_dataset(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    assert "unpacks to more than 1,000 bytes" in refused(_zip(tmp_path / "d.zip", _good(png)), Limits(max_bytes=1000))
    assert "over this server's limit of 2" in refused(_zip(tmp_path / "d.zip", _good(png)), Limits(max_entries=2))
    tar_bomb = _tar(tmp_path / "b.tar.gz", [(_file("a/1.png"), png), (_file("b/1.png"), b"\0" * (4 << 20))], "w:gz")
    assert "unpacks to more than" in refused(tar_bomb, Limits(max_bytes=1 << 20))


def test_what_is_not_a_photo_is_refused(tmp_path, png):
    message = refused(_zip(tmp_path / "d.zip", {**_good(png), "faces/a/notes.txt": b"hello"}))
    assert "'faces/a/notes.txt' is not a photo" in message
    message = refused(_zip(tmp_path / "d.zip", {**_good(png), "faces/a/fake.jpg": b"<html>not a jpeg</html>"}))
    assert "'faces/a/fake.jpg' is named like a photo but its bytes are not JPEG, PNG, BMP or WebP" in message
    message = refused(_zip(tmp_path / "d.zip", {**_good(png), "faces/a/sub/1.png": png}))
    assert "is in a sub-folder of class 'a'" in message
    message = refused(_zip(tmp_path / "d.zip", {"a/1.png": png, "b/1.png": png, "cover.png": png}))
    assert "'cover.png' lies outside any class folder" in message


def test_one_class_or_an_empty_class_is_refused(tmp_path, png):
    message = refused(_zip(tmp_path / "d.zip", {"faces/a/1.png": png, "faces/a/2.png": png}))
    assert "a classifier needs at least 2 classes; the archive holds only 'a'" in message
    message = refused(_zip(tmp_path / "d.zip", {**_good(png), "faces/c/": None}))
    assert "class folder(s) 'c' hold no photos" in message
    message = refused(_tar(tmp_path / "d.tar", [(_file("a/1.png"), png), (_file("b/1.png"), png),
                                                 (_file("c", tarfile.DIRTYPE), None)]))
    assert "class folder(s) 'c' hold no photos" in message
    assert "the archive holds no photos" in refused(_zip(tmp_path / "e.zip", {"a/": None}))


def test_damaged_and_odd_archives_are_refused(tmp_path, png):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is neither a zip nor a tar archive" * 20)
    assert "neither a zip nor a tar archive" in refused(junk)
    (tmp_path / "empty.zip").write_bytes(b"")
    assert "neither a zip nor a tar archive" in refused(tmp_path / "empty.zip")
    good = _zip(tmp_path / "d.zip", _good(png)).read_bytes()
    (tmp_path / "cut.zip").write_bytes(good[: len(good) // 2])
    refused(tmp_path / "cut.zip")
    twice = _zip(tmp_path / "twice.zip", _good(png))
    with warnings.catch_warnings(), zipfile.ZipFile(twice, "a") as zf:
        warnings.simplefilter("ignore", UserWarning)
        zf.writestr("faces/a/1.png", png)
    assert "'faces/a/1.png' appears twice" in refused(twice)
    clash = _zip(tmp_path / "clash.zip", {"a/1.png": png, "b/1.png": png, "b/1.png/x.png": png})
    assert "is both a file and a folder" in refused(clash)


def test_extraction_refuses_an_existing_folder(tmp_path, png):
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="already exists"):
        extract_dataset(_zip(tmp_path / "d.zip", _good(png)), tmp_path / "out")


# --- the training spec, events and server-sent events -----------------------------------------


def test_the_spec_takes_json_or_a_query_string_and_checks_both():
    spec = TrainingSpec.from_json({"name": "faces", "alias": "production", "epochs": 3, "subset": 0.5, "lr": 1})
    assert (spec.epochs, spec.subset, spec.lr, spec.workers, spec.device) == (3, 0.5, 1.0, 1, "cpu")
    assert TrainingSpec.from_query({"name": "faces", "epochs": "3", "gpus": "1"}).device == "cuda"
    assert TrainingSpec.from_json(spec.to_json()) == spec
    cases = {
        "unknown training field 'epoch'": {"name": "f", "epoch": 3},
        "needs a name": {"epochs": 3},
        "epochs must be an integer": {"name": "f", "epochs": "3"},
        "workers must be an integer, got True": {"name": "f", "workers": True},
        "subset is the fraction of each class": {"name": "f", "subset": 0},
        "epochs must be from 1 to 10000": {"name": "f", "epochs": 0},
        "val_fraction must be from 0 to 0.5": {"name": "f", "val_fraction": 0.9},
        "managed training runs classify": {"name": "f", "task": "stylize"},
        "too small for 4 workers": {"name": "f", "workers": 4, "batch_size": 6},
        "name must be 1-64 characters": {"name": "x" * 65},
        "must be a JSON object": ["faces"],
    }
    for message, body in cases.items():
        with pytest.raises(InvalidRequest, match=message):
            TrainingSpec.from_json(body)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="epochs='many' is not an integer"):
        TrainingSpec.from_query({"name": "f", "epochs": "many"})
    with pytest.raises(InvalidRequest, match="lr must be above 0"):
        TrainingSpec.from_query({"name": "f", "lr": "nan"})
    assert TrainingSpec.from_json({"name": "f", "dataset": "x"}, ignore=("dataset",)).name == "f"


def test_event_lines_and_server_sent_events_round_trip():
    line = event_line("epoch", epoch=0, row={"val_acc": None, "train_loss": 0.5})
    assert parse_event(line) == ("epoch", {"epoch": 0, "row": {"val_acc": None, "train_loss": 0.5}})
    assert parse_event("INFO tandem: loaded") is None and parse_event("tandem-event: {not json") is None
    with pytest.raises(ValueError):
        event_line("step", loss=math.nan)  # the job turns NaN into None first
    frames = (sse_frame("status", {"status": "RUNNING"}) + b": keepalive\n\n" + sse_frame("epoch", {"epoch": 1}, 7)
              + sse_frame("end", {"version": 2}))
    assert list(sse_events(frames.decode().splitlines(keepends=True))) == [
        ("status", {"status": "RUNNING"}, None), ("epoch", {"epoch": 1}, "7"), ("end", {"version": 2}, "7")]
    assert is_training_id(new_training_id()) and not is_training_id("raysubmit_abc")
