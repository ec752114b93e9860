"""What a dataset is once found on disk: image files with labels, before any pixel is read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from tandem.bundle.preprocess import CropSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: int


@dataclass
class ImageCatalog:
    root: Path
    classes: list[str]
    records: list[ImageRecord]
    crop: CropSpec
    source: str
    skipped_files: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for r in self.records:
            counts[r.label] += 1
        return counts

    def subset(self, indices: list[int]) -> ImageCatalog:
        return ImageCatalog(
            self.root, self.classes, [self.records[i] for i in indices], self.crop, self.source,
            self.skipped_files, list(self.notes),
        )

    def fingerprint(self) -> str:
        """sha256 over (relative path, size, class name) of every record: same data, same print."""
        h = hashlib.sha256()
        for r in sorted(self.records, key=lambda r: r.path.as_posix()):
            rel = r.path.relative_to(self.root).as_posix()
            h.update(json.dumps([rel, r.path.stat().st_size, self.classes[r.label]]).encode())
        return h.hexdigest()
