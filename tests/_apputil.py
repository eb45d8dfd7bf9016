"""Shared by the app tests: the tiny 3-colour run ``birdlens serve`` is tested on, and image helpers.

The tiny run is a SimpleCNN probe on a synthetic 3-colour dataset (red / green / blue noise images, 96 px):
it predicts the colour, so answers can be checked, and it is built in a few seconds on one thread.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"RED BIRD": (200, 40, 40), "GREEN BIRD": (40, 180, 60), "BLUE BIRD": (40, 60, 200)}


def noisy(colour: tuple[int, int, int], seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour)[None, None] + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def encode(arr_or_img: np.ndarray | Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    img = Image.fromarray(arr_or_img) if isinstance(arr_or_img, np.ndarray) else arr_or_img
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def big_png(width: int, height: int, colour: tuple[int, ...] = (90,), rows: int = 1) -> bytes:
    """A valid PNG of ``width`` x ``height`` made by streaming zlib, so the raw pixels never exist here.

    ``colour``: 1 value (L), 3 (RGB) or 4 (RGBA). The image is bands of ``rows`` rows alternating between
    ``colour`` and its inverse; flat images compress ~1000:1 (9000 x 9000 grey is ~100 KB).
    """
    ctype = {1: 0, 3: 2, 4: 6}[len(colour)]
    a = b"\0" + bytes(colour) * width
    b = b"\0" + bytes(255 - c for c in colour) * width
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(a if (y // rows) % 2 == 0 else b) for y in range(height)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_tiny_run(root: Path) -> Path:
    """A real run directory (meta.json, best.safetensors, manifest.csv, config.yaml) from ``train``."""
    from birdlens.train.api import train
    from birdlens.train.config import TrainConfig

    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        for k, (label, colour) in enumerate(COLOURS.items()):
            d = root / "data" / split / label
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(noisy(colour, seed=1000 * k + 100 * len(split) + i)).save(d / f"{i}.png")
    return train(
        TrainConfig(
            data=str(root / "data"),
            out=str(root / "run"),
            model="simple_cnn",
            mode="probe",
            pretrained=False,
            image_size=96,
            quiet=True,
            feature_cache=str(root / "cache"),
        ),
        evaluate=False,
    )
