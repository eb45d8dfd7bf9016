"""Classic augmentation presets on torchvision.transforms.v2, normalised for a model's data config.

Every preset takes uint8 images (PIL, ``tv_tensors.Image``, CHW tensors) and returns normalised float
tensors at the model's input size. The geometric step matches the evaluation geometry (resize the shorter
side to ``size / crop_pct``, centre crop) so that a preset differs from ``none`` only by its augmentation:

* ``none``: evaluation transform only;
* ``light``: random resized crop (70-100 % of the area) + horizontal flip;
* ``keras-paper``: the study's Keras ``ImageDataGenerator`` (see :mod:`birdlens.augment.keras_affine`);
* ``randaugment`` / ``trivialaugment``: random resized crop (50-100 %) + flip + torchvision's
  RandAugment(2 ops, magnitude 9) / TrivialAugmentWide.

Batch-level MixUp/CutMix come from :func:`mixup_cutmix`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from birdlens.augment.keras_affine import KerasRandomAffine
from birdlens.models.data_config import DataConfig, denormalize, eval_geometry, normalize_only

# torchvision's tensor affine kernels (used by the auto-augment ops) support nearest and bilinear only.
_AUTO_INTERP = v2.InterpolationMode.BILINEAR

PRESETS: tuple[str, ...] = ("none", "light", "keras-paper", "randaugment", "trivialaugment")


def _normalise_name(preset: str) -> str:
    key = str(preset).strip().lower().replace("_", "-")
    aliases = {
        "keras": "keras-paper",
        "paper": "keras-paper",
        "trivial": "trivialaugment",
        "rand": "randaugment",
    }
    key = aliases.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}: use one of {', '.join(PRESETS)}")
    return key


def keras_paper_affine() -> KerasRandomAffine:
    """The study's ``ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2, zoom_range=0.2,
    horizontal_flip=True)``."""
    return KerasRandomAffine(
        rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, zoom_range=0.2, horizontal_flip=True
    )


def augmentation_ops(preset: str, data_config: DataConfig, image_size: int | None = None) -> v2.Compose:
    """The uint8 -> uint8 part of a preset (geometry + augmentation, no normalisation): for previews."""
    name = _normalise_name(preset)
    cfg = data_config.with_size(image_size)
    size, interp = cfg.input_size, cfg.interpolation_mode
    ops: list[Any] = [v2.ToImage()]
    if name in ("none", "keras-paper"):
        ops.append(eval_geometry(cfg))
        if name == "keras-paper":
            ops.append(keras_paper_affine())
    else:
        scale = (0.7, 1.0) if name == "light" else (0.5, 1.0)
        ops += [
            v2.RandomResizedCrop(size, scale=scale, interpolation=interp, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if name == "randaugment":
            ops.append(v2.RandAugment(num_ops=2, magnitude=9, interpolation=_AUTO_INTERP))
        elif name == "trivialaugment":
            ops.append(v2.TrivialAugmentWide(interpolation=_AUTO_INTERP))
    return v2.Compose(ops)


def make_train_transform(preset: str, data_config: DataConfig, image_size: int | None = None) -> v2.Compose:
    """Training transform: ``preset`` augmentation then normalisation with the model's mean/std."""
    cfg = data_config.with_size(image_size)
    return v2.Compose([augmentation_ops(preset, cfg), normalize_only(cfg)])


def mixup_cutmix(num_classes: int, mixup: float = 0.0, cutmix: float = 0.0) -> v2.Transform | None:
    """Batch transform ``(images, int labels) -> (images, soft labels)``; ``mixup``/``cutmix`` are the Beta
    alphas (0 = off). Both on: one of them per batch. None when both are off."""
    if num_classes < 2:
        raise ValueError(f"mixup/cutmix need num_classes >= 2, got {num_classes}")
    if mixup < 0 or cutmix < 0:
        raise ValueError("mixup and cutmix alphas must be >= 0")
    ops: list[v2.Transform] = []
    if mixup > 0:
        ops.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        ops.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def augment_examples(
    image: Any,
    preset: str,
    n: int = 8,
    data_config: DataConfig | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` augmented views of one image as uint8 ``[n, 3, S, S]`` (for reports and sanity checks).

    Goes through the full training transform and back through :func:`denormalize`, so what is shown is
    what the model sees. Seeded and side-effect free on torch's global RNG.
    """
    cfg = data_config or DataConfig(input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    tf = make_train_transform(preset, cfg, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        views = [tf(image) for _ in range(n)]
    return denormalize(torch.stack(views), cfg.with_size(image_size))


def augment_examples_figure(
    images: list[Any],
    presets: list[str],
    out: str | os.PathLike[str],
    seed: int = 0,
    n: int = 6,
    data_config: DataConfig | None = None,
    image_size: int | None = 160,
) -> Path:
    """A PNG grid for reports: one row per (image, preset), the un-augmented view first, then ``n`` views.

    ``images`` are paths or images (PIL / uint8 tensors); the file is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from birdlens.data.images import load_rgb
    from birdlens.utils.atomic import atomic_path
    from birdlens.utils.plaintext import plain

    if not images or not presets:
        raise ValueError("augment_examples_figure needs at least one image and one preset")
    names = [_normalise_name(p) for p in presets]
    cfg = (data_config or DataConfig(input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)).with_size(image_size)
    loaded = [load_rgb(im) if isinstance(im, (str, os.PathLike)) else im for im in images]
    rows = [(i, name) for i in range(len(loaded)) for name in names]
    fig, axes = plt.subplots(len(rows), n + 1, figsize=(1.6 * (n + 1), 1.7 * len(rows)), squeeze=False)
    for r, (i, name) in enumerate(rows):
        base = eval_geometry(cfg)(loaded[i])
        views = augment_examples(loaded[i], name, n=n, data_config=cfg, seed=seed + 1000 * r)
        for c, view in enumerate([base, *views]):
            ax = axes[r][c]
            ax.imshow(view.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(plain(name), fontsize=9)
            if r == 0:
                ax.set_title("original" if c == 0 else f"view {c}", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out
