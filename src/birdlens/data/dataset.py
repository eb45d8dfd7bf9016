"""A torch ``Dataset`` over a :class:`Manifest`: what training, explanation and the GAN read.

Items are ``(tv_tensors.Image uint8 [3, H, W], int target)`` so torchvision v2 transforms (which dispatch on
``tv_tensors``) work unchanged; normalisation to float belongs to the model's data config, not here.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from birdlens.data.cache import ImageCache, as_cache
from birdlens.data.images import DEFAULT_LIMITS, ImageLimits, load_resized
from birdlens.data.manifest import Manifest, Record


class ImageDataset(Dataset[tuple[Any, int]]):
    """Images of a manifest with integer targets.

    Args:
        manifest: the records to serve (usually one split: ``manifest.split("train")``).
        transform: applied to the ``tv_tensors.Image`` (e.g. a torchvision v2 pipeline).
        class_to_idx: label -> target. Pass the *full* manifest's mapping when serving one split so that
            targets agree across splits even if a split lacks a class; default: ``manifest.class_to_idx``.
        cache: an :class:`ImageCache` or a folder; decoded arrays are memory-mapped from it.
        size: if given, images are resized (short side) and centre-cropped to ``size`` before ``transform``.
        limits: image validity limits (see :class:`ImageLimits`); a bad file raises ``BadImage``.
    """

    def __init__(
        self,
        manifest: Manifest,
        transform: Callable[[Any], Any] | None = None,
        class_to_idx: Mapping[str, int] | None = None,
        cache: ImageCache | str | os.PathLike[str] | None = None,
        size: int | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        self.manifest = manifest
        self.records: list[Record] = list(manifest.records)
        self.class_to_idx: dict[str, int] = dict(
            class_to_idx if class_to_idx is not None else manifest.class_to_idx
        )
        missing = sorted({r.label for r in self.records} - set(self.class_to_idx))
        if missing:
            raise ValueError(
                f"class_to_idx lacks {len(missing)} label(s) of the manifest, e.g. {missing[:3]}; "
                "pass the mapping of the full manifest"
            )
        self.classes: list[str] = [c for c, _ in sorted(self.class_to_idx.items(), key=lambda kv: kv[1])]
        self.targets: list[int] = [self.class_to_idx[r.label] for r in self.records]
        self.transform = transform
        self.cache = as_cache(cache)
        self.size = size
        self.limits = limits

    def __len__(self) -> int:
        return len(self.records)

    def load_array(self, index: int) -> np.ndarray:
        """HWC uint8 RGB of one item before ``transform`` (a read-only memory map when cached)."""
        rec = self.records[index]
        if self.cache is not None:
            return self.cache.load(rec.path, self.size, self.limits)
        return np.asarray(load_resized(rec.path, self.size, self.limits), dtype=np.uint8)

    def load_image(self, index: int) -> tv_tensors.Image:
        """The uint8 ``[3, H, W]`` image before ``transform``.

        Its memory is channels-last (a permuted view of an HWC copy): no extra copy, v2 transforms and
        ``default_collate`` accept it, and the models run faster channels-last on a CPU (measured:
        docs/benchmarks.md#data). Call ``.contiguous()`` if you need ``.view`` on it.
        """
        arr = np.array(self.load_array(index), dtype=np.uint8, copy=True)  # writable copy: torch needs one
        return torch.from_numpy(arr).permute(2, 0, 1).as_subclass(tv_tensors.Image)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img: Any = self.load_image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def load_mask(self, index: int) -> np.ndarray | None:
        """The record's mask (e.g. synthetic part labels) as an HxW array, or None when it has none.

        Masks are label images: resized with nearest neighbour to match ``size`` so ids never blend.
        """
        rec = self.records[index]
        if rec.mask is None:
            return None
        from PIL import Image

        from birdlens.data.images import center_crop_box, read_image_bytes

        with Image.open(io.BytesIO(read_image_bytes(rec.mask))) as m:  # regular files only, bounded read
            m.load()
            if self.size is not None:
                m = m.resize(
                    (self.size, self.size),
                    Image.Resampling.NEAREST,
                    box=center_crop_box(m.width, m.height, self.size),
                )
            return np.asarray(m)
