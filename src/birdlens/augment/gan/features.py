"""Image features for GAN metrics: the bundled ImageNet-pretrained EfficientNet-Lite0, pooled (1280-d).

Why Lite0 and not Inception: Lite0 ships with birdlens (no download), so FD/KID run offline. The numbers
are therefore named **FD-lite0** and **KID-lite0** everywhere: they are *not* comparable with published
Inception FID values, only with each other (same extractor, same resolution, same sample sizes).

Both real and generated images go through the same path: GAN resolution (e.g. 64 px) -> bilinear upsampling
to 224 px -> Lite0 normalisation (mean = std = 0.5, i.e. the GAN's own [-1, 1] range) -> pooled features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birdlens.models import create_model

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps images in [-1, 1], float [B, 3, H, W], to features [B, D]."""

LITE0_INPUT = 224


def build_lite0() -> nn.Module:
    """EfficientNet-Lite0 with the bundled ImageNet weights and no classifier (pooled features)."""
    return create_model("efficientnet_lite0", num_classes=0, pretrained=True).eval()


class Lite0Features:
    """Callable feature extractor (see module doc). ``batch_size`` 16 suits a 2-core CPU. On ``device``
    (e.g. ``cuda``) the images are moved there batch by batch and the features come back on the CPU."""

    name = "lite0"

    def __init__(
        self,
        model: nn.Module | None = None,
        batch_size: int = 16,
        channels_last: bool = True,
        device: str | torch.device = "cpu",
        input_size: int = LITE0_INPUT,
    ) -> None:
        self.device = torch.device(device)
        self.model = (model or build_lite0()).eval().to(self.device)
        self.channels_last = channels_last
        if channels_last:  # faster CPU inference (oneDNN skips a reorder per convolution)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.batch_size = batch_size
        self.input_size = input_size  # below 224 only where time is short (the demo): FD-lite0 uses 224

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].to(self.device).float()
            if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
                size = (self.input_size, self.input_size)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(self.model(x).flatten(1).cpu())
        return torch.cat(out) if out else torch.empty(0)


def extract(fn: FeatureFn, images: torch.Tensor | Iterable[torch.Tensor]) -> np.ndarray:
    """float64 numpy features of images in [-1, 1] (a tensor, or an iterable of batches)."""
    batches = [images] if isinstance(images, torch.Tensor) else list(images)
    return np.concatenate([fn(b).double().numpy() for b in batches]) if batches else np.empty((0, 0))
