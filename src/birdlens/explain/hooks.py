"""Hooks and temporary model state, always inside context managers so nothing outlives a call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily stop parameters from requiring grad.

    Why: with no parameter requiring grad and an input that does not, autograd records nothing before the
    point where we inject a leaf (a CAM layer's output or the input for IG), so the forward costs what an
    inference forward costs and no parameter gradient is ever computed.
    """
    changed = [p for p in model.parameters() if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


@dataclass
class Capture:
    """The output of one module, re-rooted as a leaf tensor that requires grad."""

    leaf: torch.Tensor | None = None
    calls: int = 0


@contextlib.contextmanager
def capture_as_leaf(layer: nn.Module) -> Iterator[Capture]:
    """Forward hook on ``layer``: its output is detached into a grad-requiring leaf and the rest of the
    forward continues from a clone of it (in-place ops downstream, such as ``ReLU(inplace=True)`` after a
    conv, then modify the clone and never the recorded activation). Removed on exit, even on error."""
    cap = Capture()

    def hook(module: nn.Module, args: object, out: object) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the CAM layer must return a tensor, got {type(out).__name__}; choose another layer="
            )
        leaf = out.detach().requires_grad_(True)
        cap.leaf = leaf
        cap.calls += 1
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


def count_hooks(model: nn.Module) -> int:
    """Number of hooks registered on ``model`` and its submodules (tests: nothing leaks)."""
    n = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
        ):
            n += len(getattr(m, attr, {}) or {})
    return n


@contextlib.contextmanager
def record_shapes(modules: dict[str, nn.Module]) -> Iterator[dict[str, tuple[int, ...]]]:
    """Forward hooks that note the output shape of each named module (last call wins); removed on exit.

    Why: a token layer inside a Swin block has no grid of its own; the block around it says which."""
    shapes: dict[str, tuple[int, ...]] = {}

    def make(name: str) -> Any:
        def hook(module: nn.Module, args: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)

        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in modules.items()]
    try:
        yield shapes
    finally:
        for h in handles:
            h.remove()


@dataclass
class Replacement:
    """What :func:`replace_output` makes a module return: ``value`` when set, else its own output."""

    value: torch.Tensor | None = None


@contextlib.contextmanager
def replace_output(layer: nn.Module) -> Iterator[Replacement]:
    """Forward hook on ``layer`` that returns ``Replacement.value`` instead of the module's output.

    Why: Ablation-CAM runs the rest of the network on edited copies of a layer's activations, as
    pytorch-grad-cam's ``AblationLayer`` does by swapping the module; a hook does it without touching the
    model's structure and is removed on exit, even on error."""
    rep = Replacement()

    def hook(module: nn.Module, args: object, out: object) -> object:
        return out if rep.value is None else rep.value

    handle = layer.register_forward_hook(hook)
    try:
        yield rep
    finally:
        handle.remove()
