"""Read a catalog's images into one uint8 array, skipping (and counting) unreadable files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tandem.data.catalog import ImageCatalog
from tandem.errors import DataError, ImageError
from tandem.preprocess import PreprocessSpec, decode_image, to_input

log = logging.getLogger(__name__)


def load_pixels(
    catalog: ImageCatalog,
    spec: PreprocessSpec,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Return (pixels N×H×W×3 uint8, labels N, indices into catalog.records that were kept)."""

    def one(i: int) -> np.ndarray | None:
        try:
            return to_input(decode_image(catalog.records[i].path), spec)
        except ImageError as e:
            log.warning("skipping %s", e)
            return None
        finally:
            if progress:
                progress(1)

    if not catalog.records:
        raise DataError(f"{catalog.root}: no images to read")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(len(catalog.records))))
    kept = [i for i, r in enumerate(results) if r is not None]
    if not kept:
        raise DataError(f"{catalog.root}: none of the {len(results)} image files could be read")
    bad = len(results) - len(kept)
    if bad:
        log.warning("%s: skipped %d unreadable image file(s) of %d", catalog.root, bad, len(results))
        catalog.notes.append(f"skipped {bad} unreadable image file(s)")
    pixels = np.stack([results[i] for i in kept])
    labels = np.array([catalog.records[i].label for i in kept], dtype=np.int64)
    return pixels, labels, kept
