"""Complexity of a map (Quantus' "complexity" category): how few pixels does the explanation use?

Both read the absolute map, each image divided by its own maximum (Quantus' ``normalise_by_max``, but per
image: Quantus' default divides the whole batch by one maximum, which makes an image's score depend on its
batch neighbours; Gini and the entropy are scale-free, so only the epsilons below feel the difference).

* **sparseness** (Chalasani et al., ICML 2020): the Gini index of the ``H*W`` values ``a`` (``a + 1e-7``,
  sorted ascending, ``sum((2i - n - 1) a_i) / (n sum a)``); 1 = all mass on one pixel, 0 = uniform.
  Higher is better.
* **complexity** (Bhatt et al., IJCAI 2020): the entropy ``-sum(p log(p + 1e-12))`` of ``p = a / sum a``;
  ``log(H*W)`` for a uniform map, 0 for one pixel. Lower is better.

These are properties of the map alone (no model call), so they are cheap and on by default; they are only
meaningful beside a faithfulness metric (a one-pixel map is sparse and useless).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric


def normalised_abs(maps: torch.Tensor) -> torch.Tensor:
    """``[B, H*W]`` float64: ``|map|`` over its per-image maximum (an all-zero map stays zero)."""
    a = maps.detach().double().flatten(1).abs().cpu()
    top = a.amax(1, keepdim=True)
    return torch.where(top > 0, a / torch.where(top > 0, top, 1.0), a)


def gini(maps: torch.Tensor) -> np.ndarray:
    """Per-image Gini index of the normalised absolute map (Quantus ``Sparseness``)."""
    a = torch.sort(normalised_abs(maps) + 1e-7, dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return (((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))).numpy()


def entropy(maps: torch.Tensor) -> np.ndarray:
    """Per-image entropy of the normalised absolute map's share per pixel (Quantus ``Complexity``);
    NaN for an all-zero map, which has no distribution."""
    a = normalised_abs(maps)
    p = a / a.sum(1, keepdim=True)
    return (-(p * torch.log(p + 1e-12)).sum(1)).numpy()


@register_metric
class Sparseness(Metric):
    name = "sparseness"
    direction = Direction.HIGHER
    category = Category.COMPLEXITY
    selectable = True
    description = "Gini index of |map| (Chalasani 2020): 1 = one pixel, 0 = uniform"

    def compute(self, model: Any, images: Any, maps: torch.Tensor, targets: Any, **ctx: Any) -> np.ndarray:
        return gini(maps)


@register_metric
class Complexity(Metric):
    name = "complexity"
    direction = Direction.LOWER
    category = Category.COMPLEXITY
    selectable = True
    description = "Entropy of |map|'s share per pixel (Bhatt 2020): 0 = one pixel, log(H*W) = uniform"

    def compute(self, model: Any, images: Any, maps: torch.Tensor, targets: Any, **ctx: Any) -> np.ndarray:
        return entropy(maps)
