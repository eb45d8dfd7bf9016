"""RISE (Petsiuk et al. 2018): the target's score under random masks, averaged with the masks as weights.

``S = sum_i f(x * M_i + r * (1 - M_i)) M_i / (N p)``: each mask ``M_i`` keeps every cell of a ``grid`` x
``grid`` grid with probability ``p = keep``, is upsampled bilinearly (half-pixel centres) to
``(grid + 1)`` cells of ``ceil(side / grid)`` px and cropped at a random shift below one cell, as the
paper's code does; ``r`` is the reference image (``"zero"``: 0 in the model's input space, the masked
normalised tensor of the paper's code). Mask ``i`` is drawn on the CPU from a generator seeded by
``(seed, i)``: the same masks on any device, for every image, whatever the batching. The masked copies of
several images fill each model batch (:mod:`birdlens.explain.batching`), each map equal to explaining the
image alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from birdlens.explain.base import SEED, Explainer, Param, register
from birdlens.explain.batching import Job, alone_rows, chunk_bounds, pooled_values
from birdlens.explain.methods.perturb import (
    PRECISION,
    REFERENCES,
    SCORE,
    check_options,
    reference_image,
    row_generator,
)

#: masks built (and weighted) per step: bounds the memory of the weighted sum
MASK_CHUNK = 64


def rise_masks(seed: int, lo: int, hi: int, size: tuple[int, int], grid: int, keep: float) -> torch.Tensor:
    """Masks ``lo .. hi - 1`` as float32 ``[hi - lo, H, W]`` in [0, 1] (CPU)."""
    h, w = size
    ch, cw = math.ceil(h / grid), math.ceil(w / grid)
    cells, shifts = [], []
    for row in range(lo, hi):
        g = row_generator(seed, row)
        cells.append((torch.rand(grid, grid, generator=g) < keep).float())
        shifts.append(
            (int(torch.randint(0, ch, (1,), generator=g)), int(torch.randint(0, cw, (1,), generator=g)))
        )
    up = F.interpolate(
        torch.stack(cells)[:, None],
        size=((grid + 1) * ch, (grid + 1) * cw),
        mode="bilinear",
        align_corners=False,
    )[:, 0].clamp_(0, 1)  # bilinear weights round to 1 + 1 ulp between kept cells
    return torch.stack([up[k, dy : dy + h, dx : dx + w] for k, (dy, dx) in enumerate(shifts)])


@register("rise")
class Rise(Explainer):
    """Mask-weighted mean of the target's score over ``num_masks`` random masks."""

    title = "RISE"
    panel_order = 55
    stochastic = True
    heavy = True
    batched = True
    budget_param = "num_masks"
    tunable = (
        Param("num_masks", int, 2000, lo=1, hi=20000, doc="random masks (model forwards) per image"),
        Param("grid", int, 7, lo=1, hi=64, doc="cells per side of a mask before upsampling"),
        Param("keep", float, 0.5, lo=0.01, hi=1.0, doc="probability that a cell is kept"),
        Param("baseline", str, "zero", choices=REFERENCES, doc="what a masked pixel shows"),
        Param("blur_sigma", float, 10.0, lo=0.0, hi=100.0, doc="Gaussian sigma (px) of baseline='blurred'"),
        Param("batch_size", int, 4, lo=1, hi=64, doc="masked images per model call"),
        SEED,
        SCORE,
        PRECISION,
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        num_masks: int = 2000,
        grid: int = 7,
        keep: float = 0.5,
        baseline: str | float | torch.Tensor = "zero",
        blur_sigma: float = 10.0,
        batch_size: int = 4,
        seed: int = 0,
        score: str = "prob",
        precision: str = "fp32",
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        check_options(score, precision)
        self.num_masks = self.checked("num_masks", num_masks)
        self.grid = self.checked("grid", grid)
        self.keep = self.checked("keep", keep)
        if isinstance(baseline, str):
            self.checked("baseline", baseline)
        self.baseline = baseline
        self.blur_sigma = self.checked("blur_sigma", blur_sigma)
        self.batch_size = self.checked("batch_size", batch_size)
        self.seed = self.checked("seed", seed)
        self.score, self.precision = score, precision
        self.params.update(
            num_masks=self.num_masks,
            grid=self.grid,
            keep=self.keep,
            baseline=baseline if isinstance(baseline, (str, float, int)) else "tensor",
            blur_sigma=self.blur_sigma if baseline == "blurred" else None,
            batch_size=self.batch_size,
            seed=self.seed,
            score=score,
            precision=precision,
        )

    def masks(self, lo: int, hi: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        return rise_masks(self.seed, lo, hi, size, self.grid, self.keep).to(device)

    def _job(self, xi: torch.Tensor, ref: torch.Tensor, target: int, contrast: int | None) -> Job:
        size = (xi.shape[2], xi.shape[3])

        def make(lo: int, hi: int) -> torch.Tensor:
            m = self.masks(lo, hi, size, xi.device)[:, None]
            return xi * m + ref * (1 - m)

        bounds = alone_rows(chunk_bounds(self.num_masks, self.batch_size))
        return Job(self.num_masks, make, target, bounds, contrast=contrast)

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        logits, target = self.predict(x, target)
        size = (x.shape[2], x.shape[3])
        ref = reference_image(self, x, self.baseline, self.blur_sigma)
        jobs = [
            self._job(x[i : i + 1], ref[i : i + 1], int(target[i]), self.contrast_of(i))
            for i in range(x.shape[0])
        ]
        values = pooled_values(self, jobs, self.batch_size, self.score, self.precision)
        v = torch.stack(values)  # [B, N] float64 on the CPU, where the masks are drawn (MPS has no float64)
        total = torch.zeros(x.shape[0], *size, dtype=torch.float64)
        for lo in range(0, self.num_masks, MASK_CHUNK):
            hi = min(self.num_masks, lo + MASK_CHUNK)
            m = rise_masks(self.seed, lo, hi, size, self.grid, self.keep).double()
            total += torch.einsum("bn,nhw->bhw", v[:, lo:hi], m)
        maps = total / (self.num_masks * self.keep)
        return maps.float(), target, self.target_scores(logits, target), {}
