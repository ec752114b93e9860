"""Calibrated percentages, the per-gallery no-match threshold, and the verification metrics."""

import numpy as np
import pytest

from tandem.faces import metrics
from tandem.faces.calibration import Calibration, fit, no_match_threshold, template_scores


def test_fitted_calibration_is_monotone_and_separates():
    rng = np.random.default_rng(0)
    cal = fit(rng.normal(0.7, 0.1, 500), rng.normal(0.1, 0.1, 2000))
    p = cal.probability(np.linspace(-1, 1, 50))
    assert (np.diff(p) >= 0).all()
    assert cal.probability(0.05) < 0.05 and cal.probability(0.8) > 0.95
    # Balanced weights: the even odds lie where the two curves cross (0.4); 0.3 and 0.5 are far apart.
    assert cal.probability(0.3) < 0.5 < cal.probability(0.5)


def test_calibration_round_trips_and_refuses_bad_points():
    cal = fit(np.array([0.8, 0.9, 0.7]), np.array([0.1, 0.2, 0.3, 0.0]))
    again = Calibration.from_json(cal.to_json())
    assert again == cal
    with pytest.raises(ValueError):
        Calibration.from_json({"x": [0.5, 0.1], "y": [0, 1]})


def test_template_scores_compare_photos_with_other_photos_of_their_person():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 16))
    labels = np.repeat(np.arange(6), 5)
    emb = centres[labels] + 0.3 * rng.normal(size=(30, 16))
    genuine, impostor = template_scores(emb, labels)
    assert len(genuine) == 30 and len(impostor) > 30
    assert genuine.mean() > impostor.mean() + 0.5


def test_no_match_threshold_lets_only_far_of_strangers_through_and_skips_the_enrolled():
    rng = np.random.default_rng(2)
    gallery = metrics.unit(rng.normal(size=(50, 32)))
    probes = rng.normal(size=(1000, 32))
    names = [f"p{i}" for i in range(1000)]
    t = no_match_threshold(probes, names, gallery, [f"g{i}" for i in range(50)], far=0.01)
    best = (metrics.unit(probes) @ gallery.T).max(1)
    assert 0.005 <= (best >= t).mean() <= 0.015
    # A probe of an enrolled person is no stranger: it is left out.
    assert np.isnan(no_match_threshold(probes[:1], ["g0"], gallery, ["g0"]))


def test_verification_metrics():
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    same = np.array([True, True, True, False, False, False])
    assert metrics.auc(s, same) == 1.0
    assert 0.3 < metrics.best_threshold(s, same) <= 0.7
    v = metrics.verify_folds(s, same, np.array([0, 0, 1, 1, 0, 1]))
    assert v.accuracy == 1.0 and v.tar_at_far1 == 1.0
    assert metrics.auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
