"""`tandem data fetch lfw`: LFW downloaded into a data home, in scikit-learn's layout
(``lfw_home/lfw_funneled/<Person>/*.jpg`` and the ``pairs*.txt`` files), the way TANDEM_DATA_HOME
expects it.

scikit-learn's downloader fetches the files and checks each against its published sha256; this
module stages the download in a folder of its own beside the target and moves ``lfw_home`` into
place only once it is complete and holds what LFW holds, so an interrupted or failed download never
leaves a half data home that later commands would take for LFW.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from tandem.errors import DataError

log = logging.getLogger(__name__)

# LFW as published: 5,749 people, 13,233 photos; pairs.txt holds 10 folds of 600 pairs.
LFW_PEOPLE = 5749
LFW_PHOTOS = 13233
PAIRS = ("pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt")
HOW = ("LFW is read from TANDEM_DATA_HOME/lfw_home/lfw_funneled/<Person>/*.jpg (scikit-learn's layout). "
       "Point TANDEM_DATA_HOME at a folder that holds lfw_home/, or run `tandem data fetch lfw --to DIR` on a "
       "machine with internet (about 230 MB from the LFW site through scikit-learn) and copy DIR here")


@dataclass(frozen=True)
class Fetched:
    data_home: Path
    people: int
    photos: int
    downloaded: bool  # False: it was there already


def verify_lfw(data_home: Path, complete: bool = False) -> Fetched:
    """What ``data_home`` holds of LFW, or a DataError saying what is missing. ``complete``: all of
    LFW as published (a fresh download); otherwise a copy may hold a subset of the people (as this
    project's shared copy does, by design), but its photos and its pairs files must be there."""
    root = data_home / "lfw_home"
    faces = root / "lfw_funneled"
    if not faces.is_dir():
        raise DataError(f"{data_home} holds no lfw_home/lfw_funneled/. {HOW}")
    missing = [p for p in PAIRS if not (root / p).is_file()]
    people = sum(1 for p in faces.iterdir() if p.is_dir())
    photos = sum(1 for _ in faces.glob("*/*.jpg"))
    short = complete and (people < LFW_PEOPLE or photos < LFW_PHOTOS)
    if missing or short or not photos:
        raise DataError(f"{root} is incomplete: {people} people, {photos} photos (LFW: {LFW_PEOPLE}, {LFW_PHOTOS})"
                        + (f", missing {', '.join(missing)}" if missing else "") + f". {HOW}")
    return Fetched(data_home, people, photos, downloaded=False)


def fetch_lfw(data_home: Path) -> Fetched:
    """LFW in ``data_home`` (downloaded unless a complete copy is there)."""
    try:
        return verify_lfw(data_home)
    except DataError:
        if (data_home / "lfw_home").exists():
            raise  # something is there but not LFW as published: never overwritten
    from sklearn.datasets import fetch_lfw_pairs

    data_home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lfw-download-", dir=data_home) as stage:
        log.info("downloading LFW (about 230 MB) into %s", stage)
        try:
            with warnings.catch_warnings():  # scikit-learn warns at each retry; the error below says it all
                warnings.simplefilter("ignore", UserWarning)
                # Fetches every LFW file (checked against scikit-learn's sha256s) and reads the test pairs.
                fetch_lfw_pairs(subset="test", data_home=stage, funneled=True, download_if_missing=True, n_retries=2)
        except OSError as e:  # URLError, timeouts, a refused proxy, a full disk
            raise DataError(f"could not download LFW ({e}). {HOW}") from e
        got = verify_lfw(Path(stage), complete=True)
        shutil.rmtree(Path(stage) / "lfw_home" / "joblib", ignore_errors=True)  # scikit-learn's cache of decoded pairs
        for archive in (Path(stage) / "lfw_home").glob("*.tgz"):
            archive.unlink()
        (Path(stage) / "lfw_home").rename(data_home / "lfw_home")
    return dataclasses.replace(got, data_home=data_home, downloaded=True)
