"""Run the real `tandem` command line in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def tandem(*args: object, env: dict[str, str] | None = None, ok: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem", *map(str, args)],
        check=False, capture_output=True, text=True, env=full_env, timeout=timeout,
    )
    if ok and proc.returncode != 0:
        raise AssertionError(f"tandem {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def tandem_json(*args: object, **kw: Any) -> Any:
    return json.loads(tandem(*args, "--json", **kw).stdout)


def tandem_in_fresh_python(*args: object) -> tuple[str, bool]:
    """Run `tandem ARGS` in a new interpreter; return its stdout and whether torch got imported."""
    code = (
        "import sys; from tandem.cli.main import main\n"
        f"sys.argv = ['tandem', *{[str(a) for a in args]!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH_LOADED', 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    body, marker = proc.stdout.rsplit("TORCH_LOADED", 1)
    return body, marker.strip() == "True"
