"""Frozen-backbone features, cached on disk: why a probe on CPU takes a minute instead of hours.

One ``.npy`` (float32 vector) per image *view*, keyed by SHA-1 of: backbone fingerprint (model + weights),
image content hash, transform description (which includes the image size) and view id (``clean`` or
``aug<seed>.<i>``). Changing any of them makes a new key; nothing is ever stale. Layout::

    CACHE/<key[:2]>/<key>.npy

Augmented views are drawn with a per-(seed, image, view) RNG, so the same view is the same pixels in every run
and its features can be cached like the clean ones. Extraction uses ``torch.inference_mode``, channels_last and
batches of 16, the fastest tried (docs/benchmarks.md#training).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from birdlens.train.parts import pooled_features
from birdlens.utils.atomic import atomic_path

FORMAT = "v1"


def view_seed(seed: int, image_key: str, view: int) -> int:
    """A 63-bit seed for one augmented view of one image (stable across runs and processes)."""
    h = hashlib.sha1(f"{seed}:{image_key}:{view}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def seeded_call(fn: Callable[[Any], Any], x: Any, seed: int) -> Any:
    """Apply a random transform with its own RNG state, leaving the global RNGs untouched."""
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            return fn(x)
    finally:
        random.setstate(state)


@dataclass(frozen=True)
class ViewSpec:
    """What to extract: a transform, its description (part of the key) and the view ids."""

    transform: Callable[[Any], Any]
    description: str
    views: tuple[str, ...]  # "clean" or "aug<seed>.<i>"


class FeatureCache:
    """Content-keyed feature vectors on disk (see module doc)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(backbone: str, image_key: str, transform: str, view: str) -> str:
        return hashlib.sha1(f"{FORMAT}|{backbone}|{image_key}|{transform}|{view}".encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        try:
            arr = np.load(self.path(key), allow_pickle=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, EOFError):
            return None  # a damaged entry is a miss and gets rewritten
        return arr if arr.ndim == 1 and arr.dtype == np.float32 else None

    def put(self, key: str, vec: np.ndarray) -> None:
        with atomic_path(self.path(key), suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vec, dtype=np.float32), allow_pickle=False)


def describe_transform(transform: Any, image_size: int) -> str:
    """A stable text for a transform: torchvision's repr lists every parameter."""
    return f"size={image_size}|{transform!r}"


def extract_features(
    model: nn.Module,
    load_image: Callable[[int], Any],
    image_keys: Sequence[str],
    spec: ViewSpec,
    cache: FeatureCache,
    backbone_key: str,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features ``[len(views), N, D]`` for every image and view, computing only the cache misses.

    ``load_image(i)`` returns image ``i`` before the transform; ``image_keys[i]`` its content hash.
    """
    n = len(image_keys)
    out: list[list[np.ndarray | None]] = [[None] * n for _ in spec.views]
    todo: list[tuple[int, int, str]] = []  # (view index, image index, cache key)
    for v, view in enumerate(spec.views):
        for i, ik in enumerate(image_keys):
            k = cache.key(backbone_key, ik, spec.description, view)
            got = cache.get(k)
            if got is None:
                todo.append((v, i, k))
            else:
                out[v][i] = got
    cache.hits += n * len(spec.views) - len(todo)
    cache.misses += len(todo)
    if progress is not None and n * len(spec.views) - len(todo):
        progress(n * len(spec.views) - len(todo))
    if todo:
        model.eval()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        # group by image so each image is decoded once for all its missing views
        todo.sort(key=lambda t: (t[1], t[0]))
        dev = torch.device(device)
        amp = (
            torch.autocast(device_type=dev.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else nullcontext()
        )
        last_i, img = -1, None
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            xs = []
            for v, i, _ in chunk:
                if i != last_i:
                    img, last_i = load_image(i), i
                view = spec.views[v]
                if view == "clean":
                    xs.append(spec.transform(img))
                else:
                    vseed, vi = view[3:].split(".")
                    xs.append(seeded_call(spec.transform, img, view_seed(int(vseed), image_keys[i], int(vi))))
            x = torch.stack([torch.as_tensor(t) for t in xs]).to(dev)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), amp:
                f = pooled_features(model, x).float().cpu().numpy()
            for (v, i, k), vec in zip(chunk, f, strict=True):
                cache.put(k, vec)
                out[v][i] = vec
            if progress is not None:
                progress(len(chunk))
    return np.stack([np.stack(row) for row in out])  # type: ignore[arg-type]
