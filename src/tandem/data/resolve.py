"""Turn the CLI's ``--data DIR|lfw`` into a catalog."""

from __future__ import annotations

from pathlib import Path

from tandem.data.catalog import ImageCatalog
from tandem.data.folder import scan_class_folders
from tandem.data.lfw import load_lfw
from tandem.settings import require_data_home

LFW_MIN_FACES = 20


def default_min_faces(data: str, min_faces: int | None, objective: str = "classify") -> int:
    """For a classifier LFW's long tail of one-photo people is useless; an embedding learns from
    everyone (one-photo people through the teacher, if any); a user's folder is taken whole."""
    if min_faces is not None:
        return min_faces
    if objective == "embed":
        return 1
    return LFW_MIN_FACES if data == "lfw" else 1


def load_catalog(data: str, min_faces: int = 1, data_home: Path | None = None) -> ImageCatalog:
    """``data``: a folder of class folders, or ``lfw``: LFW under ``data_home`` (TANDEM_DATA_HOME)."""
    if data == "lfw":
        return load_lfw(require_data_home(data_home), min_faces=max(min_faces, 1))
    return scan_class_folders(Path(data), min_images=max(min_faces, 1))
