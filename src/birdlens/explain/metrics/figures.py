"""Figures of an explanation evaluation: mean deletion/insertion curves, one bar chart per metric with 95%
intervals, and the sanity-check (cascading randomisation) curves. Written atomically as PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from birdlens.explain.metrics.base import Direction, metric_info
from birdlens.explain.metrics.sanity import FAIL_THRESHOLD
from birdlens.utils.atomic import atomic_path
from birdlens.utils.plaintext import plain


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def plot_curves(curves: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """``curves[method][mode] = {"fractions": [...], "mean": [...]}`` -> a two-panel figure."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, mode in zip(axes, ("deletion", "insertion"), strict=True):
        for method, per in curves.items():
            if mode not in per:
                continue
            c = per[mode]
            style = "--" if method.endswith("(baseline)") else "-"
            ax.plot(c["fractions"], c["mean"], style, label=plain(f"{method} (AUC {np.mean(c['auc']):.3f})"))
        ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} AUC is better)")
        ax.set_xlabel("fraction of pixels " + ("removed" if mode == "deletion" else "inserted"))
        ax.set_ylabel("class probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_metric_bars(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str, path: str | Path
) -> Path:
    """One bar per method with its 95% bootstrap interval."""
    plt = _plt()
    methods = [m for m in summary if summary[m].get(metric, {}).get("mean") is not None]
    means = np.array([summary[m][metric]["mean"] for m in methods])
    lo = np.array([summary[m][metric]["ci95"][0] for m in methods])
    hi = np.array([summary[m][metric]["ci95"][1] for m in methods])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(methods) + 1.5), 3.8))
    colors = ["#999999" if m.endswith("(baseline)") else "#3b75af" for m in methods]
    ax.bar(range(len(methods)), means, color=colors, yerr=np.vstack([means - lo, hi - means]), capsize=4)
    ax.set_xticks(range(len(methods)), [plain(m) for m in methods], rotation=30, ha="right")
    arrow = Direction(metric_info(metric)["direction"]).arrow
    n = max((summary[m][metric]["n"] for m in methods), default=0)
    ax.set_title(plain(f"{metric} {arrow}  (mean, 95% bootstrap CI, n≤{n})"))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(path))


def plot_sanity(sanity: Mapping[str, Any], path: str | Path) -> Path:
    """Mean |rank correlation| with the original maps after each cascading-randomisation stage."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    stages: list[str] = []
    for method, res in sanity.get("methods", {}).items():
        stages = res["stages"]
        mean = np.nanmean(np.abs(np.asarray(res["corr"], dtype=float)), axis=1) if res["corr"] else []
        style = "--" if method.endswith("(baseline)") else "-o"
        ax.plot(range(1, len(mean) + 1), mean, style, label=plain(method), markersize=4)
    ax.axhline(FAIL_THRESHOLD, color="red", lw=0.8, ls=":", label=f"fail above {FAIL_THRESHOLD}")
    if stages:
        ax.set_xticks(
            range(1, len(stages) + 1), [plain(s) for s in stages], rotation=45, ha="right", fontsize=7
        )
    ax.set_xlabel("randomised down to (cascading, top first)")
    ax.set_ylabel("|Spearman(|original|, |randomised|)|")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title("Sanity check: model-parameter randomisation (Adebayo et al. 2018)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_categories(summary: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | Path) -> Path:
    """The summary figure: each method's mean rank per metric category (1 = first), the winner outlined."""
    from birdlens.explain.metrics.summary import category_winners

    plt = _plt()
    cats = category_winners(summary)
    names, methods = list(cats), list(summary)
    grid = np.array([[cats[c]["mean_rank"].get(m, np.nan) for c in names] for m in methods])
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 0.45 * len(methods) + 1.8))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    for i, m in enumerate(methods):
        for j, c in enumerate(names):
            if np.isfinite(grid[i, j]):
                bold = cats[c]["best"] == m
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.1f}",
                    ha="center",
                    va="center",
                    color="w",
                    fontweight="bold" if bold else "normal",
                )
    ax.set_xticks(range(len(names)), [f"{c}\n({len(cats[c]['metrics'])} metrics)" for c in names], fontsize=8)
    ax.set_yticks(range(len(methods)), [plain(m) for m in methods])
    fig.colorbar(im, ax=ax, label="mean rank over the category's metrics (1 = best)")
    ax.set_title("Which method ranks first in each category (bold)")
    return _save(fig, Path(path))
