"""Integrated Gradients (Sundararajan et al. 2017), the same quadrature as Captum, bounded memory.

Why our own loop: Captum evaluates all ``steps`` interpolants of an image in one batch by default (slower per
image than small batches on a CPU, and its memory grows with ``steps``; measured:
docs/benchmarks.md#explainers). Here the interpolants are evaluated in chunks of at most
``internal_batch_size`` images, parameters are frozen so autograd computes only input gradients, and the model
runs channels_last. The completeness error ``|sum(attr) - (f(x) - f(baseline))|`` is reported per image in
``scores``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from birdlens.explain.base import Explainer, Param, register
from birdlens.explain.batching import Job, alone_rows, pooled_gradients
from birdlens.explain.hooks import frozen_parameters
from birdlens.explain.methods.perturb import reference_image

_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature_rule(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, step_sizes)`` on [0, 1], identical to ``captum.attr._utils.approximation_methods``."""
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (x + 1), 0.5 * w
    if method not in _METHODS:
        raise ValueError(f"unknown IG method {method!r}; choose one of {_METHODS}")
    # Captum's Riemann rules, verbatim: step sizes 1/n (trapezoid: both ends halved, so they sum to (n-1)/n,
    # a Captum quirk kept for parity) and float32 ``torch.linspace`` nodes.
    if steps < 2:
        raise ValueError("Riemann rules need steps > 1")
    sizes = np.full(steps, 1 / steps)
    if method == "riemann_trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
        lo, hi = 0.0, 1.0
    elif method == "riemann_left":
        lo, hi = 0.0, 1 - 1 / steps
    elif method == "riemann_right":
        lo, hi = 1 / steps, 1.0
    else:
        lo, hi = 1 / (2 * steps), 1 - 1 / (2 * steps)
    return np.array(torch.linspace(lo, hi, steps).tolist()), sizes


