"""Eigen-CAM (Muhammad & Yeasin 2020): the CAM layer's activations projected on their first principal component.

Class-agnostic and gradient-free: it reads only the forward activations, so no backward rule is involved and it
is as valid on SiLU networks as on ReLU ones. The projection follows pytorch-grad-cam's
``get_2d_projection`` (NaNs set to 0, the ``[h*w, C]`` activation matrix centred per channel, projected on the
first right singular vector). An SVD fixes a singular vector only up to its sign, and which sign LAPACK returns
depends on the library build, so the projection is flipped where its largest magnitude is negative: the sign
rule of pytorch-grad-cam's ``get_2d_projection_with_sign_correction`` (Eq. 13 of Seg-Eigen-CAM), which makes
the map the same on every machine and device. The SVD runs in float64 on the CPU (a ``[h*w, C]`` matrix per
image, small next to the forward).
"""

from __future__ import annotations

from typing import Any

import torch

from birdlens.explain.base import register
from birdlens.explain.methods.cam import CAMBase, Captured


def first_component(acts: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` activations -> ``[B, h, w]`` projection on their first principal component, sign
    corrected so that the larger of ``|min|`` and ``|max|`` is the maximum (float64)."""
    b, c, h, w = acts.shape
    a = acts.detach().to("cpu", torch.float64).reshape(b, c, h * w).transpose(1, 2)
    a = torch.where(torch.isnan(a), torch.zeros_like(a), a)
    a = a - a.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    proj = (a @ vh[:, 0, :, None]).squeeze(-1)
    flip = proj.amin(1).abs() > proj.amax(1).abs()
    proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(b, h, w)


@register("eigencam", "eigen-cam", "eigen_cam")
class EigenCAM(CAMBase):
    """The first principal component of the layer's activations (the same map for every target)."""

    title = "Eigen-CAM"
    panel_order = 47
    uses_gradients = False
    contrastive = False  # the map does not depend on the class, so "why A and not B" has no answer here

    def cam_for(self, x: torch.Tensor, cap: Captured) -> torch.Tensor:
        acts = cap.layout.to_nchw(cap.acts)
        return first_component(acts).to(x.device, torch.float32)

    def cam_params(self) -> dict[str, Any]:
        return {"sign": "largest magnitude positive"}
