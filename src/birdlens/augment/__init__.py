"""Augmentation: classic presets (``presets``, Keras' geometry in ``keras_affine``) and GANs (``gan/``).

Names are imported lazily so that ``import birdlens.augment.gan`` does not pull in the model registry.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KerasRandomAffine": "keras_affine",
    "apply_keras_affine": "keras_affine",
    "keras_affine_matrix": "keras_affine",
    "PRESETS": "presets",
    "augment_examples": "presets",
    "augment_examples_figure": "presets",
    "augmentation_ops": "presets",
    "keras_paper_affine": "presets",
    "make_train_transform": "presets",
    "mixup_cutmix": "presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"birdlens.augment.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'birdlens.augment' has no attribute {name!r}")
