"""Figures only the study needs (the per-stage ones live with their stage): the sample grid of the study's Fig. 1."""

from __future__ import annotations

import random
from pathlib import Path

from birdlens.data.manifest import Manifest
from birdlens.utils.atomic import atomic_path
from birdlens.utils.plaintext import plain


def sample_grid(
    manifest: Manifest, out: Path, per_class: int = 4, max_classes: int = 20, seed: int = 0, thumb: int = 112
) -> Path:
    """A grid: one row per class (name on the left), ``per_class`` random training images in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from birdlens.data.images import BadImage, load_resized

    rng = random.Random(seed)
    classes = manifest.classes[:max_classes]
    pool = manifest.split("train") if manifest.split("train").records else manifest
    by_class: dict[str, list] = {c: [] for c in classes}
    for r in pool:
        if r.label in by_class:
            by_class[r.label].append(r)
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(per_class * 1.5 + 2.2, len(classes) * 1.5 + 0.2), squeeze=False
    )
    for i, c in enumerate(classes):
        recs = by_class[c]
        picks = rng.sample(recs, min(per_class, len(recs)))
        for j in range(per_class):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(picks):
                try:
                    ax.imshow(load_resized(picks[j].path, thumb))
                except BadImage:
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
            if j == 0:
                ax.set_ylabel(plain(c.title()), rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.3, wspace=0.04, hspace=0.06)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(out)
