"""Localisation where ground truth exists: pointing game and positive-energy share inside the object.

The object region is a bool mask ``[B, H, W]`` at map resolution, from a bounding box or a segmentation/part
mask (see :mod:`birdlens.explain.metrics.regions`).

Ties are treated as a uniform random choice, so no map gains from a lucky tie-break: the pointing game scores
the *share of the maximal pixels* that fall inside the object (0/1 for a unique maximum; the object's area
share for a constant map), and a map with no positive mass counts as uniform for the energy share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric


def _regions(regions: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(regions).to(maps.device)
    if r.shape != maps.shape:
        raise ValueError(f"regions {tuple(r.shape)} must match maps {tuple(maps.shape)}")
    return r.bool()


def pointing_game(maps: torch.Tensor, regions: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Share of each map's maximal pixels inside the region (dilated by ``tolerance`` pixels), ``[B]``.

    Zhang et al. (2016) use a 15-pixel tolerance; the default 0 is the strict game.
    """
    m = torch.nan_to_num(maps.detach().float(), nan=-float("inf"))
    r = _regions(regions, maps).float()
    if tolerance > 0:
        k = 2 * tolerance + 1
        r = (F.max_pool2d(r[:, None], k, stride=1, padding=tolerance)[:, 0] > 0).float()
    is_max = (m == m.flatten(1).amax(1)[:, None, None]).float()
    return (is_max * r).flatten(1).sum(1) / is_max.flatten(1).sum(1)


def energy_share(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share of the positive map mass inside the region, ``[B]`` (uniform map if there is no positive mass)."""
    pos = torch.nan_to_num(maps.detach().float(), nan=0.0).clamp_min(0).flatten(1)
    r = _regions(regions, maps).flatten(1).float()
    total = pos.sum(1)
    area = r.mean(1)
    inside = (pos * r).sum(1) / total.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(total > 0, inside, area)


@register_metric
class PointingGame(Metric):
    name = "pointing_game"
    direction = Direction.HIGHER
    category = Category.LOCALISATION
    needs = frozenset({"regions"})
    description = "Is the map's maximum inside the object box/mask (share of tied maxima inside)"

    def __init__(self, tolerance: int = 0) -> None:
        self.tolerance = tolerance

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        return pointing_game(maps, ctx["regions"], self.tolerance).cpu().numpy()


@register_metric
class EnergyInside(Metric):
    name = "energy_inside"
    direction = Direction.HIGHER
    category = Category.LOCALISATION
    needs = frozenset({"regions"})
    description = "Share of the positive map energy inside the object box/mask"

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        return energy_share(maps, ctx["regions"]).cpu().numpy()
