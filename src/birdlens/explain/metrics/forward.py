"""Class scores of many (perturbed) images in large no-grad batches: the one forward loop the ROAD,
infidelity and random-logit metrics share, so each evaluates its perturbations as one stream of chunks."""

from __future__ import annotations

import torch

from birdlens.explain.metrics.perturbation import eval_channels_last, model_device, select_logits

SCORES = ("prob", "logit")


def check_score(metric: str, score: str) -> str:
    """``prob`` (softmax probability, as deletion/insertion) or ``logit``; else one error naming the option."""
    if score not in SCORES:
        raise ValueError(f"{metric}.score must be one of {', '.join(SCORES)}, got {score!r}")
    return score


def class_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    score: str = "prob",
    batch_size: int = 64,
) -> torch.Tensor:
    """``[N]`` float64 on the CPU: the softmax probability (or logit) of ``targets[i]`` for ``images[i]``."""
    device = model_device(model)
    targets = torch.as_tensor(targets, dtype=torch.long).view(-1)
    out = torch.empty(images.shape[0], dtype=torch.float64)
    # channels_last switch outside inference mode: weights converted inside it could no longer be trained
    # or explained with gradients afterwards
    with eval_channels_last(model), torch.inference_mode():
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(device, torch.float32)
            logits = select_logits(model(x.contiguous(memory_format=torch.channels_last))).float()
            vals = logits.softmax(-1) if score == "prob" else logits
            t = targets[s : s + batch_size].to(device)
            out[s : s + x.shape[0]] = vals.gather(1, t[:, None])[:, 0].double().cpu()
    return out
