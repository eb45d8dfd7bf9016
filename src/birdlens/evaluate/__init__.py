"""Evaluation: accuracy with Wilson CI, per-class scores, calibration (ECE), confusion; figures; run tables."""

from birdlens.evaluate.metrics import (
    classification_metrics,
    expected_calibration_error,
    reliability_bins,
    top_k_accuracy,
    wilson_interval,
)
from birdlens.evaluate.run import evaluate_run

__all__ = [
    "classification_metrics",
    "evaluate_run",
    "expected_calibration_error",
    "reliability_bins",
    "top_k_accuracy",
    "wilson_interval",
]
