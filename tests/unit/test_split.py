from collections import Counter

import pytest

from tandem.data.split import stratified_split, stratified_subset
from tandem.errors import DataError

LABELS = [0] * 50 + [1] * 20 + [2] * 5 + [3] * 2 + [4] * 1


def test_split_is_deterministic_and_disjoint():
    a = stratified_split(LABELS, 0.1, 0.2, seed=7)
    b = stratified_split(LABELS, 0.1, 0.2, seed=7)
    c = stratified_split(LABELS, 0.1, 0.2, seed=8)
    assert a == b
    assert a != c
    parts = [set(a.train), set(a.val), set(a.test)]
    assert sum(map(len, parts)) == len(LABELS)
    assert set().union(*parts) == set(range(len(LABELS)))
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_split_is_stratified_and_keeps_every_class_in_train():
    s = stratified_split(LABELS, 0.1, 0.2, seed=0)
    test = Counter(LABELS[i] for i in s.test)
    val = Counter(LABELS[i] for i in s.val)
    train = Counter(LABELS[i] for i in s.train)
    assert test[0] == 10 and val[0] == 5 and train[0] == 35
    assert test[1] == 4 and val[1] == 2 and train[1] == 14
    assert all(train[c] >= 1 for c in set(LABELS))
    assert train[4] == 1 and test[4] == 0  # a one-image class can only train
    assert test[3] == 1 and train[3] == 1


def test_subset_keeps_fraction_per_class_with_a_floor():
    keep = stratified_subset(LABELS, 0.2, seed=1)
    counts = Counter(LABELS[i] for i in keep)
    assert counts[0] == 10 and counts[1] == 4 and counts[2] == 3 and counts[3] == 2 and counts[4] == 1
    assert keep == sorted(keep) == stratified_subset(LABELS, 0.2, seed=1)
    assert stratified_subset(LABELS, 1.0, seed=1) == list(range(len(LABELS)))


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_subset_rejects_bad_fraction(fraction):
    with pytest.raises(DataError, match="--subset"):
        stratified_subset(LABELS, fraction, seed=0)


def test_split_rejects_fractions_that_leave_no_training_data():
    with pytest.raises(DataError, match="sum to less than 1"):
        stratified_split(LABELS, 0.5, 0.5, seed=0)


def test_test_split_does_not_depend_on_the_validation_fraction():
    """Folding validation into training (val=0) must leave the test images exactly as they were,
    so that results with and without a validation split compare on the same test set."""
    with_val = stratified_split(LABELS, 0.1, 0.2, seed=5)
    without = stratified_split(LABELS, 0.0, 0.2, seed=5)
    assert with_val.test == without.test
    assert sorted(with_val.train + with_val.val) == without.train and without.val == []
