"""Pick the logits out of whatever a model's forward returns (tensor, tuple/list, dict, dataclass)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

OutputSelector = int | str | Callable[[Any], torch.Tensor] | None


def select_output(out: Any, selector: OutputSelector = None) -> torch.Tensor:
    """``selector``: None (tensor as is, first element of a tuple, ``logits`` key or first value of a dict),
    an int index, a str key/attribute, or a callable ``out -> logits``. The result must be ``[B, classes]``."""
    if callable(selector) and not isinstance(selector, (int, str)):
        res = selector(out)
    elif selector is None:
        if isinstance(out, torch.Tensor):
            res = out
        elif isinstance(out, (tuple, list)):
            res = out[0]
        elif isinstance(out, Mapping):
            res = out["logits"] if "logits" in out else next(iter(out.values()))
        else:
            res = getattr(out, "logits", out)
    elif isinstance(selector, int):
        res = out[selector]
    else:
        res = out[selector] if isinstance(out, Mapping) else getattr(out, selector)
    if not isinstance(res, torch.Tensor) or res.ndim != 2:
        shape = tuple(res.shape) if isinstance(res, torch.Tensor) else type(res).__name__
        raise ValueError(
            f"the selected model output must be a [B, classes] tensor, got {shape}; pass output="
        )
    return res
