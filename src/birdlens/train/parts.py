"""Training-side helpers on top of the registry's backbone/head split (``birdlens.models.parts``).

The registry knows which parameters are head, backbone and stages for every model; training adds what only
it needs: which backbone stages ever train, dropping a fitted linear head into the model, and a fingerprint of
the backbone weights for the feature cache.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from birdlens.models import backbone_and_head, count_params, stages
from birdlens.models import features as pooled_features

__all__ = [
    "backbone_fingerprint",
    "head_module",
    "head_param_names",
    "param_counts",
    "pooled_features",
    "set_linear_head",
    "trainable_backbone_names",
]


def head_module(model: nn.Module) -> nn.Module:
    """The classifier layer (what a probe fits)."""
    head = model.get_classifier()  # type: ignore[operator]
    return head[0] if isinstance(head, (tuple, list)) else head


def head_param_names(model: nn.Module) -> set[str]:
    return set(backbone_and_head(model)[1])


def trainable_backbone_names(model: nn.Module, last_stages: int | None) -> set[str]:
    """Backbone parameters that fine-tuning may train: the last ``last_stages`` stages (None = all)."""
    all_stages = stages(model)
    n = len(all_stages) if last_stages is None else min(last_stages, len(all_stages))
    return {name for s in all_stages[len(all_stages) - n :] for name in s.params} if n else set()


def set_linear_head(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Copy a fitted linear classifier into the model's head (shapes must match)."""
    head = head_module(model)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"probe needs a linear head, {type(model).__name__} has {type(head).__name__}")
    if tuple(head.weight.shape) != tuple(weight.shape):
        raise ValueError(f"head is {tuple(head.weight.shape)}, fitted weights are {tuple(weight.shape)}")
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.dtype))
        head.bias.copy_(bias.to(head.bias.dtype))


def backbone_fingerprint(model: nn.Module) -> str:
    """SHA-1 of every backbone tensor (parameters and buffers, not the head): the weights part of a cache key.

    Cheap next to feature extraction (measured: docs/benchmarks.md#training); independent of where the weights
    came from (bundled, file, hub).
    """
    head = head_param_names(model)
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        if name in head:
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(
            t.detach()
            .to("cpu", torch.float32 if t.is_floating_point() else t.dtype)
            .contiguous()
            .numpy()
            .tobytes()
        )
    return h.hexdigest()


def param_counts(model: nn.Module) -> dict[str, int]:
    """Total, trainable and head parameters, for a run's meta.json (one number each: see ``count_params``)."""
    return {
        "total": count_params(model),
        "trainable": count_params(model, trainable_only=True),
        "head": count_params(head_module(model)),
    }
