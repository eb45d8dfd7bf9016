"""The one shape every explanation-quality metric has, plus a registry.

Modelled on Quantus (each metric declares a score direction and an evaluation category) and TorchCAM's
``metrics`` (metrics are plain callables over a batch). A metric is an object with

* ``name``: the key in ``results.json`` and in the terminal table;
* ``direction`` (``higher``/``lower``) and the derived ``higher_is_better``, so reports can rank methods
  without knowing the metric;
* ``category``: faithfulness, localisation, ground truth, randomisation, robustness or complexity;
* ``needs``: the context keys it reads (``regions``, ``part_masks``, ``explain_fn``, ...), so the evaluator
  can skip a metric whose ground truth the dataset lacks instead of failing;
* ``selectable``: scored by :func:`evaluate_explanations` only when named in its ``metrics`` setting
  (``birdlens explain-eval --metrics``), because it costs extra model calls or explanations; the others are
  always scored where the data allows;
* ``__call__(model, images, maps, targets, **ctx) -> float64 array [B]``: one value per image, NaN where the
  value is undefined (the aggregator drops NaNs and reports how many values were finite).

Per-image values (not batch means) are the contract because confidence intervals are bootstrapped over images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import torch


class Direction(str, Enum):
    """Which way is better for a metric's value."""

    HIGHER = "higher"
    LOWER = "lower"

    @property
    def arrow(self) -> str:
        return "↑" if self is Direction.HIGHER else "↓"


class Category(str, Enum):
    """What a metric tests (the Quantus taxonomy, reduced to what birdlens measures)."""

    FAITHFULNESS = "faithfulness"
    LOCALISATION = "localisation"
    GROUND_TRUTH = "ground_truth"
    RANDOMISATION = "randomisation"
    ROBUSTNESS = "robustness"
    COMPLEXITY = "complexity"


class Metric(ABC):
    """Base class: subclasses set the class attributes and implement :meth:`compute`."""

    name: ClassVar[str]
    direction: ClassVar[Direction]
    category: ClassVar[Category]
    needs: ClassVar[frozenset[str]] = frozenset()
    needs_source: ClassVar[str] = ""  # where that context comes from, for the error when it is missing
    description: ClassVar[str] = ""
    selectable: ClassVar[bool] = False

    @property
    def higher_is_better(self) -> bool:
        return self.direction is Direction.HIGHER

    def __call__(
        self,
        model: torch.nn.Module | None,
        images: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        **ctx: Any,
    ) -> np.ndarray:
        missing = [k for k in self.needs if ctx.get(k) is None]
        if missing:
            where = f"; it applies only to {self.needs_source}" if self.needs_source else ""
            raise ValueError(f"metric {self.name!r} needs context {sorted(missing)}{where}")
        if maps.ndim != 3:
            raise ValueError(f"maps must be [B, H, W], got {tuple(maps.shape)}")
        if images.shape[0] != maps.shape[0] or targets.shape[0] != maps.shape[0]:
            raise ValueError("images, maps and targets must have the same batch size")
        if maps.shape[0] == 0:  # no images (e.g. a shard's block past a metric's sample): no values
            return np.zeros(0)
        out = np.asarray(self.compute(model, images, maps, targets, **ctx), dtype=np.float64)
        if out.shape != (maps.shape[0],):
            raise AssertionError(f"{self.name} returned shape {out.shape}, expected ({maps.shape[0]},)")
        return out

    @abstractmethod
    def compute(
        self,
        model: torch.nn.Module | None,
        images: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        **ctx: Any,
    ) -> np.ndarray | torch.Tensor:
        """Per-image values, float, shape [B]."""

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction.value,
            "higher_is_better": self.higher_is_better,
            "category": self.category.value,
            "description": self.description,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, direction={self.direction.value})"


_REGISTRY: dict[str, Callable[..., Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a metric available to :func:`get_metric` by its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"metric {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


_BUILTIN_MODULES = (
    "perturbation",
    "localisation",
    "parts",
    "variants",
    "sanity",
    "stability",
    "road",
    "infidelity",
    "robustness",
    "complexity",
    "random_logit",
)


def check_budget(metric: str, option: str, value: Any) -> int:
    """A sample/step count: an integer >= 1, else one error naming ``metric.option`` and what is allowed."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{metric}.{option} must be an integer >= 1, got {value!r}")
    return int(value)


def check_noise(metric: str, option: str, value: Any) -> float:
    """A noise level or radius: a finite number >= 0, else one error naming ``metric.option``."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < 0:
        raise ValueError(f"{metric}.{option} must be a number >= 0, got {value!r}")
    return float(value)


def _load_builtins() -> None:
    """Import the modules that register the built-in metrics (the package exports load lazily)."""
    import importlib

    for mod in _BUILTIN_MODULES:
        importlib.import_module(f"birdlens.explain.metrics.{mod}")


def get_metric(name: str, **params: Any) -> Metric:
    """Instantiate a registered metric, e.g. ``get_metric("insertion", n_steps=56)``."""
    _load_builtins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; available: {', '.join(available_metrics())}") from None
    return factory(**params)


def available_metrics() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def metric_info(name: str) -> dict[str, Any]:
    """Direction/category metadata of a registered metric without building it."""
    _load_builtins()
    cls = _REGISTRY[name]
    return {
        "name": name,
        "direction": cls.direction.value,  # type: ignore[attr-defined]
        "higher_is_better": cls.direction is Direction.HIGHER,  # type: ignore[attr-defined]
        "category": cls.category.value,  # type: ignore[attr-defined]
        "description": cls.description,  # type: ignore[attr-defined]
        "selectable": cls.selectable,  # type: ignore[attr-defined]
    }
