"""Probe mode: frozen backbone, cached pooled features, a logistic-regression head chosen on valid.

The saved model is the whole network (backbone + fitted ``nn.Linear`` head), so ``load_trained``, predict,
evaluate and the explainers treat a probe like any fine-tuned model.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from birdlens.data.dataset import ImageDataset
from birdlens.data.images import content_hash, read_image_bytes
from birdlens.runs import layout
from birdlens.runs.logcsv import write_log_csv
from birdlens.runs.trained import save_weights
from birdlens.train.context import RunContext
from birdlens.train.features import FeatureCache, ViewSpec, describe_transform, extract_features
from birdlens.train.parts import backbone_fingerprint, set_linear_head
from birdlens.train.probe_head import ProbeFit, fit_probe
from birdlens.utils.console import note, progress


def image_keys(ds: ImageDataset) -> list[str]:
    """Content hash of every image (the image part of a feature-cache key)."""
    if ds.cache is not None:
        return [ds.cache.file_key(r.path) for r in ds.records]
    return [content_hash(read_image_bytes(r.path)) for r in ds.records]


def probe_features(
    ctx: RunContext, split: str, views: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features of one split: the clean view of every image, plus ``views`` augmented views (train).

    Returns ``X [N * (1 + views), D]``, ``y`` and timing/cache statistics.
    """
    cfg = ctx.cfg
    ds = ImageDataset(
        ctx.data.split(split), transform=None, class_to_idx=ctx.data.class_to_idx, cache=cfg.image_cache
    )
    stats: dict[str, Any] = {"images": len(ds)}
    if len(ds) == 0:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), stats
    from birdlens.utils.device import resolve_device

    device = resolve_device("auto" if cfg.accelerator in ("auto", "gpu", "cuda") else "cpu")
    model = ctx.model.to(device)
    cache = FeatureCache(cfg.feature_cache or ".")
    bb_key = ctx.extra.setdefault("backbone_key", f"{cfg.model}:{backbone_fingerprint(ctx.model)}")
    keys = image_keys(ds)
    eval_tf = ctx.eval_transform()
    specs = [ViewSpec(eval_tf, describe_transform(eval_tf, ctx.data_config.input_size), ("clean",))]
    if views:
        tr_tf = ctx.train_transform()
        specs.append(
            ViewSpec(
                tr_tf,
                describe_transform(tr_tf, ctx.data_config.input_size),
                tuple(f"aug{cfg.seed}.{i}" for i in range(views)),
            )
        )
    t0 = time.perf_counter()
    feats = []
    total = len(ds) * (1 + views)
    with progress(total, f"features ({split})", ctx.quiet) as advance:
        for spec in specs:
            f = extract_features(
                model,
                ds.load_image,
                keys,
                spec,
                cache,
                bb_key,
                batch_size=cfg.batch_size,
                device=device,
                channels_last=cfg.channels_last,
                progress=advance,
            )
            feats.append(f.reshape(-1, f.shape[-1]))
    x = np.concatenate(feats).astype(np.float32)
    y = np.tile(np.asarray(ds.targets, dtype=np.int64), 1 + views)
    stats.update(
        views=views, seconds=time.perf_counter() - t0, cache_hits=cache.hits, cache_misses=cache.misses
    )
    return x, y, stats


def _fit(ctx: RunContext, views: int) -> tuple[ProbeFit, dict[str, Any]]:
    cfg = ctx.cfg
    t0 = time.perf_counter()
    ctx.model.eval()
    x_tr, y_tr, st_tr = probe_features(ctx, "train", views=views)
    x_va, y_va, st_va = probe_features(ctx, "valid")
    extract_s = time.perf_counter() - t0
    fit = fit_probe(
        x_tr,
        y_tr,
        x_va if len(y_va) else None,
        y_va if len(y_va) else None,
        n_classes=len(ctx.data.classes),
        c_grid=cfg.probe_c_grid,
        solver=cfg.probe_solver,
    )
    set_linear_head(ctx.model.to("cpu"), fit.weight, fit.bias)
    ctx.model.eval()
    best = next(h for h in fit.history if h["c"] == fit.c)
    return fit, {
        "solver": fit.solver,
        "c": fit.c,
        "views": views,
        "feature_dim": int(x_tr.shape[1]),
        "train_vectors": len(y_tr),
        "extract_seconds": extract_s,
        "fit_seconds": fit.seconds,
        "valid_accuracy": best.get("valid_acc"),
        "feature_cache": {"train": st_tr, "valid": st_va},
        "history": fit.history,
    }


def fit_probe_head(ctx: RunContext) -> dict[str, Any]:
    """Put a probe-fitted head into ``ctx.model`` (fine-tuning's ``head_init=probe``); returns its summary.

    Clean views only: the head is a starting point that fine-tuning moves anyway."""
    fit, info = _fit(ctx, views=0)
    note(f"head initialised by a probe: C={fit.c:g}, valid acc {info['valid_accuracy']:.3f}", ctx.quiet)
    return info


def run_probe(ctx: RunContext) -> dict[str, Any]:
    """Extract (or reuse) features, fit the head, save ``best.safetensors`` and ``log.csv``; returns meta fields."""
    t0 = time.perf_counter()
    fit, info = _fit(ctx, views=int(ctx.cfg.probe_views or 0))
    extract_s = info["extract_seconds"]
    if ctx.is_main:
        save_weights(ctx.model, ctx.out / layout.BEST, metadata={"mode": "probe"})
        rows = []
        for i, h in enumerate(fit.history):
            rows.append(
                {
                    "epoch": i,
                    "stage": f"probe C={h['c']:g}",
                    "train_loss": h["train_loss"],
                    "train_acc": h["train_acc"],
                    "valid_loss": h.get("valid_loss", math.nan),
                    "valid_acc": h.get("valid_acc", math.nan),
                    "lr_head": math.nan,
                    "lr_backbone": math.nan,
                    "seconds": round(h["seconds"], 4),
                    "images_per_s": math.nan,
                }
            )
        write_log_csv(ctx.out / layout.LOG, rows)
    best = next(h for h in fit.history if h["c"] == fit.c)
    note(
        f"probe: {info['train_vectors']} train vectors, C={fit.c:g} ({fit.solver}), valid acc "
        f"{best.get('valid_acc', float('nan')):.3f}; features {extract_s:.1f} s, fit {fit.seconds:.2f} s",
        ctx.quiet,
    )
    return {
        "epochs_run": len(fit.history),
        "best_epoch": fit.history.index(best),
        "valid": {"loss": best.get("valid_loss"), "accuracy": best.get("valid_acc")},
        "train_seconds": time.perf_counter() - t0,
        "probe": info,
    }
