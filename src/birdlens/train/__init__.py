"""Training: linear probe on cached frozen features, or fine-tuning on Lightning (checkpoints, resume, DDP).

Entry points: :func:`birdlens.train.api.train` (``TrainConfig`` -> run directory) and ``load_trained`` (run
directory -> model ready for inference). ``birdlens.train.load_trained`` and ``TrainedModel`` are public aliases
of :func:`birdlens.runs.load_trained` / :class:`birdlens.runs.TrainedModel`, where reading a run lives.
"""

from birdlens.utils.lazy import lazy_exports

# Lazy exports: ``birdlens --help`` must not pay for importing torch (docs/benchmarks.md#cli-start-up).
_LAZY = {
    "TrainConfig": "birdlens.train.config",
    "TrainedModel": "birdlens.runs.trained",
    "load_trained": "birdlens.runs.trained",
    "train": "birdlens.train.api",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
