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


PAIR_INPUT, PAIR_TARGET = "input", "target"


@dataclass(frozen=True)
class PairSet:
    """Before/after pairs: ``input/NAME.*`` and ``target/NAME.*`` under ``root``, matched by name."""

    root: Path
    source: str  # "pairs:NAME"
    targets: dict[str, str]  # input's relative path → its target's

    @property
    def files(self) -> list[str]:
        return sorted(self.targets)

    def fingerprint(self) -> str:
        return PhotoSet(self.root, self.source, sorted([*self.targets, *self.targets.values()])).fingerprint()


def is_pair_folder(data: str) -> bool:
    """Whether ``--data`` is a folder of before/after pairs (an ``input/`` and a ``target/`` folder)."""
    root = Path(data)
    return data != "lfw" and (root / PAIR_INPUT).is_dir() and (root / PAIR_TARGET).is_dir()


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in found:
                raise DataError(f"{folder}: {found[p.stem].name} and {p.name} have the same name; pairs are matched by "
                                "name without its extension, so keep one of them")
            found[p.stem] = p
    return found


def find_pairs(data: str) -> PairSet:
    """The pairs of a ``--data DIR`` holding ``input/`` and ``target/``: every input needs a target of the
    same name (any image extension) and the other way round, or nothing is trained."""
    root = Path(data)
    if not is_pair_folder(data):  # `--teacher-effect pairs` given by hand, with --data that holds no pairs
        raise DataError(f"{data}: before/after pairs need the folders {PAIR_INPUT}/ and {PAIR_TARGET}/ in --data, "
                        "photos in one and their pictures under the same names in the other")
    inputs, targets = _by_stem(root / PAIR_INPUT), _by_stem(root / PAIR_TARGET)
    lonely_in, lonely_out = sorted(set(inputs) - set(targets)), sorted(set(targets) - set(inputs))
    if lonely_in or lonely_out:
        what = [f"{len(lonely_in)} input(s) without a target (e.g. {inputs[lonely_in[0]].name})"] if lonely_in else []
        what += [f"{len(lonely_out)} target(s) without an input (e.g. {targets[lonely_out[0]].name})"] if lonely_out else []
        raise DataError(f"{root}: before/after pairs are matched by name, and {' and '.join(what)}; give every photo in "
                        f"{PAIR_INPUT}/ its picture in {PAIR_TARGET}/ under the same name")
    if not inputs:
        raise DataError(f"{root}: {PAIR_INPUT}/ and {PAIR_TARGET}/ hold no photos ({', '.join(sorted(IMAGE_SUFFIXES))})")
    rel = {inputs[s].relative_to(root).as_posix(): targets[s].relative_to(root).as_posix() for s in inputs}
    return PairSet(root, f"pairs:{root.resolve().name}", rel)


def load_pairs(root: Path, targets: dict[str, str], files: list[str], size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The pairs of ``files`` (inputs) as two N×size×size×3 stacks, cut alike, and the inputs they are. An
    unreadable photo of a pair leaves the pair out (logged); a pair whose pictures differ in size is an
    error, since the effect is learned pixel by pixel."""
    kept: list[str] = []
    before: list[np.ndarray] = []
    after: list[np.ndarray] = []
    mismatched: list[str] = []
    for rel in files:
        try:
            a, b = decode_image(root / rel), decode_image(root / targets[rel])
        except ImageError as e:
            log.warning("skipped a pair: %s", e)
            continue
        if a.size != b.size:
            mismatched.append(f"{rel} is {a.size[0]}×{a.size[1]}, {targets[rel]} {b.size[0]}×{b.size[1]}")
            continue
        before.append(np.asarray(ImageOps.fit(a, (size, size), Image.Resampling.BILINEAR), dtype=np.uint8))
        after.append(np.asarray(ImageOps.fit(b, (size, size), Image.Resampling.BILINEAR), dtype=np.uint8))
        kept.append(rel)
    if mismatched:
        raise DataError(f"{root}: {len(mismatched)} pair(s) differ in size ({'; '.join(mismatched[:3])}); a before/after "
                        "pair must be the same picture size (upright), as the effect is learned pixel by pixel")
    empty = np.zeros((0, size, size, 3), np.uint8)
    return (np.stack(before) if before else empty), (np.stack(after) if after else empty), kept


def load_style(path: Path, size: int) -> np.ndarray:
    """A style image, its shorter side resized to ``size`` (the scale of the training photos, so its
    strokes keep their size relative to a photo), uint8 RGB."""
    try:
        img = decode_image(path)
    except ImageError as e:
        raise DataError(f"--style-image: {e}; give a JPEG or PNG picture of the style") from e
    w, h = img.size
    if min(w, h) < 16:
        raise DataError(f"--style-image {path} is {w}×{h} pixels; give a picture at least 16 pixels on each side "
                        f"(best at least {size})")
    scale = size / min(w, h)
    return np.asarray(img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR),
                      dtype=np.uint8)
