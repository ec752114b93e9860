"""Read a catalog's images into one uint8 array, skipping (and counting) unreadable files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tandem.bundle.preprocess import PreprocessSpec, decode_image, to_input
from tandem.data.catalog import ImageCatalog
from tandem.errors import DataError, ImageError

log = logging.getLogger(__name__)


def load_pixels(
    catalog: ImageCatalog,
    spec: PreprocessSpec,
    progress: Callable[[int], None] | None = None,
    skipped: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Return (pixels N×H×W×3 uint8, labels N, indices into catalog.records that were kept).

    Unreadable files are skipped and reported (report_skipped); with ``skipped``, their messages are
    only added to it, for a caller that loads several parts of one dataset to report them once."""
    failures: list[str | None] = [None] * len(catalog.records)

    def one(i: int) -> np.ndarray | None:
        try:
            return to_input(decode_image(catalog.records[i].path), spec)
        except ImageError as e:
            failures[i] = str(e)
            return None
        finally:
            if progress:
                progress(1)

    if not catalog.records:
        raise DataError(f"{catalog.root}: no images to read")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(len(catalog.records))))
    kept = [i for i, r in enumerate(results) if r is not None]
    read = [r for r in results if r is not None]  # in the order of kept
    failed = [f for f in failures if f is not None]
    if not kept:
        raise DataError(f"{catalog.root}: none of the {len(results)} image files could be read")
    if skipped is not None:
        skipped.extend(failed)
    else:
        note = report_skipped(catalog.root, failed, len(results))
        if note:
            catalog.notes.append(note)
    pixels = np.stack(read)
    labels = np.array([catalog.records[i].label for i in kept], dtype=np.int64)
    return pixels, labels, kept


def report_skipped(root: object, skipped: list[str], total: int, parts: str = "") -> str | None:
    """Log each unreadable file, then their count among ``total`` (read for ``parts``, e.g. "training and
    validation"), once; the note for the run's records (None when nothing was skipped)."""
    for message in skipped:
        log.warning("skipping %s", message)
    if not skipped:
        return None
    note = f"skipped {len(skipped)} unreadable image file(s) of {total}" + (f" ({parts})" if parts else "")
    log.warning("%s: %s", root, note)
    return note
