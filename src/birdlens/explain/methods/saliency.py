"""Saliency (Simonyan et al. 2014): the absolute input gradient of the target logit, max over colour channels.

The cheapest gradient map (one forward and one backward per image), and the base SmoothGrad averages by
default. The per-channel ``|gradient|`` is what ``captum.attr.Saliency(model).attribute(x, target, abs=True)``
returns (kept in ``scores["attributions"]``); the map takes its maximum over channels, as the paper does.
Images share each backward in batches of ``batch_size`` (a gradient of one image does not depend on the
others in eval mode: each map equals explaining the image alone to float32 rounding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from birdlens.explain.base import Explainer, Param, class_score, register
from birdlens.explain.hooks import frozen_parameters


def input_gradients(
    explainer: Explainer, x: torch.Tensor, target: torch.Tensor | None, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(gradients [B,C,H,W], logits [B,K], target [B])`` of each image's explained score (its target logit,
    or the logit difference of a contrastive call: :func:`class_score`), ``chunk`` images per backward; the
    forward that gives the gradient also gives the logits and the predicted class."""
    grads, logits, targets = [], [], []
    with frozen_parameters(explainer.model):
        for lo in range(0, x.shape[0], max(1, chunk)):
            pts = x[lo : lo + chunk].clone().requires_grad_(True)
            with torch.enable_grad():
                out = explainer.logits(pts)
                t = out.detach().argmax(1) if target is None else target[lo : lo + chunk]
                cst = None if explainer.contrast is None else explainer.contrast[lo : lo + chunk]
                (g,) = torch.autograd.grad(class_score(out, t, cst).sum(), pts)
            grads.append(g.detach())
            logits.append(out.detach().float())
            targets.append(t)
    return torch.cat(grads), torch.cat(logits), torch.cat(targets)


@register("saliency", "gradient", "vanilla_gradient")
class Saliency(Explainer):
    """``max_c |d logit_target / d x_c|`` per pixel; ``batch_size`` images per backward."""

    title = "Saliency"
    panel_order = 65
    batched = True
    uses_gradients = True
    overlay_sigma = 1.5  # per-pixel gradients are speckled; the saved .npy stays raw
    tunable = (Param("batch_size", int, 16, lo=1, hi=64, doc="images per backward"),)

    def __init__(self, model: nn.Module, *, batch_size: int = 16, **common: Any) -> None:
        super().__init__(model, **common)
        self.batch_size = self.checked("batch_size", batch_size)
        self.params.update(batch_size=self.batch_size)

    @staticmethod
    def channel_map(attributions: torch.Tensor) -> torch.Tensor:
        """The map of per-channel attributions ``[B,C,H,W]``: their maximum over channels (Simonyan et al.)."""
        return attributions.amax(1)

    def map_of(self, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.channel_map(values)

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        grads, logits, target = input_gradients(self, x, target, self.batch_size)
        attr = grads.abs()
        scores = self.target_scores(logits, target)
        scores["attributions"] = attr.cpu()
        return self.channel_map(attr), target, scores, {}
