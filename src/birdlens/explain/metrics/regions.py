"""Object regions for localisation: bounding boxes (CUB ``bounding_boxes.txt`` or a ``path,x,y,w,h`` CSV) and
segmentation/part masks, brought to the model's input geometry.

A box is given in pixels of the *original* image, but the map lives in the model's input frame (after resize
and centre crop). Rather than re-deriving every transform's geometry, the region is drawn as a white-on-black
image of the original size and pushed through the **same** resize + crop as the photo
(``birdlens.models.eval_geometry``); thresholding at one half gives the region in input pixels, exact for any
deterministic resize/crop.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

Box = tuple[float, float, float, float]


def read_boxes(path: str | Path) -> dict[str, Box]:
    """Boxes keyed by image path as written in the file (POSIX separators).

    * CSV with a header containing ``path,x,y,w,h`` (extra columns ignored);
    * CUB: ``bounding_boxes.txt`` lines ``<id> <x> <y> <w> <h>`` with ``images.txt`` (``<id> <relpath>``) in
      the same folder (keys are then the relative paths, otherwise the ids).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else ""
    if "," in first:
        out: dict[str, Box] = {}
        for row in csv.DictReader(text.splitlines()):
            out[row["path"].replace("\\", "/")] = (
                float(row["x"]),
                float(row["y"]),
                float(row["w"]),
                float(row["h"]),
            )
        return out
    ids: dict[str, str] = {}
    images_txt = path.parent / "images.txt"
    if images_txt.is_file():
        for line in images_txt.read_text(encoding="utf-8").split("\n"):
            parts = line.split()
            if len(parts) >= 2:
                ids[parts[0]] = parts[1]
    out = {}
    for line in text.split("\n"):
        parts = line.split()
        if len(parts) >= 5:
            out[ids.get(parts[0], parts[0])] = (
                float(parts[1]),
                float(parts[2]),
                float(parts[3]),
                float(parts[4]),
            )
    return out


def match_box(boxes: Mapping[str, Box], image_path: str | Path, root: str | Path | None = None) -> Box | None:
    """The box of one image: by path relative to ``root``, then by the longest matching path suffix."""
    p = Path(image_path)
    if root is not None:
        try:
            rel = p.resolve().relative_to(Path(root).resolve()).as_posix()
            if rel in boxes:
                return boxes[rel]
        except ValueError:
            pass
    parts = p.as_posix().split("/")
    for k in range(len(parts)):
        key = "/".join(parts[k:])
        if key in boxes:
            return boxes[key]
    return None


def box_image(box: Box, size: tuple[int, int]) -> np.ndarray:
    """``H x W`` uint8 (255 inside) for a box ``(x, y, w, h)`` on an image of ``size = (W, H)``."""
    w_img, h_img = size
    x, y, w, h = box
    m = np.zeros((h_img, w_img), dtype=np.uint8)
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(w_img, round(x + w)), min(h_img, round(y + h))
    m[y0:y1, x0:x1] = 255
    return m


def to_input_frame(mask: np.ndarray, geometry: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Bool ``[H', W']``: a binary ``H x W`` mask (nonzero = inside) pushed through the image geometry
    (``birdlens.models.eval_geometry``: uint8 ``[C, H, W]`` in, resized + cropped uint8 out)."""
    m = torch.from_numpy(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8))[None]
    return torch.as_tensor(geometry(m))[0] >= 128


def label_mask_to_input_frame(
    labels: np.ndarray, n_labels: int, geometry: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """An integer label mask (0 = background) through the geometry: one soft mask per label, then argmax
    (a nearest-label resize that cannot invent labels between two parts)."""
    labels = np.asarray(labels)
    soft = [
        torch.as_tensor(geometry(torch.from_numpy(np.where(labels == lab, 255, 0).astype(np.uint8))[None]))[0]
        for lab in range(n_labels + 1)
    ]
    return torch.stack(soft).argmax(0).to(torch.uint8)
