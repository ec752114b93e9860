"""Which code trained a run: the git commit of the checkout Tandem runs from and whether it held
uncommitted changes, recorded in the run folder (``code.json``) when training starts and copied into
the bundle's manifest (``training.code``) at export, where the registry's lineage shows it.

Unknown (None) when Tandem is not run from a git checkout (installed from a wheel), git is missing, or
git does not answer within a few seconds: provenance never stops a training run.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tandem import atomic

CODE = "code.json"
GIT_TIMEOUT_S = 3.0
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout if done.returncode == 0 else None


def code_revision(where: Path | None = None) -> dict[str, Any] | None:
    """``{"git_commit": ..., "git_dirty": ...}`` of the git checkout that tracks ``where`` (a file or a
    folder; default: this file of Tandem's own source); ``git_dirty`` is None when git could not tell.
    None outside a checkout, and where the checkout around ``where`` does not track it: a wheel installed
    into a virtual environment inside some project's checkout is not that project's code."""
    target = (where if where is not None else Path(__file__)).resolve()
    folder = target if target.is_dir() else target.parent
    if _git(folder, "ls-files", "--error-unmatch", "--", str(target)) is None:
        return None
    head = _git(folder, "rev-parse", "HEAD")
    commit = head.strip() if head is not None else ""
    if not _COMMIT.fullmatch(commit):
        return None
    # Tracked files only: a stray untracked file (a run folder inside the checkout, say) changes no code.
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status.strip())}


def record(run_dir: Path, where: Path | None = None) -> dict[str, Any] | None:
    """Write the code's revision into the run folder as training starts (or resumes). A resumed run
    trained by other code keeps the earlier commits in ``earlier_commits``."""
    now = code_revision(where)
    before = recorded(run_dir)
    if now is None and before is None:
        return None
    doc: dict[str, Any] = dict(now or {"git_commit": None, "git_dirty": None})
    earlier = list(before.get("earlier_commits", [])) if before else []
    if before and before.get("git_commit") not in (None, doc["git_commit"], *earlier):
        earlier.append(before["git_commit"])
    if earlier:
        doc["earlier_commits"] = earlier
    atomic.write_text(run_dir / CODE, json.dumps(doc, indent=2) + "\n")
    return doc


def recorded(run_dir: Path) -> dict[str, Any] | None:
    """What ``record`` wrote into the run folder; None for a run trained before it existed, or damaged."""
    try:
        doc = json.loads((run_dir / CODE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("git_commit"), str | None):
        return None
    return doc


def manifest_entry(run_dir: Path) -> dict[str, Any]:
    """What the bundle's ``training`` section gets: ``{"code": ...}`` when the run recorded its code."""
    doc = recorded(run_dir)
    return {"code": doc} if doc is not None else {}
