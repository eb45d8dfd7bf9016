"""Evaluation metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from birdlens.evaluate.metrics import (
    classification_metrics,
    expected_calibration_error,
    most_confused,
    reliability_bins,
    top_k_accuracy,
    wilson_interval,
)

Z = 1.959963984540054


def test_wilson_matches_hand_computation() -> None:
    # 0/10: lower 0, upper z^2 / (n + z^2)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(Z**2 / (10 + Z**2), abs=1e-12)
    assert hi == pytest.approx(0.27753, abs=1e-5)
    # 5/10: centre 0.5, half-width z*sqrt(0.025 + z^2/400) / (1 + z^2/10)
    lo, hi = wilson_interval(5, 10)
    half = Z * math.sqrt(0.025 + Z**2 / 400) / (1 + Z**2 / 10)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert (lo, hi) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 171/180 (a typical test result here): the published Wilson formula written out
    p, n = 171 / 180, 180
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n * n)) / (1 + Z**2 / n)
    assert wilson_interval(171, 180) == pytest.approx((centre - half, centre + half), abs=1e-12)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0, abs=1e-12) and lo == pytest.approx(10 / (10 + Z**2), abs=1e-12)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_ece_hand_example() -> None:
    conf = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([1, 0, 1, 1])
    # bin (0.8, 0.9]: confidence 0.9, accuracy 0.5 -> 2/4 * 0.4; bin (0.5, 0.6]: 0.6 vs 1.0 -> 2/4 * 0.4
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.4, abs=1e-12)
    bins = reliability_bins(conf, correct, n_bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    # perfectly calibrated: 3 of 4 right at confidence 0.75
    assert expected_calibration_error(np.full(4, 0.75), np.array([1, 1, 1, 0])) == pytest.approx(
        0.0, abs=1e-12
    )


def test_top_k_and_confusions() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    targets = np.array([0, 1, 1, 0])
    assert top_k_accuracy(probs, targets, 1) == 0.25
    assert top_k_accuracy(probs, targets, 2) == 0.75
    assert top_k_accuracy(probs, targets, 5) == 1.0  # capped at 3 classes
    cm = np.array([[3, 0, 1], [2, 5, 0], [0, 2, 4]])
    pairs = most_confused(cm, ["a", "b", "c"])
    assert pairs[0] == {"true": "b", "pred": "a", "count": 2}
    assert [p["count"] for p in pairs] == [2, 2, 1]


def test_classification_metrics_per_class() -> None:
    # targets a a b b c c ; predictions a b b b c a
    targets = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), pred] = 0.8
    m = classification_metrics(probs, targets, ["a", "b", "c"])
    assert m["n"] == 6 and m["correct"] == 4 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["accuracy_ci95"] == pytest.approx(list(wilson_interval(4, 6)))
    # a: precision 1/2, recall 1/2; b: precision 2/3, recall 1; c: precision 1, recall 1/2
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    f1s = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1s) / 3)
    assert m["per_class"]["a"]["support"] == 2
    # all confidences 0.8, accuracy 4/6
    assert m["ece"] == pytest.approx(abs(0.8 - 4 / 6))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["nll"] == pytest.approx(-(4 * math.log(0.8) + 2 * math.log(0.1)) / 6)


def test_classification_metrics_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="columns"):
        classification_metrics(np.ones((2, 3)) / 3, np.array([0, 1]), ["a", "b"])
