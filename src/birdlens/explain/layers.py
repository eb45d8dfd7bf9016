"""Which layer a CAM looks at: the model registry's choice, an explicit override, or a forward trace."""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn


def module_by_path(model: nn.Module, path: str) -> nn.Module:
    """``"blocks.6.0"`` -> the submodule (``get_submodule`` with an error that lists candidate layers)."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=5, cutoff=0.6) or names[-5:]
        raise ValueError(
            f"no layer {path!r} in {type(model).__name__}; candidates: {', '.join(close)} "
            "(all of them: [n for n, _ in model.named_modules()])"
        ) from None


def module_path(model: nn.Module, layer: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is layer:
            return name
    raise ValueError("the given layer is not a submodule of the model")


def registry_cam_layer(model_name: str | None, model: nn.Module | None = None) -> str | None:
    """The registry's ``cam_layer``: from the model itself when ``birdlens.models.create_model`` built it,
    else from ``get_model_info(model_name)``; None when neither is known."""
    info = getattr(model, "birdlens_info", None)
    if getattr(info, "cam_layer", None):
        return str(info.cam_layer)
    if not model_name:
        return None
    from birdlens.models import get_model_info

    try:
        info = get_model_info(model_name)
    except Exception:
        return None
    return getattr(info, "cam_layer", None) or None


def _family_layer(model: nn.Module) -> str | None:
    """A plain timm token model (no registry name): its family's default layer (ViT, DeiT, EVA, Swin)."""
    try:
        from birdlens.models.registry import family_cam_layer
    except ImportError:
        return None
    return family_cam_layer(model)


def trace_last_feature_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The last module (in order of completion) whose output is a 4-D map with spatial size > 1.

    Parents complete after their children, so a block wins over its last sub-layer that returns the same
    tensor (``bn2`` rather than ``bn2.act`` in timm's EfficientNets) — the usual Grad-CAM choice.
    """
    order: list[str] = []
    handles = []

    def make(name: str) -> Any:
        def hook(module: nn.Module, args: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] > 1 and out.shape[-2] > 1:
                order.append(name)

        return hook

    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_hook(make(name)))
    try:
        with torch.inference_mode():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError("no module of the model returns a 4-D feature map; pass layer= explicitly")
    return order[-1]


def resolve_layer(
    model: nn.Module, layer: str | nn.Module | None, model_name: str | None, example: torch.Tensor
) -> tuple[nn.Module, str, str]:
    """``(module, dotted path, how it was chosen)``: explicit ``layer`` > registry > forward trace."""
    if isinstance(layer, nn.Module):
        return layer, module_path(model, layer), "given"
    if isinstance(layer, str):
        return module_by_path(model, layer), layer, "given"
    reg = registry_cam_layer(model_name, model) or _family_layer(model)
    if reg:
        return module_by_path(model, reg), reg, "registry"
    path = trace_last_feature_layer(model, example)
    return module_by_path(model, path), path, "trace"


def use_cam_layer(trained: Any, layer: str, methods: list[str]) -> None:
    """Point a loaded run's CAM methods at ``layer`` (``--layer``, a study's ``layer``), checked first.

    Why a check before any work: a misspelt layer, or one whose output is no spatial map, should end with one
    error line (listing candidates, or saying what its output is) before anything is written, not after the
    other methods ran. The check is one forward and backward of a blank image through a Grad-CAM there.
    """
    from birdlens.explain.base import explainer_for, method_class

    if not any(method_class(m).needs_layer for m in methods):
        raise ValueError(f"layer {layer!r} was given but none of the methods {methods} uses a layer")
    try:
        module_by_path(trained.model, layer)
    except ValueError as e:
        default = getattr(trained, "cam_layer", None)
        raise ValueError(
            f"{e}; this model's default CAM layer is {default!r}" if default else str(e)
        ) from None
    size = int(getattr(trained, "image_size", 0) or 224)
    blank = torch.zeros(1, 3, size, size)
    trained.cam_layer = layer
    explainer_for(trained, "gradcam").explain(blank)
