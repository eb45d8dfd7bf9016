"""Grad-CAM on the report's error views: the highest-loss test images and the most-confused class pairs.

The confusion matrix says *which* species the model mixes up; the heatmaps show *where* it looked when it did.
Each row is one misread image: the photo, the map for the class the model predicted, and the map for the true
class (so "it looked at the background" and "it looked at the right bird but read the wrong mark" differ).
On real photos this is the only evidence view there is (a photo cannot be re-rendered without a part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Rows per view: the top-loss images shown, the confused pairs and images per pair.
TOP_LOSS_ROWS = 6
CONFUSED_PAIRS = 3
PER_PAIR = 2


def confused_images(
    trained: Any, records: Sequence[Any], pairs: Sequence[Mapping[str, Any]], per_pair: int = PER_PAIR
) -> list[dict[str, Any]]:
    """For each ``{"true", "pred"}`` pair, the images of ``true`` that the model calls ``pred``, most
    confident first (at most ``per_pair``), as ``{"path", "true", "pred", "prob"}``."""
    from birdlens.data.images import load_rgb
    from birdlens.explain.metrics.perturbation import model_device

    cls = {c: i for i, c in enumerate(trained.classes)}
    tf, model = trained.transform(), trained.model.eval()
    out = []
    for pair in pairs:
        recs = [r for r in records if r.label == pair["true"]]
        if not recs or pair["pred"] not in cls:
            continue
        x = torch.stack([torch.as_tensor(tf(load_rgb(r.path))).float() for r in recs])
        with torch.inference_mode():
            probs = model(x.to(model_device(model))).float().softmax(-1).cpu()
        hits = [i for i in range(len(recs)) if int(probs[i].argmax()) == cls[pair["pred"]]]
        hits.sort(key=lambda i: -float(probs[i, cls[pair["pred"]]]))
        out += [
            {
                "path": str(recs[i].path),
                "true": pair["true"],
                "pred": pair["pred"],
                "prob": float(probs[i].max()),
            }
            for i in hits[:per_pair]
        ]
    return out


def _rows(trained: Any, items: Sequence[Mapping[str, Any]], method: str) -> list[list[np.ndarray]]:
    """``[photo, map(pred), map(true)]`` per item, overlays as uint8 HWC (one batched call per target)."""
    from birdlens.data.images import load_rgb
    from birdlens.explain.base import explainer_for
    from birdlens.explain.viz import heatmap_overlay
    from birdlens.models import eval_geometry

    cls = {c: i for i, c in enumerate(trained.classes)}
    geom, tf = eval_geometry(trained.data_config), trained.transform()
    pils = [load_rgb(it["path"]) for it in items]
    photos = [np.asarray(geom(p)).transpose(1, 2, 0) for p in pils]
    x = torch.stack([torch.as_tensor(tf(p)).float() for p in pils])
    explainer = explainer_for(trained, method)
    maps = {
        key: explainer.explain(x, target=torch.tensor([cls[it[key]] for it in items])).maps.float()
        for key in ("pred", "true")
    }
    return [
        [photos[i], heatmap_overlay(photos[i], maps["pred"][i]), heatmap_overlay(photos[i], maps["true"][i])]
        for i in range(len(items))
    ]


def plot_error_views(
    rows: Sequence[Sequence[np.ndarray]], items: Sequence[Mapping[str, Any]], title: str, path: Path
) -> Path:
    """One row per image: photo (true / predicted / probability), map for the predicted, map for the true."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from birdlens.utils.atomic import atomic_path
    from birdlens.utils.plaintext import plain

    fig, axes = plt.subplots(len(rows), 3, figsize=(9.0, 2.8 * len(rows)), squeeze=False)
    for r, (row, it) in enumerate(zip(rows, items, strict=True)):
        heads = (
            plain(f"true: {it['true'][:28]}\npred: {it['pred'][:28]} ({it['prob']:.2f})"),
            plain(f"Grad-CAM for the prediction\n{it['pred'][:30]}"),
            plain(f"Grad-CAM for the true class\n{it['true'][:30]}"),
        )
        for ax, img, head in zip(axes[r], row, heads, strict=True):
            ax.imshow(img)
            ax.set_title(head, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.suptitle(plain(title), fontsize=9, y=1.0 + 0.15 / len(rows))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def write_error_views(
    trained: Any, metrics: Mapping[str, Any], records: Sequence[Any], out: Path, method: str = "gradcam"
) -> list[str]:
    """``top_loss_views.png`` and ``confused_views.png`` in ``out`` (each only if it has a misread image);
    returns their paths. A figure that fails is named on stderr and the other still comes."""
    from birdlens.utils.figures import figure_or_warning

    losses = [t for t in metrics.get("top_losses", []) if t["true"] != t["pred"]][:TOP_LOSS_ROWS]
    confused = confused_images(trained, records, metrics.get("most_confused", [])[:CONFUSED_PAIRS])
    written = []
    for items, name, title in (
        (losses, "top_loss_views.png", "Highest-loss test images: where the model looked"),
        (confused, "confused_views.png", "Most-confused pairs: where the model looked"),
    ):
        if not items:
            continue

        def draw(p: Path, items: Sequence[Mapping[str, Any]] = items, title: str = title) -> Path:
            return plot_error_views(_rows(trained, items, method), items, title, p)

        path = figure_or_warning(draw, out / name)
        if path is not None:
            written.append(str(path))
    return written
