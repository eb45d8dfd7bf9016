"""Evaluation: accuracy with Wilson CI, per-class scores, calibration (ECE), confusion; figures; run tables."""

# Lazy exports: ``birdlens --help`` must not pay for importing torch (seconds on this CPU).
_LAZY = {
    "classification_metrics": "birdlens.evaluate.metrics",
    "evaluate_run": "birdlens.evaluate.run",
    "expected_calibration_error": "birdlens.evaluate.metrics",
    "reliability_bins": "birdlens.evaluate.metrics",
    "top_k_accuracy": "birdlens.evaluate.metrics",
    "wilson_interval": "birdlens.evaluate.metrics",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
