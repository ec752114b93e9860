"""A folder with one sub-folder per class, holding JPEG/PNG images."""

from __future__ import annotations

import logging
from pathlib import Path

from tandem.bundle.preprocess import CropSpec
from tandem.data.catalog import IMAGE_SUFFIXES, ImageCatalog, ImageRecord
from tandem.errors import DataError

log = logging.getLogger(__name__)


def scan_class_folders(root: Path, min_images: int = 1) -> ImageCatalog:
    """Find classes (sub-folders) and their image files.

    Files with other suffixes are skipped and counted. Classes below ``min_images`` are dropped
    when ``min_images`` > 1 (the --min-faces filter); an empty class with ``min_images`` == 1 is an
    error, since it almost always means a wrong folder.
    """
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder; pass --data DIR with one sub-folder per class, or --data lfw")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root}: no class sub-folders; put each class's images in its own folder, "
            f"e.g. {root}/cats/1.jpg and {root}/dogs/1.jpg"
        )
    classes: list[str] = []
    records: list[ImageRecord] = []
    skipped = 0
    empty: list[str] = []
    dropped: list[str] = []
    for d in class_dirs:
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += len(files) - len(images)
        if not images:
            empty.append(d.name)
            continue
        if len(images) < min_images:
            dropped.append(d.name)
            continue
        label = len(classes)
        classes.append(d.name)
        records.extend(ImageRecord(p, label) for p in images)
    if empty and min_images <= 1:
        raise DataError(
            f"{root}: class folder(s) with no images: {', '.join(empty[:10])}; "
            "add images or remove the folder(s)"
        )
    if min_images > 1:
        dropped = sorted(dropped + empty)
    if skipped:
        log.warning("%s: skipped %d file(s) that are not images (%s)", root, skipped, ", ".join(sorted(IMAGE_SUFFIXES)))
    if dropped and len(dropped) <= 20:
        log.info("%s: left out %d class(es) with fewer than %d images: %s", root, len(dropped), min_images, ", ".join(dropped))
    elif dropped:
        log.info("%s: left out %d classes with fewer than %d images", root, len(dropped), min_images)
    check_classes(root, classes, min_images)
    return ImageCatalog(root, classes, records, CropSpec(mode="center"), f"folder:{root}", skipped)


def check_classes(root: Path, classes: list[str], min_images: int) -> None:
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        hint = f" with at least {min_images} images" if min_images > 1 else ""
        raise DataError(
            f"{root}: a classifier needs at least 2 classes{hint}, found {found}; "
            "add classes or lower --min-faces"
        )
