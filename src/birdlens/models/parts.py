"""Backbone/head split, stages and pooled features: what transfer learning needs from any registry model.

Built on timm's own model interface (``forward_features``/``forward_head(pre_logits=True)``,
``group_matcher``) so the same code serves EfficientNet, VGG, Xception, ResNet, the paper's CNN and any
other timm model; only VGG's per-conv groups are merged into its five pooling stages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from birdlens.models.registry import get_model_info


@dataclass
class Stage:
    """A run of layers that is frozen/unfrozen together (``name``: its first module path)."""

    name: str
    params: dict[str, nn.Parameter]

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())


def head_name(model: nn.Module) -> str:
    """Attribute path of the classifier (e.g. ``classifier``, ``fc``, ``head.fc``)."""
    return get_model_info(model).head


def _is_head(param_name: str, head: str) -> bool:
    return param_name == head or param_name.startswith(head + ".")


def backbone_and_head(model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """All named parameters split into (backbone, head). The head is only the final classifier layer."""
    head = head_name(model)
    backbone: dict[str, nn.Parameter] = {}
    head_params: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():
        (head_params if _is_head(name, head) else backbone)[name] = p
    return backbone, head_params


def stages(model: nn.Module) -> list[Stage]:
    """Backbone stages from input to output (stem first, head excluded), for partial unfreezing."""
    head = head_name(model)
    named = [(n, p) for n, p in model.named_parameters() if not _is_head(n, head)]
    if get_model_info(model).family == "vgg":
        groups = _vgg_groups(model, named)
    elif hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        # Parameters outside the matcher (e.g. VGG-like necks) land in a last group, as in timm.
        ids = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
        groups = {}
        for n, p in named:
            groups.setdefault(ids.get(n, 1 << 30), {})[n] = p
    else:  # a plain module: top-level children in definition order
        groups = {}
        for n, p in named:
            groups.setdefault(n.split(".")[0], {})[n] = p
    out = []
    for key in sorted(groups) if all(isinstance(k, int) for k in groups) else list(groups):
        params = groups[key]
        out.append(Stage(name=_stage_name(model, params), params=params))
    return out


def _stage_name(model: nn.Module, params: dict[str, nn.Parameter]) -> str:
    """``layer3`` / ``blocks.3`` when one module holds exactly the stage, else ``conv_stem+bn1``-style."""
    paths = [n.split(".")[:-1] for n in params]
    common: list[str] = []
    for comps in zip(*paths, strict=False):
        if len(set(comps)) != 1:
            break
        common.append(comps[0])
    for depth in range(1, len(common) + 1):  # the outermost module holding exactly these parameters
        prefix = ".".join(common[:depth])
        if {f"{prefix}.{n}" for n, _ in model.get_submodule(prefix).named_parameters()} == set(params):
            return prefix
    names: list[str] = []
    for n in params:
        parts = n.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        if key not in names:
            names.append(key)
    return "+".join(names)


def _vgg_groups(
    model: nn.Module, named: list[tuple[str, nn.Parameter]]
) -> dict[int, dict[str, nn.Parameter]]:
    stage_of: dict[str, int] = {}
    stage = 0
    for idx, layer in enumerate(model.features):  # type: ignore[union-attr, arg-type]
        stage_of[f"features.{idx}."] = stage
        if isinstance(layer, nn.MaxPool2d):
            stage += 1
    groups: dict[int, dict[str, nn.Parameter]] = {}
    for n, p in named:
        key = next((s for prefix, s in stage_of.items() if n.startswith(prefix)), stage)  # pre_logits: last
        groups.setdefault(key, {})[n] = p
    return groups


def set_trainable(params: Iterable[nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


def freeze_backbone(model: nn.Module) -> None:
    """Train only the head (linear-probe / first fine-tuning phase)."""
    unfreeze_last_stages(model, 0)


def unfreeze_last_stages(model: nn.Module, n: int | None = None) -> None:
    """Head plus the last ``n`` backbone stages trainable, everything else frozen; ``None`` = all."""
    _, head = backbone_and_head(model)
    set_trainable(head.values(), True)
    all_stages = stages(model)
    keep = len(all_stages) if n is None or n < 0 else min(n, len(all_stages))
    for i, stage in enumerate(all_stages):
        set_trainable(stage.parameters(), i >= len(all_stages) - keep)


def set_train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, but normalisation layers whose parameters are all frozen stay in eval mode,
    so a frozen backbone's BatchNorm statistics are not updated by the few images of a fine-tune."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                m.eval()
    return model


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")  # biases and norm scales: no weight decay (timm convention)


def param_groups(
    model: nn.Module, lr: float, backbone_lr: float | None = None, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Optimizer groups: head at ``lr``, trainable backbone at ``backbone_lr`` (default ``lr``); biases and
    norm parameters without weight decay. Frozen parameters are left out; each group has a ``name``."""
    backbone, head = backbone_and_head(model)
    groups: list[dict[str, Any]] = []
    for part, params, group_lr in (
        ("backbone", backbone, backbone_lr if backbone_lr is not None else lr),
        ("head", head, lr),
    ):
        decay = [p for n, p in params.items() if p.requires_grad and not (weight_decay and _no_decay(n, p))]
        no_decay = [p for n, p in params.items() if p.requires_grad and weight_decay and _no_decay(n, p)]
        if decay:
            groups.append({"name": part, "params": decay, "lr": group_lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append(
                {"name": f"{part}_no_decay", "params": no_decay, "lr": group_lr, "weight_decay": 0.0}
            )
    return groups


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logits features ``[B, num_features]`` (what a linear probe is trained on)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]
