"""Content photos for image-to-image training: LFW's or any folder's, without classes.

An effect learns from photos alone, so a folder is taken as it is, sub-folders included (LFW's person
folders are just where its photos live). Each photo is centre-cropped to a square and resized to the
run's photo size (Pillow's bilinear filter), the size the teacher then works on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tandem.bundle.preprocess import decode_image
from tandem.data.catalog import IMAGE_SUFFIXES
from tandem.data.lfw import lfw_images_dir
from tandem.errors import DataError, ImageError
from tandem.settings import require_data_home

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoSet:
    root: Path
    source: str  # "lfw" or "folder:NAME"
    files: list[str]  # relative POSIX paths, sorted

    def fingerprint(self) -> str:
        """sha256 over (relative path, size) of every photo: same photos, same print."""
        h = hashlib.sha256()
        for rel in self.files:
            h.update(json.dumps([rel, (self.root / rel).stat().st_size]).encode())
        return h.hexdigest()


def find_photos(data: str, data_home: Path | None = None) -> PhotoSet:
    """``--data lfw`` (LFW under ``data_home``, TANDEM_DATA_HOME) or a folder holding photos anywhere beneath it."""
    if data == "lfw":
        root = lfw_images_dir(require_data_home(data_home))
        source = "lfw"
    else:
        root = Path(data)
        if not root.is_dir():
            raise DataError(f"{root}: no such data folder; pass --data DIR holding photos, or --data lfw")
        source = f"folder:{root.resolve().name}"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: no photos in it or its sub-folders ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                        "pass --data DIR holding photos, or --data lfw")
    return PhotoSet(root, source, files)


def load_square(path: Path, size: int) -> np.ndarray:
    """The photo's centre square at ``size``×``size``, uint8 RGB (an ImageError if unreadable)."""
    img = decode_image(path)
    return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_squares(root: Path, files: list[str], size: int) -> tuple[np.ndarray, list[str]]:
    """The readable photos among ``files`` as an N×size×size×3 stack, and the files they are; each
    unreadable one is logged and left out."""
    kept: list[str] = []
    arrays: list[np.ndarray] = []
    for rel in files:
        try:
            arrays.append(load_square(root / rel, size))
        except ImageError as e:
            log.warning("skipped %s", e)
            continue
        kept.append(rel)
    stack = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return stack, kept
