"""Training images for a GAN: the whole (small) set decoded once into one uint8 tensor in memory.

Why in memory: a GAN step needs a random batch thousands of times; bird sets here are tens of images per
class (840 images at 64 px are 10 MB), so decoding once beats a DataLoader and keeps batch sampling under
the trainer's own seeded generator (exact resume).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from birdlens.data.images import load_resized
from birdlens.data.layouts import load_manifest
from birdlens.data.manifest import Manifest, normalise_label


@dataclass
class ImageSet:
    """``images``: uint8 [N, 3, S, S]; ``labels``: int64 [N] indexing ``classes``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def per_class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts, strict=True))


def resolve_manifest(data: str | os.PathLike[str] | Manifest) -> Manifest:
    """A Manifest from a manifest, a ``manifest.csv``, or any dataset folder (``birdlens.data.layouts``)."""
    if isinstance(data, Manifest):
        return data
    return load_manifest(Path(data))


def select(manifest: Manifest, split: str | None = "train", classes: Sequence[str] | None = None) -> Manifest:
    """Records of one split (all when the data have no splits) and, optionally, some classes."""
    m = manifest
    if split is not None and any(r.split is not None for r in m.records):
        m = m.split(split)
    if classes:
        m = m.filter(labels=classes)
        missing = {normalise_label(c) for c in classes} - set(m.classes)
        if missing:
            raise ValueError(f"classes not found in the data: {sorted(missing)}")
    if len(m) == 0:
        raise ValueError(f"no images in split {split!r}")
    return m


def load_images(manifest: Manifest, size: int, classes: Sequence[str] | None = None) -> ImageSet:
    """Decode every record at ``size`` px (resize short side + centre crop). ``classes`` fixes the label order."""
    names = list(classes) if classes is not None else manifest.classes
    idx = {c: i for i, c in enumerate(names)}
    arrs = np.stack([np.asarray(load_resized(r.path, size), dtype=np.uint8) for r in manifest.records])
    images = torch.from_numpy(arrs).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([idx[r.label] for r in manifest.records], dtype=torch.long)
    return ImageSet(images, labels, names)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the GAN's (and EfficientNet-Lite0's mean=std=0.5) range."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)
