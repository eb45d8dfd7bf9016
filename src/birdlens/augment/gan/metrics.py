"""Feature-space distances between real and generated images: Fréchet distance, kernel inception distance and
the k-NN fidelity and diversity measures (precision, recall, density, coverage).

The formulas are the standard ones (Heusel et al. 2017; Bińkowski et al. 2018); the feature space is whatever
extractor the caller uses, which is why results carry the extractor's name (``FD-lite0``, ``KID-lite0``):

* FD = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)). The trace of the matrix square root is computed
  from the eigenvalues of S_r S_g (real and >= 0 in exact arithmetic; round-off is clipped), which is stable
  when the covariances are singular, as they are with fewer samples than feature dimensions (per class here).
  FD is biased upwards at small n, so values are comparable only at equal sample sizes (reported with them).
* KID = unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
  subsets of size ``m`` (at most the number of real images and of generated images); mean and std reported.
* precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) from k-nearest-
  neighbour balls, as in the authors' ``prdc`` package (tested against it). Why: FD folds fidelity and
  diversity into one number, so a generator that collapsed to one image per class reads as "worse", not as
  "collapsed"; recall says it (the study's DCGAN on the shared birds: docs/benchmarks.md, "GAN").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between the Gaussians fitted to feature rows ``a`` [n, d] and ``b`` [m, d] (n, m >= 2)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FD needs at least 2 samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s_a @ s_b)
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_sqrt)
    return max(fd, 0.0)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two samples under the cubic polynomial kernel (may be slightly negative)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kernel_distance(
    real: np.ndarray, fake: np.ndarray, subset_size: int = 100, n_subsets: int = 100, seed: int = 0
) -> tuple[float, float, int]:
    """KID mean and std over ``n_subsets`` random subsets; the subset size used is capped by both sample sizes."""
    m = int(min(subset_size, len(real), len(fake)))
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.default_rng(seed)
    vals = [
        mmd2_unbiased(
            real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)]
        )
        for _ in range(n_subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals)), m


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] (float64; the clip removes round-off below zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(d2, 0.0, None))


def _knn_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (the row itself, at 0, is not counted)."""
    return np.partition(_pairwise(x, x), k, axis=1)[:, k]


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Fidelity (precision, density) and diversity (recall, coverage) of ``fake`` against ``real`` features.

    With r_i the distance of real i to its k-th nearest real neighbour (f_j likewise among the fakes) and
    d_ij = |real_i - fake_j|: precision = share of fakes inside some real ball (d_ij < r_i); recall = share of
    reals inside some fake ball (d_ij < f_j); density = mean over fakes of (number of real balls holding it) / k;
    coverage = share of reals whose own ball holds a fake. 1 is ideal for all four (density may exceed 1).
    """
    n_real, n_fake = len(real), len(fake)
    if n_real <= k or n_fake <= k:
        raise ValueError(
            f"precision/recall/density/coverage with k={k} need more than {k} images on each side, "
            f"got {n_real} real and {n_fake} generated"
        )
    r_real, r_fake = _knn_radius(real, k), _knn_radius(fake, k)
    d = _pairwise(real, fake)
    inside_real = d < r_real[:, None]  # [real, fake]: fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d < r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) < r_real).mean()),
        "k": k,
    }


@dataclass
class DistanceReport:
    """FD/KID overall and per class, named after the feature space, with every sample size stated."""

    features: str
    fd: float
    kid_mean: float
    kid_std: float
    kid_subset_size: int
    kid_subsets: int
    n_real: int
    n_fake: int
    per_class: dict[str, dict[str, float | int]]
    prdc: dict[str, float] | None = (
        None  # overall; per class it sits in ``per_class`` where n > k on both sides
    )

    def to_dict(self) -> dict[str, Any]:
        f = self.features
        d = asdict(self)
        out: dict[str, Any] = {
            "features": f,
            f"FD-{f}": d["fd"],
            f"KID-{f}": d["kid_mean"],
            f"KID-{f}_std": d["kid_std"],
            "kid_subset_size": d["kid_subset_size"],
            "kid_subsets": d["kid_subsets"],
            "n_real": d["n_real"],
            "n_fake": d["n_fake"],
            "per_class": {},
            "note": f"FD-{f}/KID-{f} use EfficientNet-{f.capitalize()} features; not comparable with Inception FID/KID.",
        }
        out.update(prdc_keys(self.prdc, f))
        for c, v in self.per_class.items():
            out["per_class"][c] = {
                f"FD-{f}": v["fd"],
                f"KID-{f}": v["kid_mean"],
                f"KID-{f}_std": v["kid_std"],
                "kid_subset_size": v["kid_subset_size"],
                "n_real": v["n_real"],
                "n_fake": v["n_fake"],
                **prdc_keys(v.get("prdc"), f),
            }  # type: ignore[arg-type]
        return out


def prdc_keys(prdc: dict[str, float] | None, features: str) -> dict[str, float]:
    """``precision-lite0`` ... ``coverage-lite0`` and ``prdc_k`` (named after the feature space, as FD is)."""
    if prdc is None:
        return {}
    return {
        **{f"{m}-{features}": prdc[m] for m in ("precision", "recall", "density", "coverage")},
        "prdc_k": prdc["k"],
    }


def distance_report(
    real: np.ndarray,
    real_labels: np.ndarray,
    fake: np.ndarray,
    fake_labels: np.ndarray,
    classes: Sequence[str],
    features: str = "lite0",
    kid_subset_size: int = 100,
    kid_subsets: int = 100,
    seed: int = 0,
    prdc_k: int = 5,
) -> DistanceReport:
    """FD/KID (and precision/recall/density/coverage) over all images and per class (classes with < 2 images
    on a side are skipped; the k-NN metrics only where both sides have more than ``prdc_k``)."""
    kid, kid_sd, m = kernel_distance(real, fake, kid_subset_size, kid_subsets, seed)
    per: dict[str, dict[str, float | int]] = {}
    for i, c in enumerate(classes):
        r, f = real[real_labels == i], fake[fake_labels == i]
        if len(r) < 2 or len(f) < 2:
            continue
        k, ks, mc = kernel_distance(r, f, kid_subset_size, kid_subsets, seed)
        per[c] = {
            "fd": frechet_distance(r, f),
            "kid_mean": k,
            "kid_std": ks,
            "kid_subset_size": mc,
            "n_real": len(r),
            "n_fake": len(f),
        }
        if min(len(r), len(f)) > prdc_k:
            per[c]["prdc"] = precision_recall_density_coverage(r, f, prdc_k)  # type: ignore[assignment]
    prdc = (
        precision_recall_density_coverage(real, fake, prdc_k) if min(len(real), len(fake)) > prdc_k else None
    )
    return DistanceReport(
        features, frechet_distance(real, fake), kid, kid_sd, m, kid_subsets, len(real), len(fake), per, prdc
    )
