"""bench/soak.py's driver, briefly: its paced mix (OIP JSON, OIP binary, image endpoint, OTA checks)
against a real server answers every request of every kind with a 2xx. The long run is the bench's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.integration.server.serving import running, test_settings

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _soak():
    spec = importlib.util.spec_from_file_location("soak_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_soak_mix_runs_paced_without_an_error(tmp_path):
    soak = _soak()
    prep = soak.prepare(tmp_path / "home", None)
    jpegs, pixels = soak.photos(prep.bundle, n=4)
    settings = test_settings(prep.home, ota_master_key=None, rate_limit_per_s=100_000, rate_limit_burst=100_000)
    with running(settings) as server:
        plan = soak.build_plan(server.url, prep.model, prep.input_name, prep.predict_key, prep.device_key,
                               prep.version, jpegs, pixels, n=100)
        record = soak.open_loop(plan, rate=40, seconds=4)
    assert record.errors == 0, record.failures
    assert len(record.ok) == 160
    assert {soak.KINDS[k] for k in record.kind} == set(soak.KINDS)
    summary = soak.summarise(record, 4, 2)
    assert all(v["requests"] > 0 and v["errors"] == 0 for v in summary["by_kind"].values()), summary["by_kind"]
