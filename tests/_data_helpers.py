"""Tiny image fixtures for the data-layer and GAN tests (built in tmp_path or memory, never the shared photos)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from birdlens.augment.gan.data import ImageSet


def noise_image(seed: int, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A random image: each seed gives a different picture (dHash ~32 bits apart), so no accidental near-dups."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BILINEAR)
    return img.convert(mode) if mode != "RGB" else img


def save_image(path: Path, seed: int, size: tuple[int, int] = (64, 48), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = noise_image(seed, size)
    kind = fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    img.save(path, kind, **({"quality": 95} if kind == "JPEG" else {}))
    return path


def make_split_tree(
    root: Path,
    classes: dict[str, dict[str, int]],
    size: tuple[int, int] = (64, 48),
    split_dirs: dict[str, str] | None = None,
    seed0: int = 0,
) -> Path:
    """root/<split dir>/<class>/<i>.jpg; ``classes``: name -> split -> count."""
    split_dirs = split_dirs or {"train": "train", "valid": "valid", "test": "test"}
    seed = seed0
    for cls, per in classes.items():
        for split, n in per.items():
            for i in range(n):
                save_image(root / split_dirs[split] / cls / f"{i:03d}.jpg", seed, size)
                seed += 1
    return root


def make_class_tree(
    root: Path, classes: dict[str, int], size: tuple[int, int] = (64, 48), seed0: int = 1000
) -> Path:
    seed = seed0
    for cls, n in classes.items():
        for i in range(n):
            save_image(root / cls / f"img_{i:03d}.png", seed, size)
            seed += 1
    return root


def forged_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header *declares* ``width`` x ``height``: a decompression bomb that costs nothing to make."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    noise_image(seed, size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_cub(root: Path, n_per_class: int = 6) -> Path:
    """A tiny CUB-200-2011 root: 2 classes, 80x60 images, box (10, 5, 40, 30), the last 2 per class are test."""
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    imgs, labels, split, boxes = [], [], [], []
    i = 0
    for c, name in enumerate(names, start=1):
        for k in range(n_per_class):
            i += 1
            rel = f"{name}/{name.split('.')[1]}_{k:04d}.jpg"
            save_image(root / "images" / rel, 100 + i, (80, 60))
            imgs.append(f"{i} {rel}")
            labels.append(f"{i} {c}")
            split.append(f"{i} {1 if k < n_per_class - 2 else 0}")
            boxes.append(f"{i} 10.0 5.0 40.0 30.0")
    (root / "images.txt").write_text("\n".join(imgs) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("".join(f"{c} {n}\n" for c, n in enumerate(names, start=1)))
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return root


def tiny_image_set(n: int = 24, size: int = 16, classes: int = 3, seed: int = 0) -> ImageSet:
    """Random uint8 images with labels cycling over ``classes``: enough for a GAN step or a resume check."""
    import torch

    from birdlens.augment.gan.data import ImageSet

    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageSet(imgs, torch.arange(n) % classes, [f"C{i}" for i in range(classes)])
