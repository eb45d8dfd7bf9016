"""A contact sheet of a synthetic dataset: one row per class, its name, examples and a coloured part mask.

Made for people (the report, a README, a quick look after generating): it shows that classes differ by
parts one can name, and what the part masks look like.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from birdlens.data.synth.catalog import PARTS
from birdlens.data.synth.dataset import load_parts
from birdlens.utils.atomic import atomic_path

#: one colour per mask value (background first), used to colour part masks for people
PART_PALETTE: tuple[tuple[int, int, int], ...] = (
    (30, 30, 30),
    (230, 159, 0),
    (86, 180, 233),
    (240, 228, 66),
    (213, 94, 0),
    (204, 121, 167),
    (0, 158, 115),
    (0, 114, 178),
    (150, 150, 150),
)


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) picture of a part mask with :data:`PART_PALETTE`."""
    return np.asarray(PART_PALETTE, np.uint8)[np.minimum(mask, len(PART_PALETTE) - 1)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(
    out_png: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    per_class: int = 4,
    thumb: int = 128,
    split: str | None = None,
    show_mask: bool = True,
) -> Path:
    """Write a grid (rows = classes) of the first ``per_class`` images of each class; returns the path."""
    root = Path(dataset_dir)
    info = load_parts(root)
    rows = []
    for cls in info["classes"]:
        name = cls["name"]
        paths: list[Path] = []
        for s in [split] if split else ["train", "valid", "test"]:
            paths += sorted((root / s / name).glob("*.png"))
        rows.append((name, cls.get("key_parts", []), paths[:per_class]))
    label_w = 300
    legend_h = 28
    cols = per_class + (1 if show_mask else 0)
    sheet = Image.new(
        "RGB", (label_w + cols * (thumb + 4) + 4, legend_h + len(rows) * (thumb + 4) + 4), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    font, small = _font(14), _font(12)
    # legend of mask colours
    x = 6
    for i, part in enumerate(("background", *PARTS)):
        draw.rectangle((x, 8, x + 12, 20), fill=PART_PALETTE[i])
        draw.text((x + 16, 7), part, fill=(0, 0, 0), font=small)
        x += 16 + int(draw.textlength(part, font=small)) + 12
    for r, (name, key, paths) in enumerate(rows):
        y = legend_h + 4 + r * (thumb + 4)
        lines = textwrap.wrap(name, width=30)
        for k, line in enumerate(lines):
            draw.text((6, y + 4 + 17 * k), line, fill=(0, 0, 0), font=font)
        if key:
            draw.text(
                (6, y + 8 + 17 * len(lines)), "key parts: " + ", ".join(key), fill=(90, 90, 90), font=small
            )
        for c, p in enumerate(paths):
            with Image.open(p) as im:
                sheet.paste(
                    im.convert("RGB").resize((thumb, thumb), Image.Resampling.BILINEAR),
                    (label_w + c * (thumb + 4), y),
                )
        if show_mask and paths:
            rel = paths[0].relative_to(root)
            mask_path = root / "masks" / rel
            if mask_path.is_file():
                with Image.open(mask_path) as m:
                    coloured = Image.fromarray(colour_mask(np.asarray(m)))
                sheet.paste(
                    coloured.resize((thumb, thumb), Image.Resampling.NEAREST),
                    (label_w + per_class * (thumb + 4), y),
                )
    with atomic_path(out_png, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return Path(out_png)
