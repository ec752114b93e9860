"""Which code trained a run (training/provenance.py): the git commit and dirtiness of a real checkout,
nothing outside one, and what a resumed run trained by other code keeps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tandem.training import provenance


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def checkout(tmp_path) -> Path:
    repo = tmp_path / "code"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "train.py").write_text("print('v1')\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    return repo


def test_the_commit_and_whether_tracked_files_changed(checkout):
    head = git(checkout, "rev-parse", "HEAD")
    assert provenance.code_revision(checkout / "pkg") == {"git_commit": head, "git_dirty": False}
    (checkout / "pkg" / "notes.txt").write_text("untracked: no code changed\n")
    assert provenance.code_revision(checkout)["git_dirty"] is False
    (checkout / "pkg" / "train.py").write_text("print('v2')\n")
    assert provenance.code_revision(checkout) == {"git_commit": head, "git_dirty": True}


def test_a_copy_installed_inside_another_checkout_is_not_that_checkouts_code(checkout):
    # A wheel in a virtual environment kept (ignored) inside some project: that project's commit is not ours.
    (checkout / ".gitignore").write_text(".venv/\n")
    installed = checkout / ".venv" / "site-packages" / "tandem" / "training" / "provenance.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("# installed copy\n")
    assert provenance.code_revision(installed) is None
    assert provenance.code_revision(installed.parent) is None
    assert provenance.code_revision(checkout / "pkg" / "train.py")["git_commit"] == git(checkout, "rev-parse", "HEAD")


def test_outside_a_checkout_nothing_is_known(tmp_path):
    assert provenance.code_revision(tmp_path) is None
    run = tmp_path / "run"
    run.mkdir()
    assert provenance.record(run, where=tmp_path) is None and not (run / provenance.CODE).exists()
    assert provenance.manifest_entry(run) == {}


def test_a_run_records_its_code_and_a_resume_by_other_code_keeps_the_earlier_commit(checkout, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    first = git(checkout, "rev-parse", "HEAD")
    assert provenance.record(run, where=checkout) == {"git_commit": first, "git_dirty": False}
    assert provenance.manifest_entry(run) == {"code": {"git_commit": first, "git_dirty": False}}
    (checkout / "pkg" / "train.py").write_text("print('v2')\n")
    git(checkout, "commit", "-q", "-am", "two")
    second = git(checkout, "rev-parse", "HEAD")
    provenance.record(run, where=checkout)  # --resume after the code moved on
    provenance.record(run, where=checkout)  # and again: the list does not grow
    assert json.loads((run / provenance.CODE).read_text()) == {"git_commit": second, "git_dirty": False,
                                                              "earlier_commits": [first]}


def test_a_damaged_record_is_no_record(tmp_path):
    (tmp_path / provenance.CODE).write_text("{not json")
    assert provenance.recorded(tmp_path) is None
    (tmp_path / provenance.CODE).write_text('{"git_commit": 42}')
    assert provenance.recorded(tmp_path) is None
