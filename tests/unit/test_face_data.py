"""LFW's pairs file and the identity-disjoint split."""

import numpy as np
import pytest

from tandem.data.lfw_pairs import people_of, read_pairs
from tandem.data.split import identity_split
from tandem.errors import DataError


def test_pairs_are_cut_into_folds_where_different_pairs_give_way_to_same_pairs(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("10\t300\nAnn\t1\t2\nBob\t1\t3\nAnn\t1\tBob\t2\nCid\t1\t2\nCid\t1\tDee\t4\nEve\t2\tAnn\t1\n")
    pairs = read_pairs(f)
    assert [(p.fold, p.same) for p in pairs] == [(0, True), (0, True), (0, False), (1, True), (1, False), (1, False)]
    assert pairs[0].a == "Ann/Ann_0001.jpg" and pairs[2].b == "Bob/Bob_0002.jpg"
    assert people_of(pairs, {1}) == {"Cid", "Dee", "Eve", "Ann"}
    f.write_text("h\nAnn\t1\n")
    with pytest.raises(DataError, match="3 or 4"):
        read_pairs(f)


def test_identity_split_keeps_every_person_in_one_part():
    labels = np.repeat(np.arange(40), [1, 2, 3, 4, 5] * 8).tolist()
    split = identity_split(labels, val=0.25, seed=3, test_classes={0, 1, 2})
    parts = {k: {labels[i] for i in v} for k, v in split.as_dict().items()}
    assert parts["test"] == {0, 1, 2}
    assert not parts["train"] & parts["val"] and not parts["val"] & parts["test"] and not parts["train"] & parts["test"]
    assert all(labels.count(c) >= 2 for c in parts["val"])  # validation people have pairs
    assert sorted(i for v in split.as_dict().values() for i in v) == list(range(len(labels)))
    assert identity_split(labels, val=0.25, seed=3, test_classes={0, 1, 2}) == split
