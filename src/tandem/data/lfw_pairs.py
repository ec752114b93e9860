"""LFW's verification pairs (``pairs.txt``): ten folds, each a block of same-person lines
(``name i j``) followed by a block of different-person lines (``name1 i name2 j``).

The shared copy drops pairs whose people are missing, so the header's counts are wrong there:
folds are found where a 4-field block gives way to a 3-field one, never from the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tandem.errors import DataError


@dataclass(frozen=True)
class Pair:
    a: str  # path relative to lfw_funneled/, e.g. "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    b: str
    same: bool
    fold: int  # 0-based


def _file(name: str, index: str) -> str:
    return f"{name}/{name}_{int(index):04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    if not path.is_file():
        raise DataError(f"{path}: no LFW pairs file; it lies beside lfw_funneled/ in lfw_home/ (see the data README)")
    pairs: list[Pair] = []
    fold, previous = 0, 3
    lines = path.read_text("utf-8").splitlines()
    for n, line in enumerate(lines[1:], start=2):  # the first line is the header
        fields = line.strip().split("\t")
        if fields == [""]:
            continue
        if len(fields) == 3:
            if previous == 4:
                fold += 1
            pairs.append(Pair(_file(fields[0], fields[1]), _file(fields[0], fields[2]), True, fold))
        elif len(fields) == 4:
            pairs.append(Pair(_file(fields[0], fields[1]), _file(fields[2], fields[3]), False, fold))
        else:
            raise DataError(f"{path}:{n}: expected 3 or 4 tab-separated fields, got {len(fields)}")
        previous = len(fields)
    return pairs


def people_of(pairs: list[Pair], folds: set[int]) -> set[str]:
    """Everyone who appears in the given folds' pairs."""
    return {p.split("/")[0] for pair in pairs if pair.fold in folds for p in (pair.a, pair.b)}
