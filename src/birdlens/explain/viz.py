"""Pictures of explanations: overlays for one map and the side-by-side panel of the study's Figs. 6-8.

Design choices, for figures a person would put in a paper:
* unsigned maps (CAMs, random) use a perceptual sequential colour map blended in proportion to the map value,
  so low-evidence regions show the photo itself rather than a blue wash;
* signed maps (SHAP, IG, LIME weights) use a diverging map centred on zero (red = evidence for the target,
  blue = against), symmetric limits at a high percentile of |value| so one hot pixel does not wash out the
  rest, over a desaturated photo;
* LIME shows the top superpixels at full colour with their outlines, the rest dimmed;
* the panel labels every row with the predicted class (probability) and the true class, green when they
  agree and red when they do not, and puts a colour bar under every column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from birdlens.utils.atomic import atomic_path
from birdlens.utils.plaintext import plain


def _facts(method: str) -> Any:
    """The method's class (its title, panel order, signedness live there), None for a name not registered."""
    from birdlens.explain.base import UnsupportedMethodError, method_class

    try:
        return method_class(method)
    except UnsupportedMethodError:
        return None


def _panel_key(method: str) -> tuple[int, str]:
    cls = _facts(method)
    return (cls.panel_order if cls is not None else 1000, method)


def method_title(method: str) -> str:
    """The method's display title (its class's ``title``), the name itself for an unknown one."""
    cls = _facts(method)
    return cls.display_title() if cls is not None else method


def is_signed(method: str) -> bool:
    cls = _facts(method)
    return bool(cls is not None and cls.signed)


def _as_uint8_hwc(image: Any) -> np.ndarray:
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    return arr


def _grey(img: np.ndarray, keep: float = 0.35) -> np.ndarray:
    f = img.astype(np.float32) / 255
    lum = (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2])[..., None]
    return keep * f + (1 - keep) * lum


def signed_limit(values: np.ndarray, percentile: float = 99.5) -> float:
    """Symmetric colour limit: the ``percentile`` of |values| (never 0)."""
    lim = float(np.percentile(np.abs(values), percentile))
    return lim if lim > 0 else float(np.abs(values).max() or 1.0)


def heatmap_overlay(image: Any, heat: Any, cmap: str = "inferno", alpha: float = 0.65) -> np.ndarray:
    """Unsigned map over the photo (uint8 ``[H, W, 3]``): colour weighted by the min-max scaled map."""
    import matplotlib

    img = _as_uint8_hwc(image).astype(np.float32) / 255
    h = np.asarray(heat.detach().cpu() if hasattr(heat, "detach") else heat, dtype=np.float32)
    h = (h - h.min()) / (np.ptp(h) or 1.0)
    color = matplotlib.colormaps[cmap](h)[..., :3]
    a = (alpha * h**0.7)[..., None]
    return np.clip(((1 - a) * img + a * color) * 255, 0, 255).round().astype(np.uint8)


def signed_overlay(
    image: Any,
    values: Any,
    cmap: str = "RdBu_r",
    alpha: float = 0.85,
    limit: float | None = None,
    gamma: float = 0.75,
) -> np.ndarray:
    """Signed map over a desaturated photo: diverging colours centred on 0, opacity growing with |value|."""
    import matplotlib

    v = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32)
    lim = limit or signed_limit(v)
    s = np.clip(v / lim, -1, 1)
    color = matplotlib.colormaps[cmap]((s + 1) / 2)[..., :3]
    a = (alpha * np.abs(s) ** gamma)[..., None]
    base = _grey(_as_uint8_hwc(image))
    return np.clip(((1 - a) * base + a * color) * 255, 0, 255).round().astype(np.uint8)


def lime_overlay(
    image: Any,
    segments: Any,
    weights: Any,
    top_k: int = 5,
    positive_only: bool = True,
    color: tuple[float, float, float] = (1.0, 0.85, 0.0),
) -> np.ndarray:
    """The ``top_k`` superpixels with the largest (positive) weights at full colour and outlined; the rest
    dimmed and desaturated."""
    from skimage.segmentation import find_boundaries

    img = _as_uint8_hwc(image).astype(np.float32) / 255
    seg = np.asarray(segments.detach().cpu() if hasattr(segments, "detach") else segments)
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=np.float64)
    order = np.argsort(-w if positive_only else -np.abs(w))
    top = [int(s) for s in order[:top_k] if (w[s] > 0 or not positive_only)]
    keep = np.isin(seg, top)
    out = np.where(keep[..., None], img, 0.45 * _grey((img * 255).astype(np.uint8), keep=0.2))
    edges = find_boundaries(np.where(keep, seg, -1), mode="inner") & keep
    out[edges] = color
    return np.clip(out * 255, 0, 255).round().astype(np.uint8)


def overlay_for(
    method: str,
    image: Any,
    exp_map: Any,
    scores: Mapping[str, Any] | None = None,
    index: int = 0,
    top_k: int = 5,
) -> np.ndarray:
    """The right overlay for a method's map (LIME regions when its weights/segments are in ``scores``)."""
    if method == "lime" and scores is not None and "segments" in scores:
        return lime_overlay(image, scores["segments"][index], scores["weights"][index], top_k=top_k)
    cls = _facts(method)
    if cls is not None and cls.overlay_sigma > 0:
        # speckled per-pixel maps (IG): a small Gaussian makes the evidence visible (the saved .npy stays raw)
        import torch

        from birdlens.explain.imaging import gaussian_blur

        m = torch.as_tensor(np.asarray(exp_map.detach().cpu() if hasattr(exp_map, "detach") else exp_map))
        blurred = gaussian_blur(m.float()[None, None], cls.overlay_sigma)[0, 0]
        return signed_overlay(image, blurred, gamma=1.5) if cls.signed else heatmap_overlay(image, blurred)
    if is_signed(method):
        return signed_overlay(image, exp_map)
    return heatmap_overlay(image, exp_map)


