"""Checkpoints: written to a temp file and renamed, read back with a clear error if damaged."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from tandem import atomic
from tandem.errors import CheckpointError

LAST = "checkpoint.pt"
BEST = "best.pt"
FORMAT = "tandem-checkpoint/1"


def save(path: Path, state: dict[str, Any]) -> None:
    with atomic.temp_path_for(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; train first with `tandem train ... --out {path.parent}`")
    try:
        # weights_only: a checkpoint from elsewhere must not be able to run code when loaded.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{path}: checkpoint is corrupt or truncated ({type(e).__name__}: {e}); "
            "delete it and resume from an earlier one, or train again"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a Tandem checkpoint (expected format {FORMAT})")
    return state
