"""Training: linear probe on cached frozen features, or fine-tuning on Lightning (checkpoints, resume, DDP).

Entry points: :func:`birdlens.train.api.train` (``TrainConfig`` -> run directory) and
:func:`birdlens.train.checkpoint.load_trained` (run directory -> model ready for inference).
"""

# Lazy exports: ``birdlens --help`` must not pay for importing torch (seconds on this CPU).
_LAZY = {
    "TrainConfig": "birdlens.train.config",
    "TrainedModel": "birdlens.train.checkpoint",
    "load_trained": "birdlens.train.checkpoint",
    "train": "birdlens.train.api",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
