"""What the perturbation methods share: the scalar a perturbation is scored by, the reference image that
replaces what is hidden, and fast batched model evaluation."""

from __future__ import annotations

import torch

from birdlens.explain.base import Explainer, Param, scores_of
from birdlens.explain.imaging import gaussian_blur
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


#: what a hidden region shows: "zero" is 0 in the model's input space (Captum's default baseline; the
#: normalisation's mean colour for a normalised model, IG's "mean"), "black" is pixel 0, "blurred" a Gaussian blur
REFERENCES = ("zero", "black", "blurred")


def reference_image(
    explainer: Explainer, x: torch.Tensor, kind: str | float | torch.Tensor, blur_sigma: float
) -> torch.Tensor:
    """The reference (baseline) image of each image in ``x`` for ``kind``: one of :data:`REFERENCES` (IG's
    ``"mean"`` is ``"zero"``), a number (that value everywhere in the model's input space) or a tensor."""
    if isinstance(kind, torch.Tensor):
        return explainer.to_memory_format(kind.to(x.device, x.dtype).expand_as(x).clone())
    if isinstance(kind, (int, float)):
        return torch.full_like(x, float(kind))
    if kind in ("zero", "mean"):
        return torch.zeros_like(x)
    if kind == "black":
        black = (-explainer.mean / explainer.std).view(1, -1, 1, 1)
        return explainer.to_memory_format(black.expand_as(x).clone())
    if kind == "blurred":
        return explainer.to_memory_format(gaussian_blur(x, blur_sigma))
    raise ValueError(
        f"{explainer.name}: unknown baseline {kind!r}; use one of {', '.join(REFERENCES)}, a number or a tensor"
    )


#: rows a seeded method may draw (its budget's maximum must stay below)
MAX_ROWS = 2**20


def row_generator(seed: int, row: int) -> torch.Generator:
    """A CPU generator for row ``row`` of a seeded method's draws: each row's noise or mask depends on
    ``(seed, row)`` only, never on how the rows are cut into batches or which device runs the model."""
    if not 0 <= row < MAX_ROWS:
        raise ValueError(f"row {row} outside [0, {MAX_ROWS})")
    return torch.Generator().manual_seed(int(seed) * MAX_ROWS + int(row))
