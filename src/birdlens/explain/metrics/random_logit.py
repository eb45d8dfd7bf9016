"""The random-logit test (Sixt et al., ICML 2020), beside the cascading model randomisation of ``sanity``.

A map that explains *this class* must change when another class is explained. For each image a different class
is drawn uniformly from the others, the image is re-explained for it (context ``explain_fn``), and the score is
the SSIM (``skimage.metrics.structural_similarity``, data range = the pair's range) between the two maps, each
divided by its maximum absolute value. Lower is better: 1 = the map ignores which class is asked.

SSIM is computed on the 2-D maps (7 x 7 windows). Quantus computes it on the *flattened* maps (windows of 7
pixels along raster rows), which mixes the ends of adjacent rows; ``flat=True`` reproduces that for parity.

The draw is Quantus' ``RandomLogit``: an integer in ``[0, K - 1)`` indexing the classes other than the target,
here from each image's own generator (:mod:`~birdlens.explain.metrics.draws`); with the same draws Quantus
gives equal values (its normalisation set to per image, see ``complexity``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric
from birdlens.explain.metrics.draws import image_rngs
from birdlens.explain.metrics.perturbation import model_device, select_logits
from birdlens.explain.metrics.robustness import per_image_max_normalise


def off_picks(images: torch.Tensor, n_classes: int, seed: int) -> np.ndarray:
    """Per image, an index in ``[0, n_classes - 1)`` into the classes other than its target."""
    return np.array([rng.integers(0, n_classes - 1) for rng in image_rngs(images, seed)], dtype=np.int64)


def off_classes(targets: torch.Tensor, picks: np.ndarray) -> torch.Tensor:
    """The ``picks``-th class that is not the target (Quantus' indexing of the filtered class list)."""
    t = torch.as_tensor(targets).view(-1).cpu().numpy()
    return torch.from_numpy(picks + (picks >= t)).long()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps over their joint range (Quantus' ``ssim``); NaN when both are one constant."""
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi == lo:
        return float("nan")
    return float(structural_similarity(a, b, data_range=float(hi - lo)))


def n_classes_of(model: torch.nn.Module, images: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(select_logits(model(images[:1].to(model_device(model)))).shape[-1])


@register_metric
class RandomLogit(Metric):
    name = "random_logit"
    direction = Direction.LOWER
    category = Category.RANDOMISATION
    selectable = True
    needs = frozenset({"explain_fn"})
    description = "SSIM of the map vs the map for a random other class (Sixt 2020): 1 = class-blind"

    def __init__(self, seed: int = 0, flat: bool = False) -> None:
        self.seed = int(seed)
        self.flat = bool(flat)

    def compute(self, model: Any, images: Any, maps: Any, targets: Any, **ctx: Any) -> np.ndarray:
        if model is None:
            raise ValueError(f"{self.name} needs the model")
        k = n_classes_of(model, images)
        if k < 2:
            raise ValueError(f"{self.name} needs a model with at least 2 classes, this one has {k}")
        other = ctx["explain_fn"](model, images, off_classes(targets, off_picks(images, k, self.seed)))
        h, w = maps.shape[1:]
        a = per_image_max_normalise(torch.nan_to_num(maps.detach().cpu().double().flatten(1)))
        b = per_image_max_normalise(torch.nan_to_num(other.detach().cpu().double().flatten(1)))
        shape = (-1,) if self.flat else (h, w)
        return np.array(
            [ssim(x.view(shape).numpy(), y.view(shape).numpy()) for x, y in zip(a, b, strict=True)]
        )
