"""BatchNorm folding: an inference-only copy of a model with every ``Conv2d -> BatchNorm2d`` pair merged.

Why: perturbation explainers (LIME, SHAP) and the deletion/insertion metrics are bound by thousands of
no-grad forward passes. In eval mode a BatchNorm is an affine map per channel, so it can be folded into the
convolution that feeds it (``W' = W * g / sqrt(v + eps)``, ``b' = beta + (b - mu) * g / sqrt(v + eps)``) and its
separate memory-bound pass disappears (measured: docs/benchmarks.md#models-and-weights).

The pairs are found from the data flow, not from module order: one forward pass with hooks records which
BatchNorm consumes exactly the tensor a convolution produced. The folded copy is then checked against the
original on that batch; if it differs (a conv output also used elsewhere, an unusual block), the original
model is returned unchanged, so folding can never silently change an explanation.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FoldResult", "fold_batchnorm"]

log = logging.getLogger(__name__)


class _ActOnly(nn.Module):
    """What is left of a timm ``BatchNormAct2d`` once its affine part lives in the conv: drop + act."""

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        self.drop = getattr(bn, "drop", nn.Identity())
        self.act = getattr(bn, "act", nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


@dataclass
class FoldResult:
    model: nn.Module
    folded: int  # number of conv/BN pairs merged (0: the original model is returned)
    max_abs_diff: float  # largest output difference on the check batch
    reason: str = ""  # why nothing was folded, when nothing was


def _pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` for every BatchNorm2d whose input is exactly a Conv2d's output tensor."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    found: list[tuple[str, str]] = []
    handles = []

    def conv_hook(name: str):
        def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            produced[id(out)] = (name, out)  # keep the tensor so its id cannot be reused

        return hook

    def bn_hook(name: str):
        def hook(_m: nn.Module, args: tuple) -> None:
            src = produced.get(id(args[0]))
            if src is not None and src[1] is args[0]:
                found.append((src[0], name))

        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook(name)))
        elif isinstance(mod, nn.BatchNorm2d):
            handles.append(mod.register_forward_pre_hook(bn_hook(name)))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    convs = [c for c, _ in found]
    # a conv called more than once, or feeding two BNs, cannot be folded for all of its uses
    return [(c, b) for c, b in found if convs.count(c) == 1]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out.float()


def fold_batchnorm(model: nn.Module, example: torch.Tensor, rtol: float = 1e-4) -> FoldResult:
    """An eval-mode copy of ``model`` with Conv2d->BatchNorm2d pairs folded (the original is untouched).

    ``example``: a batch shaped like the real inputs (used to find the pairs and to check the copy); the copy
    is accepted only if its outputs match within ``rtol`` of the output range.
    """
    if model.training:
        raise ValueError(
            "fold_batchnorm is for inference: call model.eval() first (training BN uses batch stats)"
        )
    pairs = _pairs(model, example)
    if not pairs:
        return FoldResult(model, 0, 0.0, "no Conv2d -> BatchNorm2d pair in the data flow")
    try:
        fused = copy.deepcopy(model)
    except Exception as e:  # a wrapper holding locks, files...: fold nothing rather than fail the explanation
        return FoldResult(model, 0, 0.0, f"the model cannot be copied ({type(e).__name__}: {e})")
    for conv_name, bn_name in pairs:
        conv = fused.get_submodule(conv_name)
        bn = fused.get_submodule(bn_name)
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or bn.running_var is None:
            continue
        with torch.no_grad():
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
                bn.running_var + bn.eps
            )
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
            conv.bias = nn.Parameter(shift + (bias - bn.running_mean) * scale, requires_grad=False)
        _set(fused, bn_name, _ActOnly(bn) if type(bn) is not nn.BatchNorm2d else nn.Identity())
    fused.eval()
    with torch.inference_mode():
        ref, out = _output(model, example), _output(fused, example)
    diff = float((ref - out).abs().max())
    if not torch.isfinite(out).all() or diff > rtol * max(float(ref.abs().max()), 1.0):
        log.warning("BatchNorm folding changed the outputs by %.3g; using the original model", diff)
        return FoldResult(model, 0, diff, f"folded outputs differ by {diff:.3g}")
    return FoldResult(fused, len(pairs), diff)
