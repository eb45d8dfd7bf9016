"""Bootstrap confidence intervals over images.

Explanation metrics are means over a few dozen images whose values are far from normal (AUCs pile up near 0
or 1, pointing game is 0/1), so the interval is the seeded percentile bootstrap rather than a t-interval.
``paired_difference`` resamples the *same* images for two methods, which is what "method A beats method B"
means when both were scored on one image set.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _finite(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def bootstrap_ci(
    values: Any,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = None,
) -> dict[str, Any]:
    """``{mean, ci95: [lo, hi], n, std, higher_is_better}`` of the finite values (NaNs are dropped).

    With no finite value the mean and bounds are ``None``; with one value the interval is degenerate.
    """
    v = _finite(values)
    out: dict[str, Any] = {"mean": None, "ci95": [None, None], "n": int(v.size), "std": None}
    if higher_is_better is not None:
        out["higher_is_better"] = bool(higher_is_better)
        out["direction"] = "higher" if higher_is_better else "lower"
    if v.size == 0:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_resamples, v.size))
    means = v[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    out.update(
        mean=float(v.mean()), ci95=[float(lo), float(hi)], std=float(v.std(ddof=1)) if v.size > 1 else 0.0
    )
    return out


def paired_difference(
    a: Any, b: Any, *, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Bootstrap CI of ``mean(a - b)`` over images scored by both (pairs with a NaN are dropped)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("paired values need the same length")
    keep = np.isfinite(a) & np.isfinite(b)
    return bootstrap_ci(a[keep] - b[keep], n_resamples=n_resamples, level=level, seed=seed)
