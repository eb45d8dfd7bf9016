"""LIME for images (Ribeiro et al. 2016), the algorithm of ``lime.lime_image.LimeImageExplainer``, on tensors.

Why our own: ``lime`` builds every perturbed image with a Python loop over samples and superpixels, in numpy,
and calls the model in batches of 10 (most of its time is the model, so the model calls are what to make
cheap; measured: docs/benchmarks.md#explainers). Here the segmentation is computed once per image and cached,
the binary design matrix becomes pixel masks with one gather (``Z[:, segments]``), hidden superpixels are
filled by one ``torch.where``, the model runs in inference mode (optionally bf16 autocast) on channels_last
batches, and the surrogate is the same weighted ridge (alpha=1, intercept) with LIME's kernel
``sqrt(exp(-d^2 / w^2))`` on the cosine distance to the all-ones row, solved in closed form in float64.

Sampling is seeded too (``lime`` seeds only the segmentation): ``sampler="uniform"`` draws exactly
``RandomState(seed).randint(0, 2, num_samples * n)`` like ``LimeImageExplainer(random_state=seed)``;
``"antithetic"`` pairs every row with its complement (see ``benchmarks/explain_stability.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from birdlens.explain.base import SEED, Explainer, Param, register
from birdlens.explain.batching import Job, alone_rows, chunk_bounds, pooled_values
from birdlens.explain.imaging import gaussian_blur
from birdlens.explain.methods.perturb import PRECISION, SCORE, check_options, target_values
from birdlens.explain.methods.segmentation import DEFAULTS, segment

SAMPLERS = ("uniform", "antithetic")


def sample_design(n_features: int, num_samples: int, seed: int, sampler: str = "uniform") -> np.ndarray:
    """Binary design ``[num_samples, n_features]`` (1 = superpixel kept); row 0 is all ones (the image)."""
    rs = np.random.RandomState(seed)
    if sampler == "uniform":
        data = rs.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
    elif sampler == "antithetic":
        half = (num_samples + 1) // 2
        first = rs.randint(0, 2, half * n_features).reshape((half, n_features))
        data = np.empty((2 * half, n_features), dtype=first.dtype)
        data[0::2], data[1::2] = first, 1 - first
        data = data[:num_samples]
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    data[0, :] = 1
    return data


def cosine_to_ones(data: np.ndarray) -> np.ndarray:
    """Cosine distance of each binary row to the all-ones row: ``1 - sqrt(k / n)`` (1 for an empty row),
    the value ``sklearn.metrics.pairwise_distances(data, ones, metric='cosine')`` gives."""
    k = data.sum(1).astype(np.float64)
    return np.where(k > 0, 1.0 - np.sqrt(k / data.shape[1]), 1.0)


def lime_kernel(distances: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    return np.sqrt(np.exp(-(distances**2) / kernel_width**2))


def weighted_ridge(
    data: np.ndarray, labels: np.ndarray, weights: np.ndarray, alpha: float = 1.0
) -> tuple[np.ndarray, float, float, float]:
    """``sklearn.linear_model.Ridge(alpha, fit_intercept=True).fit(data, labels, sample_weight=weights)`` in
    closed form (float64): returns ``(coef, intercept, weighted R^2, prediction at the all-ones row)``."""
    X = data.astype(np.float64)
    y = labels.astype(np.float64)
    w = weights.astype(np.float64)
    sw = w.sum()
    xm = w @ X / sw
    ym = float(w @ y / sw)
    Xc = X - xm
    yc = y - ym
    Xw = Xc * w[:, None]
    A = Xw.T @ Xc
    A[np.diag_indices_from(A)] += alpha
    coef = np.linalg.solve(A, Xw.T @ yc)
    intercept = ym - float(xm @ coef)
    pred = X @ coef + intercept
    ss_res = float(w @ (y - pred) ** 2)
    ss_tot = float(w @ (y - ym) ** 2)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return coef, intercept, r2, float(coef.sum() + intercept)


def _relabel(seg: np.ndarray) -> np.ndarray:
    _, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(seg.shape).astype(np.int64)


@register("lime")
class Lime(Explainer):
    """Per-superpixel weights (``scores["weights"][i]``, ``scores["segments"][i]``) painted into a signed map.

    ``segmentation``: ``"quickshift"`` (lime's default and parameters), ``"slic"`` or a callable
    ``image01 [H, W, 3] -> labels [H, W]``; ``fill``: ``"mean"`` (mean colour of each superpixel's original
    pixels, as lime) or ``"blur"``; ``score``: explain the target's ``"prob"`` (as lime) or ``"logit"``;
    ``alpha``: ridge penalty (lime: 1); ``precision="bf16"``: opt-in autocast for the model evaluations;
    ``batch_size``: images per model call (4: small batches run Lite0 faster on a small CPU, see
    ``perturb.FORWARD_CHUNK``).
    """

    title = "LIME"
    panel_order = 50
    stochastic = True
    signed = True
    heavy = True
    batched = True
    budget_param = "num_samples"
    # the segment means are float64 on the model's device; MPS has no float64
    supports_device = ("cpu", "cuda")
    # batch_size bounds one request's memory (peak per setting in docs/benchmarks.md, "Per-request limits")
    tunable = (
        Param("num_samples", int, 1000, lo=1, hi=20000, doc="perturbed images per explained image"),
        Param("batch_size", int, 4, lo=1, hi=64, doc="perturbed images per model call"),
        Param("segmentation", str, "quickshift", choices=tuple(sorted(DEFAULTS)), doc="superpixel algorithm"),
        Param("segmentation_params", dict, None, optional=True, doc="options of the skimage segmentation"),
        Param("fill", str, "mean", choices=("mean", "blur"), doc="what a hidden superpixel shows"),
        Param("blur_sigma", float, 8.0, lo=0.0, hi=64.0, doc="Gaussian sigma (px) of fill='blur'"),
        Param("kernel_width", float, 0.25, lo=0.01, hi=100.0, doc="width of LIME's distance kernel"),
        Param("alpha", float, 1.0, lo=0.0, hi=1e6, doc="ridge penalty of the surrogate"),
        Param("sampler", str, "uniform", choices=SAMPLERS, doc="design sampling"),
        SEED,
        SCORE,
        PRECISION,
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        num_samples: int = 1000,
        segmentation: str | Callable[[np.ndarray], np.ndarray] = "quickshift",
        segmentation_params: dict[str, Any] | None = None,
        fill: str = "mean",
        blur_sigma: float = 8.0,
        kernel_width: float = 0.25,
        alpha: float = 1.0,
        sampler: str = "uniform",
        seed: int = 0,
        batch_size: int = 4,
        score: str = "prob",
        precision: str = "fp32",
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        check_options(score, precision)
        if fill not in ("mean", "blur"):
            raise ValueError("fill must be 'mean' (superpixel mean colour, as lime) or 'blur'")
        if not callable(segmentation) and segmentation not in DEFAULTS:
            raise ValueError(
                f"segmentation must be one of {sorted(DEFAULTS)} or a callable image01 -> labels"
            )
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}")
        self.num_samples = int(num_samples)
        self.segmentation = segmentation
        base = {} if callable(segmentation) else DEFAULTS[segmentation]
        self.segmentation_params = {**base, **(segmentation_params or {})}
        self.fill = fill
        self.blur_sigma = float(blur_sigma)
        self.kernel_width = float(kernel_width)
        self.alpha = float(alpha)
        self.sampler = sampler
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.score = score
        self.precision = precision
        self.params.update(
            num_samples=self.num_samples,
            segmentation=segmentation
            if isinstance(segmentation, str)
            else getattr(segmentation, "__name__", "custom"),
            segmentation_params=self.segmentation_params,
            fill=fill,
            blur_sigma=self.blur_sigma if fill == "blur" else None,
            kernel_width=self.kernel_width,
            alpha=self.alpha,
            sampler=sampler,
            seed=self.seed,
            batch_size=self.batch_size,
            score=score,
            precision=precision,
        )

    def pixels01(self, x: torch.Tensor) -> torch.Tensor:
        """The photo in [0, 1] for the segmentation (per-channel min-max if the normalisation is unknown)."""
        if self._mean is not None:
            return self.denormalise(x)
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return (x - lo) / (hi - lo).clamp_min(1e-12)

    def segments_for(self, x: torch.Tensor) -> list[np.ndarray]:
        pix = self.pixels01(x).permute(0, 2, 3, 1).cpu().numpy()
        if callable(self.segmentation):
            return [_relabel(np.asarray(self.segmentation(p))) for p in pix]
        return [segment(p, self.segmentation, seed=self.seed, **self.segmentation_params) for p in pix]

    def fill_image(self, xi: torch.Tensor, seg_flat: torch.Tensor, n: int) -> torch.Tensor:
        """What hidden superpixels show: each superpixel's mean colour of the original pixels, or a blur."""
        if self.fill == "blur":
            return gaussian_blur(xi, self.blur_sigma)
        c = xi.shape[1]
        flat = xi.reshape(c, -1).double()
        sums = torch.zeros(c, n, dtype=torch.float64, device=xi.device).index_add_(1, seg_flat, flat)
        counts = torch.bincount(seg_flat, minlength=n).double()
        means = (sums / counts).float()
        return means[:, seg_flat].view_as(xi)

    def _job(
        self,
        xi: torch.Tensor,
        seg_flat: torch.Tensor,
        n: int,
        design: np.ndarray,
        target: int,
        contrast: int | None = None,
    ) -> Job:
        """One image's design rows as a :class:`Job`: its masks built per batch with one gather + one where."""
        h, w = xi.shape[2], xi.shape[3]
        fill = self.fill_image(xi, seg_flat, n)
        z = torch.from_numpy(design.astype(np.bool_)).to(xi.device)

        def make(lo: int, hi: int) -> torch.Tensor:
            return torch.where(z[lo:hi][:, seg_flat].view(-1, 1, h, w), xi, fill)

        rows = int(z.shape[0])
        return Job(rows, make, target, alone_rows(chunk_bounds(rows, self.batch_size)), contrast=contrast)

    def model_values(
        self,
        xi: torch.Tensor,
        fill: torch.Tensor,
        seg_flat: torch.Tensor,
        design: np.ndarray,
        target: int,
        contrast: int | None = None,
    ) -> np.ndarray:
        """Target score for every row of the design, one image at a time (the per-image loop that the
        cross-image batches of :meth:`_explain` equal)."""
        h, w = xi.shape[2], xi.shape[3]
        z = torch.from_numpy(design.astype(np.bool_)).to(xi.device)
        out = []
        for lo in range(0, z.shape[0], self.batch_size):
            keep = z[lo : lo + self.batch_size][:, seg_flat].view(-1, 1, h, w)
            batch = torch.where(keep, xi, fill)
            out.append(
                target_values(
                    self, batch, target, self.score, self.precision, chunk=self.batch_size, contrast=contrast
                )
            )
        return torch.cat(out).numpy()

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        logits, target = self.predict(x, target)
        segs = self.segments_for(x)
        seg_ts, designs, jobs = [], [], []
        for i, seg in enumerate(segs):
            n = int(seg.max()) + 1
            seg_t = torch.from_numpy(np.array(seg, dtype=np.int64)).to(x.device)
            design = sample_design(n, self.num_samples, self.seed, self.sampler)
            seg_ts.append(seg_t)
            designs.append(design)
            jobs.append(
                self._job(x[i : i + 1], seg_t.reshape(-1), n, design, int(target[i]), self.contrast_of(i))
            )
        # the model batches are filled across images (cross-image batching): same values as image by image
        all_values = pooled_values(self, jobs, self.batch_size, self.score, self.precision)
        maps, weights, intercepts, r2s, local = [], [], [], [], []
        for seg_t, design, values in zip(seg_ts, designs, all_values, strict=True):
            kernel = lime_kernel(cosine_to_ones(design), self.kernel_width)
            coef, intercept, r2, pred = weighted_ridge(design, values.numpy(), kernel, self.alpha)
            coef_t = torch.from_numpy(coef).float()
            weights.append(coef_t)
            maps.append(coef_t.to(x.device)[seg_t])
            intercepts.append(intercept)
            r2s.append(r2)
            local.append(pred)
        scores = self.target_scores(logits, target)
        scores.update(
            weights=weights,
            segments=torch.stack([torch.from_numpy(s.copy()) for s in segs]),
            intercept=torch.tensor(intercepts),
            r2=torch.tensor(r2s),
            local_pred=torch.tensor(local),
        )
        return torch.stack(maps), target, scores, {}
