"""How a model wants its pixels: size, interpolation, crop and normalisation, plus the matching transforms.

The numbers come from the pretrained weights (timm's ``pretrained_cfg``), never from a guess: a network fed
the wrong mean/std or crop silently loses accuracy (the bundled EfficientNet-Lite0 with ImageNet mean/std
instead of its own 0.5/0.5; measured: docs/benchmarks.md#models-and-weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import v2

_INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class DataConfig:
    """Input size (square, pixels), interpolation, ``crop_pct`` (eval centre-crop fraction) and mean/std."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if int(self.input_size) < 8:
            raise ValueError(f"input_size must be >= 8 pixels, got {self.input_size}")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std need 3 values each and std > 0, got {self.mean} / {self.std}")
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "crop_pct", float(self.crop_pct))

    @property
    def interpolation_mode(self) -> v2.InterpolationMode:
        return _INTERPOLATIONS[self.interpolation]

    def with_size(self, image_size: int | None) -> DataConfig:
        """The same config at another input size (``None`` keeps it)."""
        if image_size is None or int(image_size) == self.input_size:
            return self
        return DataConfig(int(image_size), self.mean, self.std, self.interpolation, self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for checkpoint metadata)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataConfig:
        """Read :meth:`to_dict` output, or a timm data/pretrained config (``input_size`` may be ``(3, H, W)``)."""
        size = d.get("input_size", 224)
        if isinstance(size, (list, tuple)):
            size = size[-1]
        interp = str(d.get("interpolation", "bicubic"))
        return cls(
            input_size=int(size),
            mean=tuple(d.get("mean", cls.mean)),  # type: ignore[arg-type]
            std=tuple(d.get("std", cls.std)),  # type: ignore[arg-type]
            interpolation=interp if interp in _INTERPOLATIONS else "bicubic",
            crop_pct=float(d.get("crop_pct") or 1.0),
        )

    def to_timm(self) -> dict[str, Any]:
        """timm's data-config dict, for ``timm.data.create_transform`` users."""
        return {
            "input_size": (3, self.input_size, self.input_size),
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
        }


def resize_size(data_config: DataConfig, image_size: int | None = None) -> int:
    """Shorter-side length before the centre crop, exactly as timm computes it."""
    size = data_config.with_size(image_size).input_size
    return math.floor(size / data_config.crop_pct)


def normalize_only(data_config: DataConfig) -> v2.Compose:
    """uint8 (or float in [0, 1]) image already at the input size -> normalised float32 tensor."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(data_config.mean), std=list(data_config.std)),
        ]
    )


def eval_transform(data_config: DataConfig, image_size: int | None = None) -> v2.Compose:
    """Evaluation pipeline, like timm's: resize the shorter side to ``size / crop_pct``, centre-crop, normalise.

    Accepts PIL images, ``tv_tensors.Image``, CHW (or BCHW) uint8 tensors and HWC uint8 numpy arrays.
    """
    cfg = data_config.with_size(image_size)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize_size(cfg), interpolation=cfg.interpolation_mode, antialias=True),
            v2.CenterCrop(cfg.input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
        ]
    )


def eval_geometry(data_config: DataConfig, image_size: int | None = None) -> v2.Compose:
    """Only the resize + centre crop of :func:`eval_transform` (uint8 in, uint8 out), e.g. for overlays."""
    cfg = data_config.with_size(image_size)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize_size(cfg), interpolation=cfg.interpolation_mode, antialias=True),
            v2.CenterCrop(cfg.input_size),
        ]
    )


def denormalize(tensor: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
    """Normalised float ``[C, H, W]`` or ``[B, C, H, W]`` -> uint8 in the same layout (for overlays/figures)."""
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(f"expected a [3, H, W] or [B, 3, H, W] tensor, got shape {tuple(tensor.shape)}")
    mean = torch.tensor(data_config.mean, dtype=torch.float32, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(data_config.std, dtype=torch.float32, device=tensor.device).view(3, 1, 1)
    x = tensor.detach().float() * std + mean
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
