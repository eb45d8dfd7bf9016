"""The metrics a user names in ``EvalSettings.metrics`` (``birdlens explain-eval --metrics``, a study's
``explain_eval.params.metrics``): checked before any work, then scored per method beside the built-in ones.

A *selectable* metric (a class fact, :attr:`Metric.selectable`) is scored only when named; naming an always-on
metric (``pointing_game``, ``part_rank_corr``...) is allowed and asserts that the data can provide what it
needs, so "localisation on a dataset without masks" is an error before anything runs, not a silently
missing column. Metrics that re-explain (context ``explain_fn``: sensitivity, Lipschitz, random logit) run on
the first ``explain_n`` images only, as the sanity and stability checks do; the rest of their column is NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from birdlens.explain.metrics.base import _REGISTRY, Metric, available_metrics, get_metric, metric_info

DEFAULT_METRICS = ("sparseness", "complexity")  # free (no model call); the rest are opt-in
# what each context key is, for the error when the dataset cannot provide it
CONTEXT = {
    "regions": "object masks or boxes (a mask column, a box column or --boxes)",
    "part_masks": "the synthetic-bird part ground truth (specs.jsonl + parts.json)",
    "part_importance": "the synthetic-bird part ground truth (specs.jsonl + parts.json)",
    "key_parts": "the synthetic-bird part ground truth (specs.jsonl + parts.json)",
    "explain_fn": "an explanation method",
    "explain_seeded": "a seeded stochastic method",
}


def selectable_metrics() -> list[str]:
    return [m for m in available_metrics() if metric_info(m)["selectable"]]


def build_selected(names: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    """The selectable metrics among ``names``, built with their ``params`` (which validate themselves);
    an unknown name, or parameters for a metric not named, is one error saying what is allowed."""
    known = available_metrics()
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"metrics: unknown metric(s) {bad}; allowed: {', '.join(known)}")
    stray = sorted(set(params) - set(names))
    if stray:
        raise ValueError(f"metric_params: {stray} not among the selected metrics {list(names)}")
    out = []
    for n in names:
        if not metric_info(n)["selectable"]:
            if params.get(n):
                raise ValueError(f"metric_params: {n} is always scored and takes no parameters here")
            continue
        try:
            out.append(get_metric(n, **dict(params.get(n, {}))))
        except TypeError as e:
            raise ValueError(f"metric_params: {n}: {e}") from None
    return out


def check_needs(names: Sequence[str], available: set[str]) -> None:
    """Every named metric's context must be one the data provides (``available``), else one error."""
    for n in names:
        missing = sorted(set(_REGISTRY[n].needs) - available)
        if missing:
            what = " and ".join(dict.fromkeys(CONTEXT.get(k, k) for k in missing))
            raise ValueError(f"metrics: {n} needs {what}, which this dataset does not have")


def score_selected(
    metrics: Sequence[Metric],
    *,
    model: torch.nn.Module,
    scorer: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: Callable[..., torch.Tensor],
    explain_n: int,
    progress: Callable[[str], Callable[[int], None]],
) -> dict[str, np.ndarray]:
    """One value per image per metric. No-grad metrics use the fast ``scorer`` copy; metrics that re-explain
    use the real ``model`` (gradients, hooks) on the first ``explain_n`` images."""
    n = images.shape[0]
    out: dict[str, np.ndarray] = {}
    for metric in metrics:
        adv = progress(metric.name)
        if "explain_fn" in metric.needs:
            k = min(explain_n, n)
            vals = np.full(n, np.nan)
            if k > 0:
                vals[:k] = metric(model, images[:k], maps[:k], targets[:k], explain_fn=explain_fn)
        else:
            vals = metric(scorer, images, maps, targets)
        out[metric.name] = vals
        adv(1)
    return out
