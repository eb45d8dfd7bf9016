"""The study's baseline CNN: 3 x (Conv2d -> ReLU -> MaxPool -> Dropout 0.2), then a dense head.

The paper built it in Keras with ``Flatten -> Dense``, which ties the head to one input size. Here an
adaptive average pool to a fixed ``pool_size`` grid sits before the flatten: at the paper's sizes it keeps
the spatial layout the dense layer sees (a 4x4 grid of 128 channels), and any input size works.

The class speaks timm's model interface (``forward_features``, ``forward_head(pre_logits=...)``,
``get_classifier``, ``reset_classifier``, ``num_features``, ``group_matcher``), so training, probing and
explainers treat it exactly like a timm backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Documented default input: the study trained the CNN from scratch at small sizes; 128 px is CPU-friendly.
SIMPLE_CNN_CFG: dict[str, Any] = {
    "input_size": (3, 128, 128),
    "interpolation": "bilinear",
    "crop_pct": 1.0,  # train from scratch on the whole frame: no centre crop
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "classifier": "head.fc",
    "first_conv": "features.0.conv",
    "num_classes": 1000,
}


class ConvBlock(nn.Sequential):
    """Conv2d(3x3, same) -> ReLU -> MaxPool(2) -> Dropout."""

    def __init__(self, in_chs: int, out_chs: int, drop_rate: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1)
        self.act = nn.ReLU()  # not inplace: CAM hooks read this output
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(drop_rate)


class Head(nn.Module):
    """Adaptive pool to a small grid -> flatten -> Dense(hidden) + ReLU + Dropout -> Linear(num_classes)."""

    def __init__(self, in_chs: int, hidden: int, num_classes: int, pool_size: int, drop_rate: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(in_chs * pool_size * pool_size, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.flatten(self.pool(x)))))
        return x if pre_logits else self.fc(x)


class SimpleCNN(nn.Module):
    """Paper baseline; ``num_classes=0`` returns the ``hidden``-dim features."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        channels: tuple[int, ...] = (32, 64, 128),
        hidden: int = 128,
        pool_size: int = 4,
        drop_rate: float = 0.2,
        head_drop_rate: float = 0.5,
        **_: Any,
    ) -> None:
        super().__init__()
        blocks, prev = [], in_chans
        for ch in channels:
            blocks.append(ConvBlock(prev, ch, drop_rate))
            prev = ch
        self.features = nn.Sequential(*blocks)
        self.num_classes = num_classes
        self.num_features = hidden  # what forward_head(pre_logits=True) returns, as in timm
        self.head_hidden_size = hidden
        self._head_args = (prev, hidden, pool_size, head_drop_rate)
        self.head = Head(prev, hidden, num_classes, pool_size, head_drop_rate)
        self.pretrained_cfg = dict(SIMPLE_CNN_CFG, num_classes=num_classes)
        self.default_cfg = self.pretrained_cfg
        self.feature_info = [
            {"num_chs": ch, "reduction": 2 ** (i + 1), "module": f"features.{i}"}
            for i, ch in enumerate(channels)
        ]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # Keras' glorot_uniform default (He init: dead ReLUs here)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New randomly initialised output layer (``0`` = features only), like timm."""
        self.num_classes = num_classes
        fc: nn.Module = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.head.fc = fc.to(self.head.fc1.weight.device)
        self.pretrained_cfg["num_classes"] = num_classes

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm-style layer-wise LR: each conv block is a stage."""
        return {
            "stem": r"^features\.0\.",
            "blocks": [(r"^features\.(\d+)\.", None), (r"^head\.fc1\.", (99999,))],
        }
