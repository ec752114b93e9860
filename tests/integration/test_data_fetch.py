"""`tandem data fetch lfw`: a complete copy is recognised and left alone; where the download
cannot happen (here: a proxy that refuses, so the test never needs the internet), one clear error
says where LFW is expected and how to get it, and nothing is left half-written."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.cli import tandem

pytestmark = pytest.mark.integration


def test_an_lfw_copy_already_there_is_verified_not_downloaded(data_home):
    out = json.loads(tandem("data", "fetch", "lfw", "--to", data_home, "--json").stdout)
    assert out["downloaded"] is False and out["photos"] > 10_000 and out["people"] > 5_000


def test_without_a_network_the_error_says_where_lfw_goes_and_nothing_is_left(tmp_path):
    refuse = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused
    env = {**os.environ, "HTTPS_PROXY": refuse, "HTTP_PROXY": refuse, "https_proxy": refuse, "http_proxy": refuse}
    proc = tandem("data", "fetch", "lfw", "--to", tmp_path / "data", env=env, ok=False)
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    assert "could not download LFW" in message and "TANDEM_DATA_HOME" in message and "lfw_home/lfw_funneled" in message
    assert "Traceback" not in proc.stderr and "Retry downloading" not in proc.stderr
    assert list((tmp_path / "data").iterdir()) == []  # no half download, no staging folder


def test_a_folder_that_is_not_lfw_is_never_overwritten(tmp_path):
    (tmp_path / "lfw_home" / "lfw_funneled").mkdir(parents=True)
    proc = tandem("data", "fetch", "lfw", "--to", tmp_path, ok=False)
    assert proc.returncode != 0 and "is incomplete" in " ".join(proc.stderr.split())
    assert list((tmp_path / "lfw_home").iterdir()) == [tmp_path / "lfw_home" / "lfw_funneled"]
