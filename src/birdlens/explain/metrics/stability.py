"""Stability of seeded stochastic explainers (LIME, SHAP): does the answer depend on the dice?

The method runs with ``n_seeds`` different seeds at its default budget; for each image the top ``fraction``
of pixels (default 10%) of each run form a region, and the score is the mean Jaccard overlap over all pairs of
runs. 1 = the same region every time. Chance level (independent random maps) is about
``fraction / (2 - fraction)`` (0.053 at 10%), which the random baseline shows in the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import torch

from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric
from birdlens.explain.metrics.ranking import top_fraction_mask

SeededExplainFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def topk_jaccard(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.1) -> np.ndarray:
    """Per-image Jaccard of the top-``fraction`` regions of two map batches."""
    ma, mb = top_fraction_mask(a, fraction).flatten(1), top_fraction_mask(b, fraction).flatten(1)
    inter = (ma & mb).sum(1).double()
    union = (ma | mb).sum(1).double()
    return (inter / union).cpu().numpy()


def seed_stability(maps_per_seed: Sequence[torch.Tensor], fraction: float = 0.1) -> np.ndarray:
    """Mean pairwise top-region Jaccard over runs with different seeds, per image."""
    if len(maps_per_seed) < 2:
        raise ValueError("stability needs at least two runs")
    pairs = [topk_jaccard(a, b, fraction) for a, b in combinations(maps_per_seed, 2)]
    return np.mean(pairs, axis=0)


@register_metric
class Stability(Metric):
    name = "stability"
    direction = Direction.HIGHER
    category = Category.ROBUSTNESS
    needs = frozenset({"explain_seeded"})
    description = "Mean Jaccard of the top-10% regions across 5 seeds (stochastic methods)"

    def __init__(self, seeds: Sequence[int] = (0, 1, 2, 3, 4), fraction: float = 0.1) -> None:
        self.seeds = tuple(seeds)
        self.fraction = fraction

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        fn: SeededExplainFn = ctx["explain_seeded"]
        return seed_stability([fn(images, targets, s) for s in self.seeds], self.fraction)
