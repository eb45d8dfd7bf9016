"""Occlusion (Zeiler & Fergus 2014): slide a ``window`` x ``window`` patch of the reference image over the photo
and score how much the target drops; the algorithm of ``captum.attr.Occlusion``.

With ``sliding_window_shapes=(C, window, window)``, ``strides=(C, stride, stride)`` and Captum's default
baseline 0, Captum gives each pixel the mean of ``f(x) - f(x occluded)`` over the windows that cover it; so
does this (``baseline="zero"`` is that 0 in the model's input space). Pixels no window covers (when the
stride does not reach the border) get 0 where Captum divides 0 by 0. The image itself is row 0 of its model
evaluations, so ``f(x)`` comes from the same forward as the occluded copies; the copies of several images fill
each model batch (:mod:`birdlens.explain.batching`), each image's map equal to explaining it alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from birdlens.explain.base import Explainer, InvalidParameterError, Param, register
from birdlens.explain.batching import Job, alone_rows, chunk_bounds, pooled_values
from birdlens.explain.methods.perturb import (
    PRECISION,
    REFERENCES,
    SCORE,
    check_options,
    reference_image,
)


def window_corners(size: tuple[int, int], window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the windows, row by row: ``1 + (side - window) // stride`` per side, as Captum."""
    h, w = size
    if window > min(h, w):
        raise InvalidParameterError(
            f"occlusion: window must be <= the image side ({min(h, w)} px), got {window}"
        )
    return [(y, x) for y in range(0, h - window + 1, stride) for x in range(0, w - window + 1, stride)]


@register("occlusion")
class Occlusion(Explainer):
    """Mean drop of the target's score over the windows covering each pixel (signed)."""

    title = "Occlusion"
    panel_order = 52
    signed = True
    heavy = True
    batched = True
    tunable = (
        Param("window", int, 32, lo=1, hi=1024, doc="side (px) of the occluding square"),
        Param("stride", int, 16, lo=1, hi=1024, doc="step (px) between windows"),
        Param("baseline", str, "zero", choices=REFERENCES, doc="what the window shows (zero: Captum's)"),
        Param("blur_sigma", float, 10.0, lo=0.0, hi=100.0, doc="Gaussian sigma (px) of baseline='blurred'"),
        Param("batch_size", int, 4, lo=1, hi=64, doc="occluded images per model call"),
        SCORE,
        PRECISION,
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        window: int = 32,
        stride: int = 16,
        baseline: str | float | torch.Tensor = "zero",
        blur_sigma: float = 10.0,
        batch_size: int = 4,
        score: str = "prob",
        precision: str = "fp32",
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        check_options(score, precision)
        self.window = self.checked("window", window)
        self.stride = self.checked("stride", stride)
        if isinstance(baseline, str):
            self.checked("baseline", baseline)
        self.baseline = baseline
        self.blur_sigma = self.checked("blur_sigma", blur_sigma)
        self.batch_size = self.checked("batch_size", batch_size)
        self.score, self.precision = score, precision
        self.params.update(
            window=self.window,
            stride=self.stride,
            baseline=baseline if isinstance(baseline, (str, float, int)) else "tensor",
            blur_sigma=self.blur_sigma if baseline == "blurred" else None,
            batch_size=self.batch_size,
            score=score,
            precision=precision,
        )

    def _job(
        self,
        xi: torch.Tensor,
        ref: torch.Tensor,
        corners: list[tuple[int, int]],
        target: int,
        contrast: int | None,
    ) -> Job:
        """Row 0: the image; row ``k``: the image with window ``k - 1`` replaced by the reference."""
        w = self.window

        def make(lo: int, hi: int) -> torch.Tensor:
            out = xi.expand(hi - lo, -1, -1, -1).clone()
            for j, row in enumerate(range(lo, hi)):
                if row:
                    y, x = corners[row - 1]
                    out[j, :, y : y + w, x : x + w] = ref[0, :, y : y + w, x : x + w]
            return out

        rows = 1 + len(corners)
        return Job(rows, make, target, alone_rows(chunk_bounds(rows, self.batch_size)), contrast=contrast)

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        logits, target = self.predict(x, target)
        h, w = x.shape[2], x.shape[3]
        corners = window_corners((h, w), self.window, self.stride)
        ref = reference_image(self, x, self.baseline, self.blur_sigma)
        jobs = [
            self._job(x[i : i + 1], ref[i : i + 1], corners, int(target[i]), self.contrast_of(i))
            for i in range(x.shape[0])
        ]
        values = pooled_values(self, jobs, self.batch_size, self.score, self.precision)
        count = torch.zeros(h, w, dtype=torch.float64)
        for y, x0 in corners:
            count[y : y + self.window, x0 : x0 + self.window] += 1
        maps = []
        for v in values:
            total = torch.zeros(h, w, dtype=torch.float64)
            for (y, x0), drop in zip(corners, (v[0] - v[1:]).tolist(), strict=True):
                total[y : y + self.window, x0 : x0 + self.window] += drop
            maps.append(torch.where(count > 0, total / count.clamp_min(1), 0.0))
        return torch.stack(maps).float(), target, self.target_scores(logits, target), {}
