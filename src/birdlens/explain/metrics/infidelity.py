"""Infidelity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019).

For perturbations ``I`` of the input, a faithful map ``phi`` predicts the change of the class score:
``infidelity = E_I[(beta * I . phi - (f(x) - f(x - I)))^2]``, lower is better. ``I`` is Gaussian pixel noise
(std ``noise`` in the normalised input space, one value per pixel shared by the channels, because a map has one
value per pixel), ``n_samples`` draws per image from its own generator (:mod:`~birdlens.explain.metrics.draws`). With ``normalize`` (the
default) ``beta`` is the least-squares scale ``E[I.phi * df] / E[(I.phi)^2]``, so the score does not depend on
the map's arbitrary units (Grad-CAM in [0, 1], IG in logit units); without it ``beta = 1``.

This is ``captum.metrics.infidelity`` with ``forward_func`` = the explained class's softmax probability (or
logit), ``attributions`` = the map copied to the channels divided by their count, and a ``perturb_func`` that
returns these same draws: equal values to float rounding. It is written here rather than called because
captum draws from one generator over the whole batch (an image's value would depend on its neighbours) and
takes maps of the input's shape; the cost is the same, the ``B * n_samples`` forwards
(``docs/benchmarks.md``, "Explanation-quality metrics against their references").
"""

from __future__ import annotations

from typing import Any

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
from birdlens.explain.metrics.forward import check_score, class_scores


def pixel_noise(images: torch.Tensor, n_samples: int, noise: float, seed: int) -> torch.Tensor:
    """``[B, n_samples, H, W]`` Gaussian draws (std ``noise``), each image's from its own generator."""
    h, w = images.shape[-2:]
    draws = [rng.standard_normal((n_samples, h, w), dtype=np.float32) for rng in image_rngs(images, seed)]
    return noise * torch.from_numpy(np.stack(draws))


def infidelity_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    perturbations: torch.Tensor,
    *,
    normalize: bool = True,
    score: str = "prob",
    batch_size: int = 64,
) -> np.ndarray:
    """Per-image infidelity for given pixel perturbations ``[B, S, H, W]`` (``x - I`` is evaluated)."""
    b, s = perturbations.shape[:2]
    x = images.detach().cpu().float()
    pert = perturbations.detach().cpu().float()
    f0 = class_scores(model, x, targets, score=score, batch_size=batch_size)
    t = torch.as_tensor(targets).view(-1)
    df = torch.empty(b, s, dtype=torch.float64)
    group = max(1, 4 * batch_size // s)  # images per pass: bounded memory for any n
    for i in range(0, b, group):
        perturbed = (x[i : i + group, None] - pert[i : i + group, :, None]).flatten(0, 1)  # [g*S, C, H, W]
        rep = t[i : i + group].repeat_interleave(s)
        after = class_scores(model, perturbed, rep, score=score, batch_size=batch_size)
        df[i : i + group] = f0[i : i + group, None] - after.view(-1, s)
    m = torch.nan_to_num(maps.detach().cpu().double())
    dot = (pert.double() * m[:, None]).flatten(2).sum(-1)  # [B, S]
    if normalize:
        aa, ab, bb = dot.pow(2).sum(1), (dot * df).sum(1), df.pow(2).sum(1)
        beta = torch.where(aa != 0, ab / torch.where(aa != 0, aa, 1.0), torch.zeros_like(ab))
        value = beta * beta * aa - 2 * beta * ab + bb
    else:
        value = (dot - df).pow(2).sum(1)
    return (value / s).numpy()


@register_metric
class Infidelity(Metric):
    name = "infidelity"
    direction = Direction.LOWER
    category = Category.FAITHFULNESS
    selectable = True
    description = "Squared error of map . noise predicting the score change under pixel noise (Yeh 2019)"

    def __init__(
        self,
        n_samples: int = 16,
        noise: float = 0.1,
        seed: int = 0,
        normalize: bool = True,
        score: str = "prob",
        batch_size: int = 64,
    ) -> None:
        self.n_samples = check_budget(self.name, "n_samples", n_samples)
        self.noise = check_noise(self.name, "noise", noise)
        self.seed = int(seed)
        self.normalize = bool(normalize)
        self.score = check_score(self.name, score)
        self.batch_size = batch_size

    def compute(self, model: Any, images: Any, maps: Any, targets: Any, **ctx: Any) -> np.ndarray:
        if model is None:
            raise ValueError(f"{self.name} needs the model")
        pert = pixel_noise(images, self.n_samples, self.noise, self.seed)
        return infidelity_scores(
            model,
            images,
            maps,
            targets,
            pert,
            normalize=self.normalize,
            score=self.score,
            batch_size=self.batch_size,
        )
