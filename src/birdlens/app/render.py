"""Explanation maps -> PNG data URLs the page shows, and the numbers behind a map.

The overlays themselves come from :func:`birdlens.explain.viz.overlay_for`, so the page draws exactly what
the study's figures draw: a sequential heat map for Grad-CAM, a diverging red (for) / blue (against) map
for SHAP and IG, LIME's top superpixels outlined with the rest dimmed.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from birdlens.app.schemas import MapStats


def png_data_url(rgb: np.ndarray) -> str:
    """uint8 HWC -> ``data:image/png;base64,...`` (what the page puts straight into an ``<img>``)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buf, format="PNG", optimize=False, compress_level=3
    )
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def overlay(
    photo: np.ndarray, m: np.ndarray, method: str, scores: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The study's overlay for ``method`` over the model's view of the photo (uint8 HWC)."""
    from birdlens.explain.viz import overlay_for

    return overlay_for(method, photo, m, scores=scores, index=0)


def map_stats(m: np.ndarray) -> MapStats:
    """A few numbers that say what the raw map looks like (the page shows min/max; scripts get all)."""
    finite = np.nan_to_num(m.astype(np.float64))
    pos = np.clip(finite, 0, None).ravel()
    total = float(pos.sum())
    k = max(1, round(0.1 * pos.size))
    top = float(np.partition(pos, pos.size - k)[-k:].sum()) if pos.size else 0.0
    return MapStats(
        shape=[int(s) for s in m.shape],
        min=float(finite.min()),
        max=float(finite.max()),
        mean=float(finite.mean()),
        std=float(finite.std()),
        positive_fraction=float((finite > 0).mean()),
        top10_share=top / total if total > 0 else 0.0,
    )
