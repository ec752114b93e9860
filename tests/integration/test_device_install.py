"""`pip install tandem` is the device SDK alone: HybridModel answers without the CLI's libraries
(typer, rich, pydantic-settings, OpenCV) or any server or training one, and the `tandem` command in
such an install says which extra it needs instead of a traceback. The sizes are in the README."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tandem.testing.bundles import make_bundle

pytestmark = pytest.mark.integration

# Modules a device install does not have: importing any of them fails, as it would there.
ABSENT = ["typer", "rich", "pydantic_settings", "cv2", "orjson", "starlette", "sqlalchemy", "torch", "onnx", "ray"]
BLOCK = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name.split(".")[0])
        return None
sys.meta_path.insert(0, Absent())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_device_sdk_answers_without_the_cli_server_or_training_libraries(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", None)
    proc = _run(f"""
        import numpy as np
        from tandem.device import HybridModel
        model = HybridModel({str(bundle)!r}, policy="only_device")
        out = model.predict(np.zeros((1, 100, 75, 3), np.uint8))
        print(out.where, sorted(out.outputs))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "device"


def test_the_command_in_a_device_install_names_the_extra_it_needs():
    proc = _run("""
        import sys
        sys.argv = ["tandem", "--help"]
        from tandem.__main__ import run
        run()
    """)
    assert proc.returncode == 2
    assert "pip install 'tandem[cli]'" in proc.stderr and "Traceback" not in proc.stderr
