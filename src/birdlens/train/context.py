"""What every training mode needs, built once by :func:`birdlens.train.api.train`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from birdlens.train.config import TrainConfig
from birdlens.train.data import RunData


@dataclass
class RunContext:
    cfg: TrainConfig  # resolved
    out: Path
    data: RunData
    model: nn.Module
    info: Any  # birdlens.models ModelInfo
    data_config: Any  # DataConfig at the run's image size
    is_main: bool = True
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        from birdlens.utils.console import is_quiet

        return is_quiet(self.cfg.quiet)

    def eval_transform(self) -> Any:
        from birdlens.models import eval_transform

        return eval_transform(self.data_config)

    def train_transform(self) -> Any:
        """The augmentation preset (``none`` still resizes and normalises like training expects)."""
        from birdlens.augment.presets import make_train_transform

        return make_train_transform(self.cfg.augment, self.data_config)
