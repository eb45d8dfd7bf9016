"""Augmentation: classic presets (``presets``, Keras' geometry in ``keras_affine``) and GANs (``gan/``).

Names are imported lazily so that ``import birdlens.augment.gan`` does not pull in the model registry.
"""

from __future__ import annotations

from birdlens.utils.lazy import lazy_exports

_EXPORTS = {
    "KerasRandomAffine": "birdlens.augment.keras_affine",
    "apply_keras_affine": "birdlens.augment.keras_affine",
    "keras_affine_matrix": "birdlens.augment.keras_affine",
    "PRESETS": "birdlens.augment.presets",
    "augment_examples": "birdlens.augment.presets",
    "augment_examples_figure": "birdlens.augment.presets",
    "augmentation_ops": "birdlens.augment.presets",
    "keras_paper_affine": "birdlens.augment.presets",
    "make_train_transform": "birdlens.augment.presets",
    "mixup_cutmix": "birdlens.augment.presets",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
