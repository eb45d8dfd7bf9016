"""Score-CAM (Wang et al. 2020): each channel of the CAM layer weighs by the target logit of the image masked
by that channel.

Gradient-free: it needs forward passes only, so it is valid on SiLU networks. Each channel is upsampled to the
input size (bilinear, corners aligned: pytorch-grad-cam's ``UpsamplingBilinear2d``), min-max scaled to
[0, 1] (``1e-8`` in the denominator), multiplied into the image, and the target logit of that masked image is
the channel's score; the weights are the softmax of the scores over channels, exactly as
``pytorch_grad_cam.ScoreCAM``. The masked images are built per model batch (never all channels of an image at
once: Lite0's 1280 masks at 224 px would be 770 MB) and the batches are filled across images
(:mod:`birdlens.explain.batching`). Cost: one forward per channel of the layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from birdlens.explain.base import Param, register
from birdlens.explain.batching import Job, alone_rows, chunk_bounds, pooled_values
from birdlens.explain.methods.cam import CAMBase, Captured

BATCH_SIZE = Param("batch_size", int, 16, lo=1, hi=64, doc="masked images per model call")


def channel_masks(acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[k, h, w]`` channels of one image -> ``[k, H, W]`` masks in [0, 1], as pytorch-grad-cam's Score-CAM."""
    up = F.interpolate(acts[None].float(), size=size, mode="bilinear", align_corners=True)[0]
    flat = up.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    return (up - lo[:, None, None]) / (hi - lo + 1e-8)[:, None, None]


@register("scorecam", "score-cam", "score_cam")
class ScoreCAM(CAMBase):
    """Channel weights = softmax over channels of the target logit of the channel-masked image."""

    title = "Score-CAM"
    panel_order = 48
    heavy = True
    batched = True
    uses_gradients = False
    tunable = (*CAMBase.tunable, BATCH_SIZE)

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        layer: str | torch.nn.Module | None = None,
        normalize: bool = True,
        batch_size: int = 16,
        **common: Any,
    ) -> None:
        super().__init__(model, layer=layer, normalize=normalize, **common)
        self.batch_size = int(BATCH_SIZE.check(self.name, batch_size))

    def _job(self, xi: torch.Tensor, ai: torch.Tensor, target: int, contrast: int | None) -> Job:
        size = (xi.shape[-2], xi.shape[-1])

        def make(lo: int, hi: int) -> torch.Tensor:
            return xi[None] * channel_masks(ai[lo:hi], size)[:, None]

        rows = int(ai.shape[0])
        bounds = chunk_bounds(rows, self.batch_size)
        return Job(rows, make, target, alone_rows(bounds), tuple(bounds), contrast)

    def cam_for(self, x: torch.Tensor, cap: Captured) -> torch.Tensor:
        acts = cap.layout.to_nchw(cap.acts).float()
        jobs = [self._job(x[i], acts[i], int(cap.target[i]), self.contrast_of(i)) for i in range(x.shape[0])]
        scores = pooled_values(self, jobs, self.batch_size, "logit", "fp32")
        weights = torch.stack(scores).float().softmax(1).to(acts.device)
        return (weights[:, :, None, None] * acts).sum(1)

    def cam_params(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}
