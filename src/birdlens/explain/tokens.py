"""How a CAM layer's output is laid out, and its reshape to ``[B, C, h, w]``, read from the model.

Why a module of its own: a CAM combines channels over a spatial map, and token models (ViT, DeiT, EVA, ViTs
with register tokens) return ``[B, N, C]`` token sequences while Swin returns channels-last ``[B, H, W, C]``
maps. Taking such a tensor for ``[B, C, h, w]`` gives a map without a word that is wrong everywhere, so the
layout is decided from facts the model states (timm's ``num_prefix_tokens``, ``patch_embed.grid_size`` /
``dynamic_img_size``, ``output_fmt``; channels-last operators) and anything else is refused, never guessed
from the shape alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: modules that act on the last dimension: a 4-D output of one of these is channels-last
_CHANNELS_LAST_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LayerNorm)
#: modules whose 4-D output is channels-first whatever the model declares
_CHANNELS_FIRST_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d)


class LayoutError(ValueError):
    """The CAM layer's output cannot be read as a spatial map (a user choice to change: says what to pass)."""


@dataclass(frozen=True)
class Layout:
    """``kind``: ``nchw`` (as is), ``nhwc`` (permuted) or ``tokens`` (``prefix`` tokens dropped, the rest
    folded row-major onto ``grid`` as timm's patch embedding flattens it)."""

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (an activation or its gradient, same layout) as ``[B, C, h, w]``."""
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        assert self.grid is not None
        h, w = self.grid
        return t[:, self.prefix :, :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    def to_params(self) -> dict[str, Any]:
        """JSON-ready record for an explanation's ``params`` (what was done to the layer's output)."""
        d: dict[str, Any] = {"layout": self.kind}
        if self.kind == "tokens":
            assert self.grid is not None
            d.update(prefix_tokens=self.prefix, grid=[int(self.grid[0]), int(self.grid[1])])
        return d


def _declared_fmt(m: nn.Module) -> str | None:
    fmt = getattr(m, "output_fmt", None)
    if fmt is None:
        return None
    fmt = str(getattr(fmt, "value", fmt)).upper()
    return fmt if fmt in ("NCHW", "NHWC") else None


def _is_nhwc(model: nn.Module, path: str, layer: nn.Module) -> bool:
    """A 4-D output is channels-first when the module's type says so (convolutions, ``*2d`` modules),
    channels-last when it acts on the last dimension (``Linear``/``LayerNorm``) or, for other modules, when the nearest module on the way to it that declares an
    ``output_fmt`` (timm Swin, its patch embedding) declares NHWC; convolutions are channels-first."""
    if isinstance(layer, _CHANNELS_FIRST_TYPES) or type(layer).__name__.endswith("2d"):
        return False  # torch's and timm's naming: Conv2d, BatchNorm2d, LayerNorm2d (a LayerNorm subclass)
    if isinstance(layer, _CHANNELS_LAST_TYPES) or isinstance(getattr(layer, "fc2", None), nn.Linear):
        return True  # a Linear/LayerNorm, or an MLP ending in one (timm's Mlp in ConvNeXt blocks)
    parts = path.split(".") if path else []
    for i in range(len(parts), -1, -1):  # the layer itself, then its ancestors, then the model
        try:
            fmt = _declared_fmt(model.get_submodule(".".join(parts[:i])))
        except AttributeError:
            continue
        if fmt is not None:
            return fmt == "NHWC"
    return False


def patch_grid(model: nn.Module, image_hw: tuple[int, int]) -> tuple[int, int] | None:
    """The patch grid of ``model`` for an input of ``image_hw``: timm's patch embedding, dynamic or fixed."""
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        return None
    dynamic = getattr(model, "dynamic_img_size", False) or getattr(pe, "dynamic_img_pad", False)
    if dynamic and hasattr(pe, "dynamic_feat_size"):
        h, w = pe.dynamic_feat_size(tuple(image_hw))
        return int(h), int(w)
    grid = getattr(pe, "grid_size", None)
    if grid is None:
        return None
    return int(grid[0]), int(grid[1])


def ancestors(model: nn.Module, path: str) -> dict[str, nn.Module]:
    """The modules that contain ``path`` (not the model itself), deepest first."""
    parts = path.split(".")
    names = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    return {n: model.get_submodule(n) for n in names}


def enclosing_map(
    model: nn.Module, path: str, shapes: dict[str, tuple[int, ...]], batch: int
) -> tuple[bool, tuple[int, ...]] | None:
    """``(channels_last, shape)`` of the nearest ancestor of ``path`` whose recorded output is a 4-D map of
    the batch (``shapes`` from :func:`birdlens.explain.hooks.record_shapes`), or None."""
    for name, module in ancestors(model, path).items():
        s = shapes.get(name, ())
        if len(s) == 4 and s[0] == batch:
            return _is_nhwc(model, name, module), s
    return None


def layout_of(
    model: nn.Module,
    path: str,
    layer: nn.Module,
    shape: tuple[int, ...],
    image_shape: tuple[int, ...],
    enclosing: tuple[bool, tuple[int, ...]] | None = None,
) -> Layout:
    """The :class:`Layout` of ``layer``'s output ``shape`` for a batch of ``image_shape`` ``[B, 3, H, W]``,
    or :class:`LayoutError`. ``enclosing``: ``(nhwc, shape)`` of the nearest 4-D ancestor output (Swin's
    block around a ``[B, L, C]`` norm gives the stage grid)."""
    batch = image_shape[0]
    if len(shape) >= 1 and shape[0] != batch:
        raise _refuse(path, shape, f"its first dimension is not the batch ({batch})")
    if len(shape) == 4:
        if _is_nhwc(model, path, layer):
            return Layout("nhwc")
        return Layout("nchw")
    if len(shape) == 3:
        n = shape[1]
        if enclosing is not None:
            nhwc, s = enclosing
            h, w = (s[1], s[2]) if nhwc else (s[2], s[3])
            if h * w == n:
                return Layout("tokens", 0, (h, w))
        grid = patch_grid(model, (image_shape[2], image_shape[3]))
        prefix = getattr(model, "num_prefix_tokens", None)
        if grid is None or not isinstance(prefix, int):
            raise _refuse(path, shape, "the model states no patch grid and prefix-token count to fold it")
        if n - prefix != grid[0] * grid[1]:
            raise _refuse(
                path,
                shape,
                f"{n} tokens are not {prefix} prefix tokens + a {grid[0]}x{grid[1]} patch grid",
            )
        return Layout("tokens", prefix, grid)
    raise _refuse(path, shape, "it is neither a feature map nor a token sequence")


def _refuse(path: str, shape: tuple[int, ...], why: str) -> LayoutError:
    dims = "x".join(str(s) for s in shape)
    return LayoutError(
        f"cannot use layer {path!r} for a CAM: its output has shape [{dims}] and {why}. CAMs need "
        "[B, C, h, w], channels-last [B, H, W, C] (Swin) or [B, N, C] tokens on the patch grid; "
        "pass another layer (--layer, layer=)."
    )
