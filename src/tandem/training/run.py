"""A run folder: what `tandem train` writes and `tandem export` reads.

  config.json     the training configuration
  dataset.json    classes, files (relative to the data root), the split, the crop, a fingerprint
  checkpoint.pt   the latest epoch (for --resume);  best.pt  the best validation epoch
  history.json    per-epoch metrics;  curves.png, confusion.png  the plots
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tandem import atomic
from tandem.data.catalog import ImageCatalog, ImageRecord
from tandem.data.split import Split
from tandem.errors import CheckpointError, DataError
from tandem.preprocess import CropSpec

CONFIG = "config.json"
DATASET = "dataset.json"
HISTORY = "history.json"
CURVES = "curves.png"
CONFUSION = "confusion.png"


@dataclass
class TrainConfig:
    data: str
    out: Path
    name: str = "model"
    min_faces: int = 1
    subset: float = 1.0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    device: str = "cpu"
    seed: int = 0
    height: int = 100
    width: int = 75
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    width_mult: float = 1.0
    stem_stride: int = 1
    embedding_dim: int = 128
    augment: bool = True

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["out"] = Path(d["out"])
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that must not change between a run and its --resume (--epochs may grow; --name and --device may change)."""
        d = self.to_json()
        for k in ("epochs", "out", "device", "name"):
            d.pop(k)
        return d


@dataclass
class RunData:
    """The dataset as this run saw it, enough to rebuild the exact split later."""

    root: str
    source: str
    classes: list[str]
    files: list[str]
    labels: list[int]
    crop: dict[str, Any]
    split: dict[str, list[int]]
    fingerprint: str
    skipped_files: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_catalog(cls, catalog: ImageCatalog, split: Split) -> RunData:
        return cls(
            root=str(catalog.root.resolve()),
            source=catalog.source,
            classes=catalog.classes,
            files=[r.path.relative_to(catalog.root).as_posix() for r in catalog.records],
            labels=[r.label for r in catalog.records],
            crop=catalog.crop.model_dump(),
            split=split.as_dict(),
            fingerprint=catalog.fingerprint(),
            skipped_files=catalog.skipped_files,
            notes=list(catalog.notes),
        )

    def catalog(self) -> ImageCatalog:
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(f"the training data at {root} is gone; put it back there to export this run")
        records = [ImageRecord(root / f, y) for f, y in zip(self.files, self.labels, strict=True)]
        return ImageCatalog(root, self.classes, records, CropSpec.model_validate(self.crop), self.source)

    def part(self, name: str) -> ImageCatalog:
        return self.catalog().subset(self.split[name])


def write_json(path: Path, obj: Any) -> None:
    atomic.write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no {path.name}; is this a run folder written by `tandem train`?")
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def load_run(run_dir: Path) -> tuple[TrainConfig, RunData]:
    cfg = TrainConfig.from_json(read_json(run_dir / CONFIG))
    data = RunData(**read_json(run_dir / DATASET))
    return cfg, data
