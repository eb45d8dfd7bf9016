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


def _ci_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    (alo, ahi), (blo, bhi) = a["ci95"], b["ci95"]
    if None in (alo, ahi, blo, bhi):
        return True  # no interval, no claim of a difference
    return alo <= bhi and blo <= ahi


def category_winners(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per metric category (faithfulness, robustness, ...): methods ordered by their mean rank over the
    category's metrics (each ranked in its own direction), the first and the runner-up, and for each metric
    whether the two's 95% intervals overlap — the per-metric "is the top resolved" question, per category."""
    ranking = rank_methods(summary)
    by_cat: dict[str, list[str]] = {}
    for metric in ranking:
        by_cat.setdefault(metric_info(metric)["category"], []).append(metric)
    out: dict[str, dict[str, Any]] = {}
    for cat, metrics in by_cat.items():
        ranks: dict[str, list[int]] = {}
        for metric in metrics:
            for r, method in enumerate(ranking[metric], start=1):
                ranks.setdefault(method, []).append(r)
        mean_rank = {m: float(np.mean(r)) for m, r in ranks.items()}
        order = sorted(mean_rank, key=lambda m: (mean_rank[m], -len(ranks[m])))
        entry: dict[str, Any] = {"metrics": metrics, "order": order, "mean_rank": mean_rank}
        entry["best"] = order[0]
        entry["runner_up"] = order[1] if len(order) > 1 else None
        if entry["runner_up"] is not None:
            best, second = summary[order[0]], summary[order[1]]
            entry["overlap"] = {
                m: _ci_overlap(best[m], second[m]) for m in metrics if m in best and m in second
            }
        out[cat] = entry
    return out
