"""The Makefile's first-hour paths, with stand-ins for the slow parts: `make test` runs `make lint`
first and stops if it fails, then both pytest parts whatever the first says, and `make demo` looks
for LFW before installing anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

FAKE_PYTEST = """#!/bin/sh
echo "pytest $*" >> "$FAKE_LOG"
case "$2" in
  "not ray") exit $FIRST ;;
  *) exit $SECOND ;;
esac
"""
# ruff, lint-imports and mypy: each says it ran; $LINT_FAILS names the one that fails.
FAKE_LINTER = """#!/bin/sh
name=$(basename "$0")
echo "$name" >> "$FAKE_LOG"
[ "$name" != "$LINT_FAILS" ]
"""
LINTERS = ("ruff", "lint-imports", "mypy")
# The tests outside Ray run on xdist workers (tests/conftest.py says how the work is split); Ray's in one process.
OUTSIDE_RAY = "pytest -m not ray -n 2 --dist loadfile --no-loadscope-reorder"


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, check=False, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def make_test(tmp_path: Path, first: int = 0, second: int = 0, lint_fails: str = "") -> tuple[
        subprocess.CompletedProcess, list[str]]:
    """`make test` with stand-ins for pytest and the linters; what ran, in order."""
    for name, script in (("pytest", FAKE_PYTEST), *((linter, FAKE_LINTER) for linter in LINTERS)):
        (tmp_path / name).write_text(script)
        (tmp_path / name).chmod(0o755)
    log = tmp_path / "log"
    # -o install: the venv is taken as it is; the stand-ins say how each step ends.
    done = make("-o", "install", "test", f"BIN={tmp_path}", "TEST_WORKERS=2",
                env={"FAKE_LOG": str(log), "FIRST": str(first), "SECOND": str(second), "LINT_FAILS": lint_fails})
    return done, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(("first", "second", "fails"), [(1, 0, True), (0, 1, True), (0, 0, False), (1, 1, True)])
def test_make_test_runs_both_parts_and_fails_if_either_does(tmp_path, first, second, fails):
    done, ran = make_test(tmp_path, first, second)
    assert ran == [*LINTERS, OUTSIDE_RAY, "pytest -m ray"], done.stderr
    assert (done.returncode != 0) == fails, done.stderr
    if first:
        assert "the tests outside Ray failed" in done.stderr


@pytest.mark.parametrize("failing", LINTERS)
def test_make_test_stops_when_lint_fails(tmp_path, failing):
    done, ran = make_test(tmp_path, lint_fails=failing)
    assert ran == list(LINTERS), done.stderr  # every check runs, then no test does
    assert done.returncode != 0


def test_make_demo_says_where_lfw_belongs_before_installing(tmp_path):
    # PY=false: were the install reached, creating the venv would fail at once and say so.
    done = make("demo", f"TANDEM_DATA_HOME={tmp_path}", "PY=false", f"VENV={tmp_path}/venv")
    assert done.returncode != 0
    assert f"{tmp_path}/lfw_home/lfw_funneled" in done.stderr
    assert "TANDEM_DATA_HOME=" in done.stderr and "make lfw" in done.stderr
    assert "venv" not in done.stdout and not (tmp_path / "venv").exists()


def test_make_install_only_warns_without_lfw(tmp_path):
    done = make("check-data", f"TANDEM_DATA_HOME={tmp_path}")
    assert done.returncode == 0 and "installing anyway" in done.stderr
    assert make("need-data").returncode == 0  # the repository's own LFW is found
