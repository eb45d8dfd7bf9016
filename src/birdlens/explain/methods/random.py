"""A seeded random map: the floor every explanation-quality metric should beat.

Smooth by default (uniform noise on a ``resolution`` x ``resolution`` grid, bilinearly upsampled) so that it
has the spatial statistics of a CAM; ``resolution=None`` gives independent per-pixel noise. Each image's
generator is seeded from ``seed`` and the image's bytes: the same seed gives the same map for an image
whatever batch it comes in, and different images get different maps.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import nn

from birdlens.explain.base import SEED, Explainer, Param, register
from birdlens.explain.imaging import resize_maps


@register("random")
class RandomMap(Explainer):
    """Seeded uniform noise, smooth at ``resolution`` (None: per pixel)."""

    title = "Random"
    panel_order = 80
    stochastic = True
    in_app = False
    contrastive = False  # content-free: the same noise for every class, so it cannot say "and not B"
    tunable = (
        SEED,
        Param("resolution", int, 7, lo=1, hi=1024, optional=True, doc="noise grid side (none: per pixel)"),
    )

    def __init__(self, model: nn.Module, *, seed: int = 0, resolution: int | None = 7, **common: Any) -> None:
        super().__init__(model, **common)
        self.seed = int(seed)
        self.resolution = resolution
        self.params.update(seed=self.seed, resolution=resolution)

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        logits, target = self.predict(x, target)
        h, w = x.shape[2], x.shape[3]
        maps = []
        for i in range(x.shape[0]):
            digest = zlib.crc32(x[i].detach().cpu().contiguous().numpy().tobytes())
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + digest) % (2**63))
            if self.resolution:
                small = torch.rand(1, self.resolution, self.resolution, generator=gen)
                maps.append(resize_maps(small, (h, w))[0])
            else:
                maps.append(torch.rand(h, w, generator=gen))
        return torch.stack(maps), target, self.target_scores(logits, target), {}
