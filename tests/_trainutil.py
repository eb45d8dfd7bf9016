"""A tiny labelled image folder for the training/evaluation tests (generated, a few kB, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 40, 40), (40, 160, 60), (50, 70, 210), (220, 200, 40), (150, 60, 170)]


def make_image_folder(
    root: Path,
    n_classes: int = 3,
    train: int = 8,
    valid: int = 2,
    test: int = 2,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """``root/{train,valid,test}/CLASS_k/*.png``: each class a colour with a bright square at its own place,
    plus noise, so even a tiny network separates them after a few steps."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("valid", valid), ("test", test)):
        for c in range(n_classes):
            d = root / split / f"CLASS {chr(65 + c)}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(
                    np.array(COLOURS[c % len(COLOURS)], dtype=np.float64)[None, None, :]
                    + rng.normal(0, 35, size=(size, size, 3)),
                    0,
                    255,
                )
                q = size // 4
                y0, x0 = (c * q) % (size - q), (c * 2 * q) % (size - q)
                img[y0 : y0 + q, x0 : x0 + q] = 255
                Image.fromarray(img.astype(np.uint8)).save(d / f"{split}_{c}_{i}.png")
    return root
