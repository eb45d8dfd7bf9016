"""What LIME and SHAP share: the scalar a perturbation is scored by, and fast batched model evaluation."""

from __future__ import annotations

import torch

from birdlens.explain.base import Explainer, Param, class_score
from birdlens.utils.device import PRECISIONS, autocast

SCORES = ("prob", "logit")
SCORE = Param("score", str, "prob", choices=SCORES, doc="explain the target's probability or its logit")
#: opt-in autocast (:func:`birdlens.utils.device.autocast`): faster Lite0 inference on a CPU with bf16 support,
#: results close to fp32 but not equal (measured: docs/benchmarks.md#explainers); fp32 enters nothing
PRECISION = Param(
    "precision", str, "fp32", choices=PRECISIONS, doc="bf16/fp16: autocast for the model evaluations"
)


def check_options(score: str, precision: str) -> None:
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


#: images per forward pass: small batches keep Lite0's activations in cache, so 4 beats 8-12 on a small CPU
#: (measured: docs/benchmarks.md#explainers)
FORWARD_CHUNK = 4


def target_values(
    explainer: Explainer,
    batch: torch.Tensor,
    target: int,
    score: str,
    precision: str,
    chunk: int = FORWARD_CHUNK,
    contrast: int | None = None,
) -> torch.Tensor:
    """Model output for class ``target`` on a batch of perturbed images, float64 ``[N]`` (the forward runs in
    chunks of ``chunk`` images; each image's output does not depend on the chunking). With a ``contrast``
    class the output is ``logit[target] - logit[contrast]`` whatever ``score`` says (:func:`scores_of`)."""
    with torch.inference_mode(), autocast(precision, batch.device):
        out = torch.cat(
            [
                explainer.fast_logits(explainer.to_memory_format(batch[i : i + chunk])).float()
                for i in range(0, batch.shape[0], max(1, chunk))
            ]
        )
    n = out.shape[0]
    cst = None if contrast is None else torch.full((n,), contrast, dtype=torch.long)
    return scores_of(explainer, out, torch.full((n,), target, dtype=torch.long), cst, score)


def scores_of(
    explainer: Explainer,
    logits: torch.Tensor,
    target: torch.Tensor,
    contrast: torch.Tensor | None,
    score: str,
) -> torch.Tensor:
    """Each row's score, float64 ``[N]`` on the CPU: the target's probability (``score="prob"``, the model's
    own head) or logit, or, with a contrast, the logit difference (:func:`birdlens.explain.base.class_score`):
    a probability is unchanged by what the contrast class does, so it cannot say "and not B"."""
    if contrast is None and score == "prob":
        return class_score(explainer.probabilities(logits), target).double().cpu()
    return class_score(logits, target, contrast).double().cpu()
