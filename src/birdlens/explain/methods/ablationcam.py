"""Ablation-CAM (Desai & Ramaswamy 2020): each channel of the CAM layer weighs by how much the target logit
drops when that channel is ablated.

Gradient-free: forward passes only, so it is valid on SiLU networks. As ``pytorch_grad_cam.AblationCAM``: the
layer's output is replaced (a forward hook, :func:`birdlens.explain.hooks.replace_output`) by the image's own
activations with one channel set to 0 where the activations' minimum is 0 (after a ReLU), else to that minimum
minus ``1e7``; the weight is ``(score - ablated score) / score`` of the target logit. Where pytorch-grad-cam's
layer lowers the value by another ``1e7`` for every further row of a batch (it re-reads the minimum after
editing), each ablation here uses the one value, so a row's result does not depend on its place in a batch.
The channel dimension is dimension 1 of a ``[B, C, h, w]`` output and the last one of channels-last and token
outputs (all tokens, as pytorch-grad-cam's ``AblationLayerVit``). Rows (image, channel) fill model batches across
images. Cost: one forward per channel of the layer; the network up to the layer runs too, as in
pytorch-grad-cam, because a layer inside a residual block feeds the rest of the network by a second path. The
forwards run through the BatchNorm-folded copy when ``fold_bn`` (as LIME's and SHAP's), where the copy's module
at the CAM layer is checked to give the layer's activations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from birdlens.explain.base import Param, class_score, register
from birdlens.explain.hooks import capture_as_leaf, frozen_parameters, replace_output
from birdlens.explain.methods.cam import CAMBase, Captured
from birdlens.explain.outputs import select_output
from birdlens.explain.progress import announce

BATCH_SIZE = Param("batch_size", int, 16, lo=1, hi=64, doc="ablated copies per model call")
#: how far below the minimum an ablated channel is set where activations can be negative (pytorch-grad-cam)
ABLATION_OFFSET = 1e7


def ablation_values(acts: torch.Tensor) -> torch.Tensor:
    """Per image ``[B]``: 0 where its activations' minimum is 0, else that minimum minus ``1e7``."""
    lo = acts.flatten(1).amin(1)
    return torch.where(lo == 0, torch.zeros_like(lo), lo - ABLATION_OFFSET)


def ablated(acts: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Copies ``acts[rows]`` with channel ``channels[r]`` of copy ``r`` set to its image's ablation value."""
    out = acts[rows].clone()
    values = ablation_values(acts)[rows].to(out.dtype)
    view = out if channel_dim == 1 else out.movedim(channel_dim, 1)
    view[torch.arange(len(rows), device=out.device), channels.to(out.device)] = values.view(
        -1, *([1] * (view.ndim - 2))
    )
    return out


@register("ablationcam", "ablation-cam", "ablation_cam")
class AblationCAM(CAMBase):
    """Channel weights = relative drop of the target logit when the channel is ablated."""

    title = "Ablation-CAM"
    panel_order = 49
    heavy = True
    batched = True
    uses_gradients = False
    tunable = (*CAMBase.tunable, BATCH_SIZE)

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str | nn.Module | None = None,
        normalize: bool = True,
        batch_size: int = 16,
        **common: Any,
    ) -> None:
        super().__init__(model, layer=layer, normalize=normalize, **common)
        self.batch_size = int(BATCH_SIZE.check(self.name, batch_size))

    def cam_for(self, x: torch.Tensor, cap: Captured) -> torch.Tensor:
        acts = cap.acts
        channel_dim = 1 if cap.layout.kind == "nchw" else acts.ndim - 1
        n_img, n_ch = acts.shape[0], acts.shape[channel_dim]
        cst = self.contrast  # a contrastive call scores logit[target] - logit[contrast] (class_score)
        base = class_score(cap.logits.float(), cap.target, cst)
        images = torch.arange(n_img, device=x.device).repeat_interleave(n_ch)
        channels = torch.arange(n_ch, device=x.device).repeat(n_img)
        net, layer = self._network(x, cap)
        out = []
        announce(n_img * n_ch)  # one forward row a channel: the web app's progress bar
        with frozen_parameters(net), replace_output(layer) as rep, torch.no_grad():
            for lo in range(0, n_img * n_ch, self.batch_size):
                rows, chans = images[lo : lo + self.batch_size], channels[lo : lo + self.batch_size]
                rep.value = ablated(acts, rows, chans, channel_dim)
                logits = select_output(net(self.to_memory_format(x[rows])), self.output).float()
                out.append(class_score(logits, cap.target[rows], None if cst is None else cst[rows]))
        scores = torch.cat(out).view(n_img, n_ch)
        weights = (base[:, None] - scores) / base[:, None]
        return (weights[:, :, None, None] * cap.layout.to_nchw(acts).float()).sum(1)

    def _network(self, x: torch.Tensor, cap: Captured) -> tuple[nn.Module, nn.Module]:
        """The BatchNorm-folded copy (faster forwards) and its module at the CAM layer, where that module
        gives the layer's activations; else the model (a folded conv there returns conv + BN, so the copy's
        output at that path is another tensor, and replacing it would skip the BN)."""
        net = self.inference_model(x)
        if net is self.model:
            return net, cap.layer
        layer = net.get_submodule(cap.path)
        with capture_as_leaf(layer) as seen, torch.no_grad():
            net(x[:1])
        if seen.leaf is None or seen.leaf.shape[1:] != cap.acts.shape[1:]:
            return self.model, cap.layer
        if not torch.allclose(
            seen.leaf[0], cap.acts[0], rtol=1e-4, atol=1e-5 * float(cap.acts[0].abs().max())
        ):
            return self.model, cap.layer
        return net, layer

    def cam_params(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}
