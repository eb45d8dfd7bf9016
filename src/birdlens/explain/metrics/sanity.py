"""Model-parameter randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

The model is copied and its layers re-initialised *cascading from the top*: first the classifier, then the
head, then each stage of the backbone down to the stem. After each stage every map is recomputed for the same
images and targets, and compared with the original map by Spearman's rank correlation of the **absolute**
values (as in the paper, so a sign flip of the attribution does not count as a change). The score is the
magnitude ``|rho|`` of that correlation, lower is better: an inverted ranking (rho = -0.9) has survived the
randomisation just as much as a kept one. An explanation that reflects what the model learned must change when
the weights are destroyed.

**Failure rule**: a method *fails* when its mean rank correlation after full randomisation is above
``FAIL_THRESHOLD = 0.5`` — more than half of its ranking survives the destruction of every learned weight, so
the map is mostly an edge/image prior. Content-free baselines (the centred Gaussian, a seeded random map)
fail by construction, which is the point: the check separates maps that depend on the model from maps that
do not. A randomised map that became constant (e.g. Grad-CAM's ReLU zeroing everything) kept no ranking and
scores 0; an original map that is already constant scores NaN (excluded).

Re-initialisation calls each module's own ``reset_parameters`` (PyTorch's default init; norm layers get
weight 1, bias 0 and reset running statistics), seeded per stage.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric
from birdlens.explain.metrics.ranking import spearman

FAIL_THRESHOLD = 0.5
ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_CONTAINERS = (nn.Sequential, nn.ModuleList)


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def randomisation_stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Stages to re-initialise, **top first**: top-level children, containers (``blocks``, ``layer3``...)
    expanded one level, parameter-free modules dropped, and a norm layer grouped with the module before it."""
    forward: list[tuple[str, list[nn.Module]]] = []
    for name, child in model.named_children():
        units = (
            [(f"{name}.{n}", c) for n, c in child.named_children()]
            if isinstance(child, _CONTAINERS)
            else [(name, child)]
        )
        for uname, unit in units:
            if not _has_params(unit):
                continue
            if isinstance(unit, _NORMS) and forward:
                prev_name, mods = forward[-1]
                forward[-1] = (f"{prev_name}+{uname}", [*mods, unit])
            else:
                forward.append((uname, [unit]))
    if not forward and _has_params(model):
        forward = [("model", [model])]
    return forward[::-1]


def _reinit(modules: list[nn.Module], seed: int) -> None:
    torch.manual_seed(seed)
    for mod in modules:
        for sub in mod.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
                sub.reset_running_stats()


def map_rank_correlation(original: torch.Tensor, other: torch.Tensor, absolute: bool = True) -> np.ndarray:
    """Per-image Spearman between two map batches ``[B, H, W]`` (of absolute values by default)."""
    a = original.detach().float().flatten(1).cpu().numpy()
    b = other.detach().float().flatten(1).cpu().numpy()
    if absolute:
        a, b = np.abs(a), np.abs(b)
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        ai, bi = np.nan_to_num(a[i]), np.nan_to_num(b[i])
        if np.all(ai == ai[0]):
            continue
        out[i] = 0.0 if np.all(bi == bi[0]) else spearman(ai, bi)
    return out


def cascading_randomisation(
    model: nn.Module,
    explain_fn: ExplainFn,
    images: torch.Tensor,
    targets: torch.Tensor,
    original_maps: torch.Tensor | None = None,
    *,
    seed: int = 0,
    max_stages: int | None = None,
    points: int | None = None,
    absolute: bool = True,
) -> dict[str, Any]:
    """Cascade from the top; returns ``{"stages": [names], "corr": [S, B] signed rho, "final": [B] |rho|}``.

    ``explain_fn(model, images, targets) -> maps`` is called on a *copy*; the caller's model is untouched.
    ``max_stages`` stops early (the last evaluated stage is then reported as ``final``). ``points`` explains
    only after that many evenly spaced stages, always including the first and the last (the cascade itself
    still re-initialises every stage): slow methods (LIME, SHAP) then cost ``points`` runs, not one per stage.
    """
    if original_maps is None:
        original_maps = explain_fn(model, images, targets)
    work = copy.deepcopy(model).eval()
    stages = randomisation_stages(work)
    if max_stages is not None:
        stages = stages[:max_stages]
    at = set(range(len(stages)))
    if points is not None and 0 < points < len(stages):
        at = {round(i * (len(stages) - 1) / max(1, points - 1)) for i in range(points)}
    names, rows = [], []
    for i, (name, modules) in enumerate(stages):
        _reinit(modules, seed + i)
        if i not in at:
            continue
        maps = explain_fn(work, images, targets)
        names.append(name)
        rows.append(map_rank_correlation(original_maps, maps, absolute))
    corr = np.stack(rows) if rows else np.zeros((0, images.shape[0]))
    final = np.abs(corr[-1]) if rows else np.full(images.shape[0], np.nan)
    return {"stages": names, "corr": corr, "final": final}


def sanity_verdict(final_mean: float | None, threshold: float = FAIL_THRESHOLD) -> str:
    """``"pass"``/``"fail"`` for a mean final rank correlation (``"n/a"`` when undefined)."""
    if final_mean is None or not np.isfinite(final_mean):
        return "n/a"
    return "fail" if final_mean > threshold else "pass"


@register_metric
class SanityRankCorrelation(Metric):
    name = "sanity_rank_corr"
    direction = Direction.LOWER
    category = Category.RANDOMISATION
    needs = frozenset({"explain_fn"})
    description = "|Spearman| of |map| before vs after randomising all weights (Adebayo 2018)"

    def __init__(self, seed: int = 0, max_stages: int | None = None, points: int | None = None) -> None:
        self.seed = seed
        self.max_stages = max_stages
        self.points = points
        self.last: dict[str, Any] | None = None

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        if model is None:
            raise ValueError("the sanity check needs the model")
        self.last = cascading_randomisation(
            model,
            ctx["explain_fn"],
            images,
            targets,
            maps,
            seed=self.seed,
            max_stages=self.max_stages,
            points=self.points,
        )
        return self.last["final"]
