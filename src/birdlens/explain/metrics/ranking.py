"""Pixel orderings and rank statistics shared by the metrics.

Ties are broken by raster order (a stable sort), so a constant map — or the flat zero region of a ReLU'd CAM —
always yields the same ordering; two runs and two batch sizes therefore give identical curves.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def _clean(maps: torch.Tensor) -> torch.Tensor:
    # NaN would sort arbitrarily; treat it as "no evidence at all".
    m = maps.detach().float().flatten(1)
    return torch.nan_to_num(m, nan=-float("inf"))


def pixel_order(maps: torch.Tensor) -> torch.Tensor:
    """``[B, H*W]`` pixel indices, most important first; ties keep raster order."""
    return torch.sort(_clean(maps), dim=1, descending=True, stable=True).indices


def pixel_rank(maps: torch.Tensor) -> torch.Tensor:
    """``[B, H*W]``: the position of every pixel in :func:`pixel_order` (0 = most important)."""
    order = pixel_order(maps)
    rank = torch.empty_like(order)
    pos = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank.scatter_(1, order, pos)
    return rank


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool ``[B, H, W]``: the ``ceil(fraction * H*W)`` highest pixels of each map."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    b, h, w = maps.shape
    k = int(np.ceil(fraction * h * w))
    return (pixel_rank(maps) < k).view(b, h, w)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties; NaN when either side is constant (undefined)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))
