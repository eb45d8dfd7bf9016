"""Robustness of a map to small input noise: max-/average-sensitivity (Yeh et al., NeurIPS 2019) and the
local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018). All three re-explain noisy copies of each image
(context ``explain_fn``), so they cost ``n_samples`` explanations per image and are opt-in.

For draws ``x' = x + eps`` (one draw per sample and image, all of ``C*H*W`` values):

* **max_sensitivity** / **avg_sensitivity**: the max / mean over draws of ``||phi(x') - phi(x)|| /
  ||phi(x)||`` (Frobenius norms of the raw maps), ``eps ~ U(-radius, radius)``, Quantus' defaults (radius 0.2);
* **local_lipschitz**: the max over draws of ``||phi'(x') - phi'(x)|| / (||x' - x|| + 1e-10)`` with ``phi'``
  each map divided by its maximum absolute value, ``eps ~ N(0, std^2)`` (Quantus: std 0.1).

Lower is better for all three. Each image's ``[n_samples, C*H*W]`` draws come from its own generator
(:mod:`~birdlens.explain.metrics.draws`); given the same draws through its ``perturb_func``, Quantus'
``MaxSensitivity``, ``AvgSensitivity`` and ``LocalLipschitzEstimate`` give equal values (their
normalisation set to per image, see ``complexity``). The cost is the ``B * n_samples`` explanations, as in
Quantus (which batches over images too); what is added is the per-image seeding and the map-shaped API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from birdlens.explain.metrics.base import (
    Category,
    Direction,
    Metric,
    check_budget,
    check_noise,
    register_metric,
)
from birdlens.explain.metrics.draws import image_rngs

ExplainFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def input_noise(images: torch.Tensor, n_samples: int, kind: str, level: float, seed: int) -> torch.Tensor:
    """``[S, B, C, H, W]`` float32 draws: uniform on ``[-level, level]`` or normal with std ``level``, each
    image's ``[S, C*H*W]`` from its own generator."""
    d = int(np.prod(images.shape[1:]))
    draws = [
        rng.uniform(-level, level, (n_samples, d))
        if kind == "uniform"
        else rng.normal(0.0, level, (n_samples, d))
        for rng in image_rngs(images, seed)
    ]
    return torch.from_numpy(np.stack(draws, 1).astype(np.float32)).view(n_samples, *images.shape)


def reexplain(
    model: torch.nn.Module, explain_fn: ExplainFn, noisy: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Maps ``[S, B, H, W]`` of noisy copies ``[S, B, C, H, W]``: one explainer call over all ``S * B`` images
    (the explain function batches them itself), targets repeated per sample."""
    s, b = noisy.shape[:2]
    t = torch.as_tensor(targets).view(-1).repeat(s)
    maps = explain_fn(model, noisy.flatten(0, 1), t)
    return maps.detach().cpu().double().view(s, b, -1)


def per_image_max_normalise(a: torch.Tensor) -> torch.Tensor:
    """Each map (last axis) over its maximum absolute value; an all-zero map stays zero."""
    top = a.abs().amax(-1, keepdim=True)
    return torch.where(top > 0, a / torch.where(top > 0, top, 1.0), a)


class _Robustness(Metric):
    category = Category.ROBUSTNESS
    direction = Direction.LOWER
    needs = frozenset({"explain_fn"})
    selectable = True
    noise_kind: ClassVar[str]
    level_option: ClassVar[str]

    def __init__(self, n_samples: int = 8, seed: int = 0, **level: float) -> None:
        self.n_samples = check_budget(self.name, "n_samples", n_samples)
        self.seed = int(seed)
        unknown = set(level) - {self.level_option}
        if unknown:
            raise TypeError(
                f"{self.name} has no option {sorted(unknown)}; it takes n_samples, seed, {self.level_option}"
            )
        self.level = check_noise(
            self.name, self.level_option, level.get(self.level_option, self.default_level)
        )

    default_level: ClassVar[float]

    def compute(self, model: Any, images: Any, maps: Any, targets: Any, **ctx: Any) -> np.ndarray:
        if model is None:
            raise ValueError(f"{self.name} needs the model")
        x = images.detach().cpu().float()
        eps = input_noise(x, self.n_samples, self.noise_kind, self.level, self.seed)
        noisy = x[None] + eps
        again = reexplain(model, ctx["explain_fn"], noisy, targets)
        base = torch.nan_to_num(maps.detach().cpu().double().flatten(1))
        return self.reduce(base, torch.nan_to_num(again), eps.double().flatten(2)).numpy()

    def reduce(self, base: torch.Tensor, again: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``[B]`` from the original maps ``[B, P]``, re-explained maps ``[S, B, P]`` and draws ``[S, B, D]``."""
        size = base.norm(dim=-1)
        ratio = (again - base).norm(dim=-1) / torch.where(size > 0, size, torch.nan)  # [S, B]; NaN: zero map
        return ratio.amax(0) if self.name == "max_sensitivity" else ratio.mean(0)


@register_metric
class MaxSensitivity(_Robustness):
    name = "max_sensitivity"
    noise_kind = "uniform"
    level_option = "radius"
    default_level = 0.2
    description = "Max over uniform input noise of ||map change|| / ||map|| (Yeh 2019)"


@register_metric
class AvgSensitivity(_Robustness):
    name = "avg_sensitivity"
    noise_kind = "uniform"
    level_option = "radius"
    default_level = 0.2
    description = "Mean over uniform input noise of ||map change|| / ||map|| (Yeh 2019)"


@register_metric
class LocalLipschitz(_Robustness):
    name = "local_lipschitz"
    noise_kind = "normal"
    level_option = "std"
    default_level = 0.1
    description = "Max over Gaussian input noise of ||map change|| / ||input change|| (Alvarez-Melis 2018)"

    def reduce(self, base: torch.Tensor, again: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        num = (per_image_max_normalise(again) - per_image_max_normalise(base)).norm(dim=-1)
        return (num / (eps.norm(dim=-1) + 1e-10)).amax(0)
