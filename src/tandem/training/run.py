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
from typing import Any, ClassVar, Self

from tandem import atomic
from tandem.bundle import NAME_RE
from tandem.bundle.preprocess import CropSpec
from tandem.data.catalog import ImageCatalog, ImageRecord
from tandem.data.lfw import lfw_images_dir
from tandem.data.split import Split
from tandem.errors import CheckpointError, ConfigError, DataError
from tandem.settings import require_data_home

CONFIG = "config.json"
DATASET = "dataset.json"
HISTORY = "history.json"
CURVES = "curves.png"
CONFUSION = "confusion.png"


class RunConfig:
    """What a run folder's config.json holds, for a dataclass of training options with an ``out`` folder:
    to and from JSON, and the fields a --resume must keep (all but ``CHANGEABLE``)."""

    out: Path
    CHANGEABLE: ClassVar[tuple[str, ...]] = ("epochs", "out", "device", "name")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        d["out"] = str(self.out)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        d = dict(d)
        d["out"] = Path(d["out"])
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that must not change between a run and its --resume."""
        d = self.to_json()
        for k in self.CHANGEABLE:
            d.pop(k)
        return d


@dataclass
class TrainConfig(RunConfig):
    # --epochs may grow, --name and --device change, --stop-after is for this invocation only.
    CHANGEABLE: ClassVar[tuple[str, ...]] = ("epochs", "out", "device", "name", "stop_after")
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
    # Stop after this many epochs of an --epochs long schedule (continue later with --resume).
    stop_after: int | None = None
    # classify: a softmax over the classes; embed: a face embedding for open-set matching (training/embed.py).
    objective: str = "classify"
    teacher: str = "none"
    # embed: mobile (our small network, trained from scratch) or dlib (dlib's face ResNet, fine-tuned)
    backbone: str = "mobile"
    align_size: int = 80
    align_zoom: float = 1.0
    arc_margin: float = 11.5  # degrees (pytorch-metric-learning's unit): 0.2 rad
    arc_scale: float = 30.0
    arc_weight: float = 1.0
    kd_weight: float = 1.0
    region_views: float = 0.0
    # embed: train on at most this many photos, spread over the training people (a budget for the teacher).
    max_images: int | None = None

    def validate(self) -> None:
        """Refuse settings that would only fail deep inside torch, with what to use instead."""
        problems = []
        if not NAME_RE.match(self.name):
            problems.append(f"--name {self.name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        if not 0 < self.subset <= 1:
            problems.append(f"--subset is the fraction of each class to use: above 0 and at most 1, got {self.subset}")
        if self.batch_size < 2:
            problems.append(f"--batch-size must be at least 2 (BatchNorm needs two images), got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if self.seed < 0:
            problems.append(f"--seed must be 0 or more, got {self.seed}")
        if self.stem_stride not in (1, 2):
            problems.append(f"--stem-stride must be 1 or 2, got {self.stem_stride}")
        if self.objective not in ("classify", "embed"):
            problems.append(f"--objective {self.objective!r}: use classify or embed")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.epochs:
            problems.append(f"--stop-after must be between 1 and --epochs ({self.epochs}), got {self.stop_after}")
        if problems:
            raise ConfigError("; ".join(problems))



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
    # Where this machine keeps LFW (TANDEM_DATA_HOME), for a run trained elsewhere (_data_root): given by
    # whoever opens the run (load_run, open_run), never saved with it (to_json).
    data_home: Path | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """What dataset.json holds."""
        d = dict(self.__dict__)
        d.pop("data_home")
        return d

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
        root = self._data_root()
        records = [ImageRecord(root / f, y) for f, y in zip(self.files, self.labels, strict=True)]
        return ImageCatalog(root, self.classes, records, CropSpec.model_validate(self.crop), self.source)

    def _data_root(self) -> Path:
        """Where the run's images are now. A run trained on another machine (a GPU box, say) records
        that machine's path; LFW runs then find the same files under this machine's TANDEM_DATA_HOME,
        accepted only if they fingerprint the same (same files, sizes and classes)."""
        root = Path(self.root)
        if root.is_dir():
            return root
        if self.source == "lfw":
            local = lfw_images_dir(require_data_home(self.data_home))
            records = [ImageRecord(local / f, y) for f, y in zip(self.files, self.labels, strict=True)]
            missing = [r.path for r in records if not r.path.is_file()]
            if missing:
                raise DataError(f"this run was trained on LFW at {root}; the LFW under TANDEM_DATA_HOME ({local}) "
                                f"lacks {len(missing)} of its images (e.g. {missing[0].name})")
            here = ImageCatalog(local, self.classes, records, CropSpec.model_validate(self.crop), self.source)
            if here.fingerprint() != self.fingerprint:
                raise DataError(f"this run was trained on LFW at {root}; the LFW under TANDEM_DATA_HOME ({local}) "
                                "holds different files (fingerprint differs); point TANDEM_DATA_HOME at the same data")
            return local
        raise DataError(f"the training data at {root} is gone; put it back there to use this run")

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


def load_run(run_dir: Path, data_home: Path | None = None) -> tuple[TrainConfig, RunData]:
    """``data_home``: where this machine keeps LFW (TANDEM_DATA_HOME), for an LFW run trained elsewhere."""
    try:
        cfg = TrainConfig.from_json(read_json(run_dir / CONFIG))
        data = RunData(**read_json(run_dir / DATASET), data_home=data_home)
    except (TypeError, KeyError) as e:
        raise CheckpointError(
            f"{run_dir}: {CONFIG} or {DATASET} does not match this Tandem version ({e}); train the run again"
        ) from e
    return cfg, data


def load_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / HISTORY
    return read_json(path) if path.exists() else []
