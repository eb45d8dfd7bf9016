"""Grad-CAM, Grad-CAM++, LayerCAM, HiResCAM and XGradCAM, batched; the base of every CAM.

Why not pytorch-grad-cam: it back-propagates through the whole network with parameter gradients and moves
everything to numpy (measured: docs/benchmarks.md#explainers). We re-root the CAM layer's output as a leaf
(:func:`capture_as_leaf`) with all parameters frozen, so autograd records only the head, and take
``torch.autograd.grad`` with respect to that activation alone; the forward then costs an inference forward.
The maps use pytorch-grad-cam's exact normalisation (ReLU, per-image min-max, bilinear resize, min-max again),
so they equal ``pytorch_grad_cam.GradCAM`` on the same layer. Token and channels-last layers (ViT, DeiT,
EVA, Swin) are folded to ``[B, C, h, w]`` as :mod:`birdlens.explain.tokens` reads it from the model, the
same fold as pytorch-grad-cam's ``reshape_transform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from birdlens.explain.base import Explainer, Param, register
from birdlens.explain.hooks import capture_as_leaf, frozen_parameters, record_shapes
from birdlens.explain.imaging import minmax_per_image, resize_maps
from birdlens.explain.layers import resolve_layer
from birdlens.explain.tokens import Layout, LayoutError, ancestors, enclosing_map, layout_of


@dataclass(frozen=True)
class Captured:
    """One forward through the model with the CAM layer recorded: what every CAM is computed from.

    ``acts``/``grads`` are in the layer's own layout (``grads`` None for the gradient-free CAMs);
    ``layout.to_nchw`` folds them to ``[B, C, h, w]``."""

    logits: torch.Tensor
    target: torch.Tensor
    acts: torch.Tensor
    grads: torch.Tensor | None
    layout: Layout
    layer: nn.Module
    path: str
    how: str


class CAMBase(Explainer):
    """Shared machinery: forward once, (for the gradient CAMs) one gradient w.r.t. the layer activation, a
    per-method combination into a ``[B, h, w]`` map, then pytorch-grad-cam's normalisation."""

    needs_layer = True
    # the gradient CAMs need the target's gradient at the layer (False: Eigen-CAM, Score-CAM, Ablation-CAM)
    uses_gradients = True
    smoothed_score = "cam_lowres"  # SmoothGrad averages the raw CAM, then normalises it as one CAM
    tunable: ClassVar[tuple[Param, ...]] = (
        Param(
            "normalize", bool, True, doc="ReLU + per-image min-max as pytorch-grad-cam (false: the raw CAM)"
        ),
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str | nn.Module | None = None,
        normalize: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.layer_arg = layer
        self.normalize = normalize
        self._layer: tuple[nn.Module, str, str] | None = None

    def layer_for(self, x: torch.Tensor) -> tuple[nn.Module, str, str]:
        if self._layer is None:
            self._layer = resolve_layer(self.model, self.layer_arg, self.model_name, x)
        return self._layer

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cam_for(self, x: torch.Tensor, cap: Captured) -> torch.Tensor:
        """The raw CAM ``[B, h, w]`` (before normalisation); the gradient CAMs combine activations and
        gradients, the gradient-free ones override this."""
        assert cap.grads is not None
        acts, grads = cap.layout.to_nchw(cap.acts), cap.layout.to_nchw(cap.grads)
        return self.combine(acts.float(), grads.float())

    def _layout(
        self, path: str, layer: nn.Module, acts: torch.Tensor, x: torch.Tensor, shapes: dict[str, Any]
    ) -> Layout:
        enclosing = enclosing_map(self.model, path, shapes, x.shape[0])
        try:
            return layout_of(self.model, path, layer, tuple(acts.shape), tuple(x.shape), enclosing)
        except LayoutError as e:
            try:
                default = resolve_layer(self.model, None, self.model_name, x)[1]
            except ValueError:
                raise e from None
            hint = f" This model's default CAM layer is {default!r}." if default != path else ""
            raise LayoutError(f"{e}{hint}") from None

    def capture(self, x: torch.Tensor, target: torch.Tensor | None) -> Captured:
        """One forward with the CAM layer re-rooted as a leaf, and the target's gradient there when the
        method uses it (no autograd graph at all otherwise)."""
        layer, path, how = self.layer_for(x)
        grads = None
        with (
            frozen_parameters(self.model),
            capture_as_leaf(layer) as cap,
            record_shapes(ancestors(self.model, path)) as shapes,
            torch.enable_grad() if self.uses_gradients else torch.no_grad(),
        ):
            logits = self.logits(x)
            if target is None:
                target = logits.detach().argmax(1)
            if cap.leaf is None:
                raise RuntimeError(f"layer {path!r} was not called in the forward pass")
            if self.uses_gradients:
                chosen = self.explained_score(logits, target).sum()
                (grads,) = torch.autograd.grad(chosen, cap.leaf)
        acts = cap.leaf.detach()
        layout = self._layout(path, layer, acts, x, shapes)
        if grads is not None and layout.kind == "tokens" and not layout.to_nchw(grads).any():
            raise LayoutError(
                f"layer {path!r} gets no gradient at its patch tokens (after it, the head reads only the "
                "prefix tokens, as after a ViT's last block); pass an earlier layer, e.g. that block's norm1"
            )
        return Captured(logits.detach(), target, acts, grads, layout, layer, path, how)

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        cap = self.capture(x, target)
        cam = self.cam_for(x, cap)
        raw = cam.detach().clone()
        cam = self.map_of(cam, (x.shape[2], x.shape[3]))
        scores = self.target_scores(cap.logits, cap.target)
        scores["cam_lowres"] = raw.cpu()
        params = {
            "layer": cap.path,
            "layer_choice": cap.how,
            **cap.layout.to_params(),
            "normalize": self.normalize,
            **self.cam_params(),
        }
        return cam, cap.target, scores, params

    def map_of(self, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A raw CAM ``[B, h, w]`` at input resolution: pytorch-grad-cam's normalisation when ``normalize``."""
        if not self.normalize:
            return resize_maps(values, size)
        return minmax_per_image(resize_maps(minmax_per_image(values.clamp_min(0)), size).clamp_min(0))

    def cam_params(self) -> dict[str, Any]:
        """The method's own settings for ``params`` (a batch size, a sign rule)."""
        return {}


@register("gradcam", "grad-cam", "grad_cam")
class GradCAM(CAMBase):
    """Selvaraju et al. 2017: channel weights = spatial mean of the gradient."""

    title = "Grad-CAM"
    panel_order = 10

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        w = grads.mean(dim=(2, 3), keepdim=True)
        return (w * acts).sum(1)


@register("gradcam++", "gradcampp", "gradcam_pp", "grad-cam++")
class GradCAMPlusPlus(CAMBase):
    """Chattopadhyay et al. 2018, eq. 19 with the exponential-output closed form (as pytorch-grad-cam)."""

    title = "Grad-CAM++"
    panel_order = 20

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads**2
        g3 = g2 * grads
        sum_acts = acts.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_acts * g3 + 1e-6)
        aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
        w = (grads.clamp_min(0) * aij).sum(dim=(2, 3), keepdim=True)
        return (w * acts).sum(1)


@register("layercam", "layer-cam")
class LayerCAM(CAMBase):
    """Jiang et al. 2021: element-wise positive gradients times activations (finer than Grad-CAM)."""

    title = "LayerCAM"
    panel_order = 30

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads.clamp_min(0) * acts).sum(1)


@register("hirescam", "hires-cam")
class HiResCAM(CAMBase):
    """Draelos & Carin 2020: element-wise gradient times activation (provably faithful for a linear head)."""

    title = "HiResCAM"
    panel_order = 40

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * acts).sum(1)


@register("xgradcam", "xgrad-cam", "xgrad_cam")
class XGradCAM(CAMBase):
    """Fu et al. 2020: channel weights = activation-weighted gradient, ``sum(g * a) / sum(a)`` per channel
    (as pytorch-grad-cam, with its ``1e-7`` in the denominator)."""

    title = "XGradCAM"
    panel_order = 45

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        sum_acts = acts.sum(dim=(2, 3), keepdim=True)
        w = (grads * acts / (sum_acts + 1e-7)).sum(dim=(2, 3), keepdim=True)
        return (w * acts).sum(1)
