"""The README's `make demo` path, shortened to one epoch on an eighth of the photo budget."""

import json

import pytest

from tests.integration.cli import tandem

pytestmark = pytest.mark.integration


def test_demo_trains_exports_enrols_and_matches(tmp_path, data_home):
    env = {"TANDEM_DATA_HOME": str(data_home)}
    proc = tandem("demo", "--out", tmp_path / "demo", "--epochs", "1", "--subset", "0.12", "--json", env=env)
    summary = json.loads(proc.stdout)
    # Tandem's own progress only: no warnings from torch's exporter, no INFO lines from onnxscript.
    assert "Warning" not in proc.stderr and "Replaced initializer" not in proc.stderr, proc.stderr
    assert summary["tried"] >= 4 and 0 <= summary["matched"] <= summary["tried"]
    assert all(m["sentence"].startswith(("You look", "No close match")) for m in summary["matches"])
    assert summary["strangers_tried"] >= 1 and summary["enrolled_people"] >= 4
    assert summary["metrics"]["max_abs_onnx_torch"] <= 1e-4
    assert (tmp_path / "demo" / "bundle" / "gallery.npz").is_file()
    assert (tmp_path / "demo" / "run" / "curves.png").is_file()
    # Run again: the finished run is picked up, not retrained, its bundle not exported again, and the people-facing
    # text is printed.
    text = tandem("demo", "--out", tmp_path / "demo", "--epochs", "1", "--subset", "0.12", env=env).stdout
    assert "continuing the run" in text and "found the right person" in text
    assert "was exported from the run as it is now: kept" in " ".join(text.split())
