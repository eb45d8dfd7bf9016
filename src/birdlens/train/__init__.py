"""Training: linear probe on cached frozen features, or fine-tuning on Lightning (checkpoints, resume, DDP).

Entry points: :func:`birdlens.train.api.train` (``TrainConfig`` -> run directory) and
:func:`birdlens.train.checkpoint.load_trained` (run directory -> model ready for inference).
"""

from birdlens.utils.lazy import lazy_exports

# Lazy exports: ``birdlens --help`` must not pay for importing torch (seconds on this CPU).
_LAZY = {
    "TrainConfig": "birdlens.train.config",
    "TrainedModel": "birdlens.train.checkpoint",
    "load_trained": "birdlens.train.checkpoint",
    "train": "birdlens.train.api",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
