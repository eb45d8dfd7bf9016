"""Training: linear probe on cached frozen features, or fine-tuning on Lightning (checkpoints, resume, DDP).

Entry points: :func:`birdlens.train.api.train` (``TrainConfig`` -> run directory) and
:func:`birdlens.train.checkpoint.load_trained` (run directory -> model ready for inference).
"""

from birdlens.train.api import train
from birdlens.train.checkpoint import TrainedModel, load_trained
from birdlens.train.config import TrainConfig

__all__ = ["TrainConfig", "TrainedModel", "load_trained", "train"]
