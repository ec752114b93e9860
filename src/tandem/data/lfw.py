"""Labeled Faces in the Wild, read straight from its person folders.

scikit-learn's ``fetch_lfw_people`` would write a joblib cache under the data home, which is
read-only in CI; reading the folders needs no cache and gives the same people. The crop is
scikit-learn's default window for the 250x250 funneled images (rows 70:195, columns 78:172).
"""

from __future__ import annotations

from pathlib import Path

from tandem.bundle.preprocess import CropSpec
from tandem.data.catalog import ImageCatalog
from tandem.data.folder import scan_class_folders
from tandem.errors import DataError

LFW_SIZE = 250
LFW_CROP = CropSpec(mode="box", box=(78 / LFW_SIZE, 70 / LFW_SIZE, 172 / LFW_SIZE, 195 / LFW_SIZE))


def lfw_images_dir(data_home: Path) -> Path:
    d = data_home / "lfw_home" / "lfw_funneled"
    if not d.is_dir():
        raise DataError(f"{data_home}: no lfw_home/lfw_funneled/ folder; set TANDEM_DATA_HOME to the folder that holds lfw_home/")
    return d


def load_lfw(data_home: Path, min_faces: int = 20, max_faces: int | None = None) -> ImageCatalog:
    """People with at least ``min_faces`` (and, if given, fewer than ``max_faces``) images."""
    if min_faces < 1:
        raise DataError(f"--min-faces must be at least 1, got {min_faces}")
    catalog = scan_class_folders(lfw_images_dir(data_home), min_images=min_faces)
    if max_faces is not None:
        keep = [i for i, n in enumerate(catalog.counts()) if n < max_faces]
        remap = {old: new for new, old in enumerate(keep)}
        records = [type(r)(r.path, remap[r.label]) for r in catalog.records if r.label in remap]
        catalog = ImageCatalog(catalog.root, [catalog.classes[i] for i in keep], records, LFW_CROP, "", catalog.skipped_files)
    catalog.crop = LFW_CROP
    catalog.source = "lfw"
    return catalog