@register("ig", "integrated_gradients", "integrated-gradients")
class IntegratedGradients(Explainer):
    """Signed attribution summed over colour channels. ``baseline``: ``"black"`` (pixel 0), ``"blurred"``
    (Gaussian, ``blur_sigma`` px), ``"mean"`` (the normalisation mean, i.e. 0 after normalising) or a tensor;
    ``quadrature``: Captum's ``method`` (``gausslegendre`` default, or ``riemann_*``)."""

    title = "Integrated Gradients"
    panel_order = 70
    signed = True
    uses_gradients = True
    heavy = True
    batched = True
    budget_param = "steps"
    overlay_sigma = 1.5  # per-pixel IG is speckled; the saved .npy stays raw
    # internal_batch_size bounds the backward's memory (peaks in docs/benchmarks.md, "Per-request limits")
    tunable = (
        Param("steps", int, 50, lo=1, hi=1024, doc="interpolation steps (model forwards) per image"),
        Param("baseline", str, "black", choices=("black", "blurred", "mean"), doc="the reference image"),
        Param("quadrature", str, "gausslegendre", choices=_METHODS, doc="Captum's integration rule"),
        Param("internal_batch_size", int, 16, lo=1, hi=32, optional=True, doc="interpolants per backward"),
        Param("blur_sigma", float, 10.0, lo=0.0, hi=100.0, doc="Gaussian sigma (px) of baseline='blurred'"),
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 50,
        baseline: str | float | torch.Tensor = "black",
        quadrature: str = "gausslegendre",
        internal_batch_size: int | None = 16,
        blur_sigma: float = 10.0,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.steps = int(steps)
        self.baseline = baseline
        self.quadrature = quadrature
        self.internal_batch_size = internal_batch_size
        self.blur_sigma = float(blur_sigma)
        quadrature_rule(quadrature, self.steps)  # validate early
        self.params.update(
            steps=self.steps,
            baseline=baseline if isinstance(baseline, (str, float, int)) else "tensor",
            quadrature=quadrature,
            internal_batch_size=internal_batch_size,
            blur_sigma=self.blur_sigma if baseline == "blurred" else None,
        )

    @staticmethod
    def channel_map(attributions: torch.Tensor) -> torch.Tensor:
        """The map of per-channel attributions ``[B,C,H,W]``: their sum over channels (signed)."""
        return attributions.sum(1)

    def map_of(self, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.channel_map(values)

    def make_baseline(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.baseline, str) and self.baseline not in ("black", "blurred", "mean"):
            raise ValueError(
                f"unknown IG baseline {self.baseline!r}; use 'black', 'blurred', 'mean', a number or a tensor"
            )
        return reference_image(self, x, self.baseline, self.blur_sigma)

    def _job(
        self, x: torch.Tensor, base: torch.Tensor, alphas: torch.Tensor, bounds: Any, i: int, target: int
    ) -> Job:
        """Image ``i``'s interpolants ``base + alpha * (x - base)`` as a :class:`Job`, built per batch."""
        xi, bi = x[i : i + 1], base[i : i + 1]
        delta = xi - bi

        def make(lo: int, hi: int) -> torch.Tensor:
            return bi + alphas[lo:hi].view(-1, 1, 1, 1) * delta

        edges = tuple(int(v) for v in bounds)
        return Job(int(alphas.shape[0]), make, target, alone_rows(edges), edges, self.contrast_of(i))

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        base = self.make_baseline(x)
        b = x.shape[0]
        # image by image: the same batch of two (image, baseline) as when an image is explained alone
        with torch.inference_mode():
            ends = [
                self.logits(self.to_memory_format(torch.cat([x[i : i + 1], base[i : i + 1]])))
                for i in range(b)
            ]
        logits = torch.cat([e[:1] for e in ends]).float().clone()
        base_logits = torch.cat([e[1:] for e in ends]).float().clone()
        if target is None:
            target = logits.argmax(1)
        alphas, sizes = quadrature_rule(self.quadrature, self.steps)
        alpha_t = torch.tensor(alphas, dtype=torch.float32, device=x.device)
        size_t = torch.tensor(sizes, dtype=torch.float32, device=x.device)
        cap = self.internal_batch_size or self.steps
        n_chunks = -(-self.steps // cap)
        bounds = np.linspace(0, self.steps, n_chunks + 1).round().astype(int)  # balanced chunks <= cap
        weighted: dict[int, torch.Tensor] = {}

        def consume(i: int, g: torch.Tensor) -> None:
            # the per-image sum in the per-image loop's chunks: the same additions in the same order
            total = torch.zeros_like(x[i : i + 1])
            for lo, hi in itertools.pairwise(bounds):
                total = total + (g[lo:hi] * size_t[lo:hi].view(-1, 1, 1, 1)).sum(0, keepdim=True)
            weighted[i] = total * (x[i : i + 1] - base[i : i + 1])

        with frozen_parameters(self.model):
            # interpolants of several images share each backward (cross-image batching), in batches of the
            # per-image loop's largest chunk (<= internal_batch_size): the batch sizes its kernels ran at
            jobs = [self._job(x, base, alpha_t, bounds, i, int(target[i])) for i in range(b)]
            pooled_gradients(self, jobs, int(np.diff(bounds).max()), consume)
        attrs = [weighted[i] for i in range(b)]
        attr = torch.cat(attrs)
        gap = self.explained_score(logits, target) - self.explained_score(base_logits, target)
        err = (attr.flatten(1).sum(1).double() - gap.double()).abs()
        scores = self.target_scores(logits, target)
        scores.update(
            completeness_error=err.float().cpu(),
            relative_completeness_error=(err / gap.double().abs().clamp_min(1e-12)).float().cpu(),
            baseline_logit=base_logits.gather(1, target.view(-1, 1)).squeeze(1).cpu(),
            attributions=attr.detach().cpu(),
        )
        return self.channel_map(attr), target, scores, {}
