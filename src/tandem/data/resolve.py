"""Turn the CLI's ``--data DIR|lfw`` into a catalog."""

from __future__ import annotations

from pathlib import Path

from tandem.data.catalog import ImageCatalog
from tandem.data.folder import scan_class_folders
from tandem.data.lfw import load_lfw
from tandem.settings import Settings, get_settings


def load_catalog(data: str, min_faces: int = 1, settings: Settings | None = None) -> ImageCatalog:
    if data == "lfw":
        settings = settings or get_settings()
        return load_lfw(settings.require_data_home(), min_faces=max(min_faces, 1))
    return scan_class_folders(Path(data), min_images=max(min_faces, 1))
