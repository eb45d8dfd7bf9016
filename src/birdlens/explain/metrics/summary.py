"""Per-image metric values -> the results that a person reads: means, 95% bootstrap intervals, rankings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from birdlens.explain.metrics.base import metric_info
from birdlens.explain.metrics.bootstrap import bootstrap_ci, paired_difference


def summarise(
    per_image: Mapping[str, Mapping[str, Any]], *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {metric: values[B]}}`` -> ``{method: {metric: {mean, ci95, n, std, direction, ...}}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method, metrics in per_image.items():
        out[method] = {}
        for name, values in metrics.items():
            hib = metric_info(name)["higher_is_better"]
            out[method][name] = bootstrap_ci(values, n_resamples=n_resamples, seed=seed, higher_is_better=hib)
    return out


def rank_methods(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, list[str]]:
    """``{metric: [methods best first]}`` using each metric's direction (methods without a value left out)."""
    metrics = sorted({m for per in summary.values() for m in per})
    out: dict[str, list[str]] = {}
    for name in metrics:
        hib = metric_info(name)["higher_is_better"]
        scored = [
            (per[name]["mean"], meth)
            for meth, per in summary.items()
            if name in per and per[name]["mean"] is not None
        ]
        scored.sort(key=lambda t: -t[0] if hib else t[0])
        out[name] = [m for _, m in scored]
    return out


def best_vs_runner_up(
    per_image: Mapping[str, Mapping[str, Any]], ranking: Mapping[str, list[str]], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """For each metric: paired bootstrap CI of (best - second best) over the same images, and whether it
    excludes zero — i.e. whether the top of the ranking is resolved at this n."""
    out: dict[str, dict[str, Any]] = {}
    for name, order in ranking.items():
        if len(order) < 2:
            continue
        a = np.asarray(per_image[order[0]][name], dtype=float)
        b = np.asarray(per_image[order[1]][name], dtype=float)
        if a.shape != b.shape:
            continue
        d = paired_difference(a, b, seed=seed)
        lo, hi = d["ci95"]
        resolved = lo is not None and (lo > 0 or hi < 0)
        out[name] = {"best": order[0], "runner_up": order[1], "diff": d, "resolved": bool(resolved)}
    return out