def save_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 ``[H, W, 3]`` array as PNG atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@dataclass
class PanelRow:
    """One image of the panel: the photo, its labels and each method's overlay."""

    image: np.ndarray
    overlays: dict[str, np.ndarray]
    predicted: str
    probability: float | None = None
    true: str | None = None
    signed_limits: dict[str, float] = field(default_factory=dict)
    #: the class this row explains, with its probability, when it is not simply the prediction (``--top-k``)
    explained: str | None = None
    #: the contrast class of a contrastive row ("why explained and not contrast")
    contrast: str | None = None


def panel(
    rows: Sequence[PanelRow],
    path: str | os.PathLike[str],
    methods: Sequence[str] | None = None,
    title: str | None = None,
    cell_inches: float = 2.1,
    dpi: int = 160,
) -> None:
    """Photo | Grad-CAM | LIME | SHAP | IG (the methods present, in panel order), one row per image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if not rows:
        raise ValueError("panel needs at least one row")
    present = {m for r in rows for m in r.overlays}
    cols = list(methods) if methods else sorted(present, key=_panel_key)
    n_rows, n_cols = len(rows), 1 + len(cols)
    label_w, top_h, bottom_h, gap = 1.35, 0.35, 0.45, 0.05
    width = label_w + n_cols * cell_inches * (1 + gap)
    height = top_h + bottom_h + n_rows * cell_inches * (1 + gap)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width, height), squeeze=False, gridspec_kw={"wspace": gap, "hspace": gap}
    )
    plt.rcParams.update({"font.family": "DejaVu Sans"})
    for c, name in enumerate(["Photo", *[method_title(m) for m in cols]]):
        axes[0, c].set_title(plain(name), fontsize=10.5, fontweight="bold", pad=6)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(row.image)
        prob = f" ({row.probability:.0%})" if row.probability is not None else ""
        ok = None if row.true is None else row.true.lower() == row.predicted.lower()
        label = f"pred: {row.predicted.title()}{prob}"
        if row.true is not None:
            label += f"\ntrue: {row.true.title()}"
        if row.explained is not None:
            label += f"\nexplained: {row.explained.title()}"
        if row.contrast is not None:
            label += f"\nand not: {row.contrast.title()}"
        axes[r, 0].set_ylabel(
            plain(label),
            fontsize=7.5,
            rotation=0,
            ha="right",
            va="center",
            labelpad=4,
            color={None: "#222222", True: "#1a7f37", False: "#c62828"}[ok],
        )
        for c, m in enumerate(cols, start=1):
            if m in row.overlays:
                axes[r, c].imshow(row.overlays[m])
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
    # colour bars under each method column
    for c, m in enumerate(cols, start=1):
        ax = axes[-1, c]
        cax = ax.inset_axes((0.1, -0.12, 0.8, 0.05))
        if m == "lime":
            cax.set_axis_off()
            cax.text(
                0.5, 0.0, "top-5 superpixels", ha="center", va="center", fontsize=7, transform=cax.transAxes
            )
            continue
        signed = is_signed(m)
        sm = ScalarMappable(
            Normalize(-1, 1) if signed else Normalize(0, 1), "RdBu_r" if signed else "inferno"
        )
        cb = fig.colorbar(sm, cax=cax, orientation="horizontal")
        cb.set_ticks([-1, 0, 1] if signed else [0, 1])
        cb.set_ticklabels(["against", "0", "for"] if signed else ["low", "high"])
        cb.ax.tick_params(labelsize=6.5, length=2, pad=1)
        cb.outline.set_linewidth(0.4)
    if title:
        fig.suptitle(plain(title), fontsize=11)
    fig.subplots_adjust(left=label_w / width, right=0.995, top=1 - top_h / height, bottom=bottom_h / height)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def image_strips(
    rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, str]]]],
    path: str | os.PathLike[str],
    title: str | None = None,
    cell_inches: float = 1.6,
    dpi: int = 140,
) -> None:
    """Rows of captioned images, each row labelled on its left: the nearest-example strips (the photo, then
    its neighbours from one class with their distances)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not rows or not any(cells for _, cells in rows):
        raise ValueError("image_strips needs at least one image")
    n_cols = max(len(cells) for _, cells in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.4 + n_cols * cell_inches, 0.4 + len(rows) * (cell_inches + 0.3)),
        squeeze=False,
    )  # fmt: skip
    for r, (label, cells) in enumerate(rows):
        axes[r, 0].set_ylabel(plain(label), fontsize=7.5, rotation=0, ha="right", va="center", labelpad=4)
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(cells):
                ax.imshow(_as_uint8_hwc(cells[c][0]))
                ax.set_title(plain(cells[c][1]), fontsize=7)
    if title:
        fig.suptitle(plain(title), fontsize=10)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
