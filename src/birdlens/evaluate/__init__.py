"""Evaluation: accuracy with Wilson CI, per-class scores, calibration (ECE), confusion; figures; run tables."""

from birdlens.utils.lazy import lazy_exports

# Lazy exports: ``birdlens --help`` must not pay for importing torch (docs/benchmarks.md#cli-start-up).
_LAZY = {
    "classification_metrics": "birdlens.evaluate.metrics",
    "evaluate_run": "birdlens.evaluate.run",
    "expected_calibration_error": "birdlens.evaluate.metrics",
    "reliability_bins": "birdlens.evaluate.metrics",
    "top_k_accuracy": "birdlens.evaluate.metrics",
    "wilson_interval": "birdlens.evaluate.metrics",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
