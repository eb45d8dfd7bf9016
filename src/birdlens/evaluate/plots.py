"""The evaluation figures: confusion matrices, learning curves (the study's Fig. 2), reliability, top losses.

All functions take plain arrays/lists and a target path, write a PNG atomically and return the path; they
never show a window (Agg backend), so they run on servers and in CI.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from birdlens.utils.atomic import atomic_path
from birdlens.utils.plaintext import plain


def _save(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def _short(name: str, width: int = 22) -> str:
    """Readable labels for long species names: title case, ellipsis past ``width``, drawn as plain text."""
    s = name.title() if name.isupper() else name
    return plain(s if len(s) <= width else s[: width - 1] + "…")


def plot_confusion(
    cm: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    normalize: bool = False,
    title: str | None = None,
) -> Path:
    """Confusion matrix (rows = true class); row-normalised when ``normalize``. Scales to 20+ classes."""
    cm = np.asarray(cm, dtype=np.float64)
    n = len(classes)
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        data = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    else:
        data = cm
    side = max(5.0, 0.38 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(data, cmap="Blues", vmin=0, vmax=1.0 if normalize else max(1.0, data.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "images")
    labels = [_short(c) for c in classes]
    fs = 9 if n <= 20 else max(5, int(9 - (n - 20) / 10))
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fs)
    ax.set_yticks(range(n), labels, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 40:  # numbers stay legible up to ~40 classes
        thresh = (1.0 if normalize else data.max()) / 2
        for i in range(n):
            for j in range(n):
                v = data[i, j]
                if v == 0:
                    continue
                txt = f"{v:.2f}".lstrip("0") if normalize else f"{int(v)}"
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=max(4, fs - 2),
                    color="white" if v > thresh else "black",
                )
    ax.set_title(
        plain(title)
        if title
        else ("confusion matrix (row-normalised)" if normalize else "confusion matrix (counts)")
    )
    return _save(fig, path)


def plot_learning_curves(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Train/valid loss and accuracy per epoch (``log.csv`` rows); the head-only epochs are shaded."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    x = [int(r["epoch"]) + 1 for r in rows]
    probe = bool(rows) and str(rows[0].get("stage", "")).startswith("probe")
    if probe:  # a probe has no epochs: one point per regularisation strength
        x = list(range(1, len(rows) + 1))
        ticks = [plain(str(r["stage"]).replace("probe ", "")) for r in rows]
    for ax, key, label in ((ax_l, "loss", "loss"), (ax_a, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("valid", "-s")):
            ys = [r.get(f"{split}_{key}", math.nan) for r in rows]
            ys = [math.nan if y in ("", None) else float(y) for y in ys]
            if not all(math.isnan(y) for y in ys):
                ax.plot(x, ys, style, label=split, markersize=4)
        head = [xi for xi, r in zip(x, rows, strict=True) if r.get("stage") == "head"]
        if head:
            ax.axvspan(min(head) - 0.5, max(head) + 0.5, color="grey", alpha=0.15, label="head only")
        ax.set_xlabel("regularisation" if probe else "epoch")
        ax.set_ylabel(label)
        if probe:
            ax.set_xticks(x, ticks, rotation=45, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_a.set_ylim(0, 1.02)
    fig.suptitle(plain(title or "learning curves"))
    return _save(fig, path)


def plot_reliability(
    bins: Sequence[dict[str, Any]], ece: float, path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, bin counts below."""
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    lo = np.array([b["lo"] for b in bins])
    hi = np.array([b["hi"] for b in bins])
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins], dtype=float)
    conf = np.array([b["confidence"] if b["count"] else np.nan for b in bins], dtype=float)
    cnt = np.array([b["count"] for b in bins])
    w = hi - lo
    ax.bar(lo, acc, width=w, align="edge", edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    gap_lo = np.where(cnt > 0, np.minimum(acc, np.nan_to_num(conf)), 0)
    gap = np.where(cnt > 0, np.abs(np.nan_to_num(conf) - acc), 0)
    ax.bar(
        lo, gap, bottom=gap_lo, width=w, align="edge", color="tab:red", alpha=0.3, label="gap to confidence"
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(plain(title or f"reliability (ECE = {ece:.3f})"))
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(lo, cnt, width=w, align="edge", color="grey", edgecolor="black")
    ax_n.set_xlabel("confidence (max probability)")
    ax_n.set_ylabel("images")
    return _save(fig, path)


def plot_top_losses(
    images: Sequence[np.ndarray],
    true: Sequence[str],
    pred: Sequence[str],
    prob: Sequence[float],
    loss: Sequence[float],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Grid of the highest-loss images (HWC uint8), captioned true / predicted (probability) / loss."""
    n = len(images)
    cols = min(4, max(1, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k])
        ok = true[k] == pred[k]
        ax.set_title(
            f"true: {_short(true[k], 26)}\npred: {_short(pred[k], 26)} ({prob[k]:.2f})\nloss {loss[k]:.2f}",
            fontsize=8,
            color="black" if ok else "darkred",
        )
    fig.suptitle(plain(title or "highest-loss images"))
    return _save(fig, path)
