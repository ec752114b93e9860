"""Pretrained weights that ship inside an installed package's wheel (nothing is downloaded at run
time): found through the distribution's own file list, with one clear error when it is missing."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from tandem.errors import ConfigError


def wheel_file(dist: str, file: str, needed_for: str, extra: str | None = None) -> Path:
    """``file`` (a path inside the installed distribution ``dist``), which ``needed_for`` needs."""
    try:
        found = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError as e:
        also = f" (or pip install 'tandem[{extra}]')" if extra else ""
        raise ConfigError(f"{needed_for} come from the {dist} package, which is not installed; run `make install`{also}") from e
    path = Path(str(found.locate_file(file)))
    if not path.is_file():
        raise ConfigError(f"{dist} is installed but has no {Path(file).name}; reinstall it with `make install`")
    return path
