"""Superpixels for LIME (SLIC or quickshift via scikit-image), computed once per image and cached.

The cache key is a hash of the image's pixels and the segmentation parameters, so explaining the same image
again (another target, another seed, another budget) never re-segments it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

# lime_image's defaults: SegmentationAlgorithm('quickshift', kernel_size=4, max_dist=200, ratio=0.2)
DEFAULTS: dict[str, dict[str, Any]] = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 10.0, "sigma": 1.0},
}

_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()
_CACHE_SIZE = 256


def segment(image01: np.ndarray, algorithm: str = "quickshift", seed: int = 0, **params: Any) -> np.ndarray:
    """Label map ``[H, W]`` (int64, labels ``0..n-1``) for an RGB float image in [0, 1] (``[H, W, 3]``)."""
    if algorithm not in DEFAULTS:
        raise ValueError(f"unknown segmentation {algorithm!r}; choose one of {sorted(DEFAULTS)}")
    opts = {**DEFAULTS[algorithm], **params}
    h = hashlib.sha1(np.ascontiguousarray(image01, dtype=np.float32).tobytes())
    h.update(repr((algorithm, seed, sorted(opts.items()))).encode())
    key = h.hexdigest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    img = np.clip(np.asarray(image01, dtype=np.float64), 0.0, 1.0)
    if algorithm == "quickshift":
        from skimage.segmentation import quickshift

        # its Cython core takes the seed as a C int: seeds from 2**31 (LIME allows up to 2**32 - 1) are folded
        # into that range, so every allowed seed segments (smaller seeds as before) instead of overflowing
        seg = quickshift(img, rng=seed % 2**31, **opts)
    else:
        from skimage.segmentation import slic

        seg = slic(img, start_label=0, **opts)
    # relabel to 0..n-1 (both algorithms may skip labels)
    _, seg = np.unique(seg, return_inverse=True)
    seg = seg.reshape(img.shape[:2]).astype(np.int64)
    seg.setflags(write=False)
    _CACHE[key] = seg
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return seg


def clear_cache() -> None:
    _CACHE.clear()
