"""A new user's first hour with the real CLI (issue 22): several photos where one is bad, a folder
where files are expected, a server on a port already taken or over an empty registry."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tandem.errors import ConfigError, ImageError
from tandem.testing.bundles import make_bundle
from tandem.testing.processes import free_port, stop
from tandem.testing.served import wait_ready
from tests.integration.cli import tandem

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("first-hour") / "tiny", None)


def test_predict_answers_every_good_photo_and_reports_each_bad_one(tiny, tmp_path, lfw_people):
    good = [sorted((lfw_people / p).glob("*.jpg"))[0] for p in ("Tony_Blair", "Hugo_Chavez")]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    missing = tmp_path / "missing.jpg"
    args = ("predict", tiny, good[0], bad, missing, good[1], "--top-k", "2")
    proc = tandem(*args, ok=False)
    assert proc.returncode == ImageError.exit_code
    assert proc.stdout.count("%") == 4 and str(good[0]) in proc.stdout and str(good[1]) in proc.stdout
    assert f"{bad}: not a readable image" in proc.stderr and f"{missing}: no such file" in proc.stderr
    assert "2 of 4 image(s) could not be read" in proc.stderr

    proc = tandem(*args, "--json", ok=False)
    assert proc.returncode == ImageError.exit_code
    out = json.loads(proc.stdout)
    assert [p["image"] for p in out["predictions"]] == [str(good[0]), str(good[1])]
    assert [e["image"] for e in out["errors"]] == [str(bad), str(missing)]

    assert tandem("predict", tiny, *good).returncode == 0
    one = tandem("predict", tiny, bad, ok=False)  # one photo: its own error, once
    assert one.returncode == ImageError.exit_code and one.stderr.count("not a readable image") == 1


def test_predict_answers_a_48_megapixel_phone_photo_and_refuses_a_png_that_size(tiny, tmp_path):
    from PIL import Image

    jpeg, png = tmp_path / "phone.jpg", tmp_path / "phone.png"
    Image.new("RGB", (8000, 6000), (150, 110, 90)).save(jpeg, quality=70)  # one colour: made in a moment
    Image.new("1", (8000, 6000)).save(png)
    proc = tandem("predict", tiny, jpeg, png, "--json", ok=False)
    assert proc.returncode == ImageError.exit_code
    out = json.loads(proc.stdout)
    assert [p["image"] for p in out["predictions"]] == [str(jpeg)]  # decoded reduced, by its DCT
    [error] = out["errors"]
    assert error["image"] == str(png) and "image too large (8000×6000, over 40,000,000 pixels)" in error["error"]
    assert "save it as JPEG" in error["error"]


def test_predict_says_a_folder_is_not_a_photo(tiny, tmp_path):
    proc = tandem("predict", tiny, tmp_path, ok=False)
    assert proc.returncode == ConfigError.exit_code
    assert f"{tmp_path} is a folder" in proc.stderr and "*.jpg" in proc.stderr


def serve_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def test_serve_on_a_taken_port_fails_at_once_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        proc = tandem("serve", "--port", port, env=serve_env(tmp_path / "home"), ok=False, timeout=60)
    assert proc.returncode == ConfigError.exit_code
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr and f"--port {port + 1}" in proc.stderr
    assert "serving" not in proc.stdout and time.monotonic() - t0 < 30


def test_serve_warns_of_an_empty_registry_and_shows_the_page_address(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tandem", "serve", "--port", str(port), "--log-level", "warning",
                             "--max-queue-ms", "250"],
                            env={**serve_env(tmp_path / "home"), "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, "/v2/health/live", timeout_s=60)
    finally:
        out, err = stop(proc, signal.SIGTERM)
    assert f"the browser app: http://127.0.0.1:{port}/app/" in out
    assert "requests queued over 250 ms answered 503" in out  # --max-queue-ms over TANDEM_MAX_QUEUE_MS
    assert "holds no models yet" in err and "tandem push BUNDLE" in err


def test_the_page_address_is_one_a_browser_can_open():
    from tandem.cli.serve import page_url

    assert page_url("0.0.0.0", 8000) == "http://localhost:8000/app/"
    assert page_url("::1", 8080) == "http://[::1]:8080/app/"
    assert page_url("10.1.2.3", 80) == "http://10.1.2.3:80/app/"


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lfw_people) -> Path:
    """Three people, ten photos each, and two unreadable files per person (some land in training,
    some in validation)."""
    from tests.conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path_factory.mktemp("photos") / "faces", lfw_people,
                               ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"], 10)
    for person in root.iterdir():
        for i in range(4):
            (person / f"broken{i}.jpg").write_text("not a photo")
    return root


QUICK = ("--stem-stride", "2", "--batch-size", "8", "--no-progress")


def test_unreadable_files_are_counted_once_for_the_dataset(photos, tmp_path):
    proc = tandem("train", "--data", photos, "--out", tmp_path / "run", "--epochs", "1", "--val-fraction", "0.4", *QUICK)
    split = json.loads((tmp_path / "run" / "dataset.json").read_text())
    files = split["files"]
    bad = [i for part in ("train", "val") for i in split["split"][part] if "broken" in files[i]]
    assert {part for part in ("train", "val") if any("broken" in files[i] for i in split["split"][part])} == {"train", "val"}
    counts = [line for line in proc.stderr.splitlines() if "unreadable image file(s) of" in line]
    assert len(counts) == 1 and f"skipped {len(bad)} unreadable image file(s)" in counts[0], proc.stderr
    assert proc.stderr.count("skipping ") == len(bad)
    assert split["notes"] == [f"skipped {len(bad)} unreadable image file(s) of "
                              f"{len(split['split']['train']) + len(split['split']['val'])} (training and validation)"]


def test_ctrl_c_says_how_to_resume_and_the_resumed_run_says_where_it_continues(photos, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(photos), "--out", str(out), "--epochs", "200", "--seed", "4", *QUICK]
    proc = subprocess.Popen([sys.executable, "-m", "tandem", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "COLUMNS": "300"})
    deadline = time.monotonic() + 300
    while not (out / "history.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = len(json.loads((out / "history.json").read_text()))
    assert f"stopped: {out} keeps epoch {done} of 200 (checkpoint.pt)" in err
    again = err.split("Continue with:\n", 1)[1].strip().splitlines()[0]
    assert again.startswith("tandem train ") and again.endswith(" --resume")
    assert f"--out {out}" in again and "--seed 4" in again and "--stem-stride 2" in again and "--no-progress" in again
    assert "Traceback" not in err

    resumed = tandem(*again.split()[1:], "--epochs", str(done + 1))
    assert f"resuming after epoch {done} of {done + 1}: training continues with epoch {done + 1}" in resumed.stderr


def test_settings_out_of_range_are_refused_before_any_work(tmp_path):
    proc = tandem("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run", "--subset", "1.5", ok=False)
    assert proc.returncode == ConfigError.exit_code and "--subset" in proc.stderr and "1.5" in proc.stderr
    assert not (tmp_path / "run").exists()
    proc = tandem("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run", "--subset", "0", ok=False)
    assert proc.returncode == ConfigError.exit_code and "above 0" in proc.stderr
    t0 = time.monotonic()
    proc = tandem("demo", "--epochs", "0", "--out", tmp_path / "demo", ok=False)
    assert proc.returncode == 2 and "'--epochs'" in proc.stderr and "greater than or equal to 1" in proc.stderr
    assert not (tmp_path / "demo").exists() and time.monotonic() - t0 < 30
