"""The README's `make demo` path, shortened to one epoch."""

import pytest

from tests.integration.cli import tandem

pytestmark = pytest.mark.integration


def test_demo_trains_exports_enrols_and_matches(tmp_path, data_home):
    proc = tandem("demo", "--out", tmp_path / "demo", "--epochs", "1", env={"TANDEM_DATA_HOME": str(data_home)})
    assert "held-out photos matched the right person" in proc.stdout
    assert (tmp_path / "demo" / "bundle" / "gallery.npz").is_file()
    assert (tmp_path / "demo" / "run" / "curves.png").is_file()
