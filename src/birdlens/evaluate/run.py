"""Evaluate a training run on one split: ``metrics/<split>.json`` and the figures in ``figures/``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.evaluate.metrics import classification_metrics
from birdlens.evaluate.plots import plot_confusion, plot_learning_curves, plot_reliability, plot_top_losses
from birdlens.utils.atomic import write_json
from birdlens.utils.figures import figure_or_warning

TOP_LOSSES = 16


def predict_dataset(
    trained: Any, dataset: Any, batch_size: int = 16, quiet: bool = False, description: str = "evaluating"
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``[N, C]`` and targets for a dataset yielding ``(normalised image, target)``."""
    from torch.utils.data import DataLoader

    from birdlens.utils.console import progress

    model = trained.model
    device = next(model.parameters()).device
    model.eval().to(memory_format=torch.channels_last)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    probs, targets = [], []
    with progress(len(dataset), description, quiet) as advance, torch.inference_mode():
        for x, y in loader:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            probs.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
            targets.append(np.asarray(y))
            advance(len(y))
    if not probs:
        return np.zeros((0, len(trained.classes))), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs).astype(np.float64), np.concatenate(targets).astype(np.int64)


def evaluate_run(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    split: str = "test",
    which: str = "best",
    figures: bool = True,
    batch_size: int = 16,
    quiet: bool = False,
    trained: Any | None = None,
) -> dict[str, Any]:
    """Evaluate ``RUN_DIR/<which>.safetensors`` on ``split`` of the run's own manifest (or of ``data``).

    ``trained``: an already loaded :class:`~birdlens.train.checkpoint.TrainedModel` of this run (saves
    rebuilding a large model when several splits are evaluated). With ``data``, images of classes the model does not know are skipped and counted in ``skipped_unknown``.
    Writes ``metrics/<split>.json`` and, when ``figures``, ``figures/confusion_<split>_{counts,normalized}.png``,
    ``figures/reliability_<split>.png``, ``figures/top_losses_<split>.png`` and ``figures/learning_curves.png``.
    """
    from birdlens.data.dataset import ImageDataset
    from birdlens.data.manifest import normalise_split
    from birdlens.train import rundir
    from birdlens.train.checkpoint import load_trained
    from birdlens.train.data import load_manifest, run_manifest

    run_dir = Path(run_dir)
    split = normalise_split(split) or "test"
    if trained is None:
        trained = load_trained(run_dir, which=which)  # type: ignore[arg-type]
    classes = trained.classes
    if data is None:
        manifest = run_manifest(run_dir)
    else:
        cfg_seed = int(trained.meta.get("seed", 0))
        manifest = load_manifest(data, seed=cfg_seed)
    part = manifest.split(split)
    known = set(classes)
    unknown = sorted({r.label for r in part if r.label not in known})
    skipped_unknown = sum(1 for r in part if r.label not in known)
    part = part.filter(labels=[c for c in classes])
    if len(part) == 0:
        raise ValueError(
            f"no '{split}' images of the model's {len(classes)} classes in "
            f"{data or run_dir / 'manifest.csv'}; choose another --split or --data"
        )
    ds = ImageDataset(part, transform=trained.transform(), class_to_idx={c: i for i, c in enumerate(classes)})
    t0 = time.perf_counter()
    probs, targets = predict_dataset(
        trained, ds, batch_size=batch_size, quiet=quiet, description=f"evaluating {split}"
    )
    seconds = time.perf_counter() - t0
    metrics = classification_metrics(probs, targets, classes)
    losses = -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1.0))
    order = np.argsort(-losses, kind="stable")[:TOP_LOSSES]
    metrics["top_losses"] = [
        {
            "path": str(part.records[i].path),
            "true": classes[targets[i]],
            "pred": classes[int(probs[i].argmax())],
            "prob": float(probs[i].max()),
            "loss": float(losses[i]),
        }
        for i in order
    ]
    metrics.update(
        {
            "split": split,
            "run": str(run_dir),
            "weights": which,
            "model": trained.model_name,
            "mode": trained.meta.get("mode"),
            "data": str(data) if data is not None else trained.meta.get("data"),
            "skipped_unknown": skipped_unknown,
            "unknown_classes": unknown,
            "seconds": seconds,
            "images_per_s": len(targets) / seconds if seconds > 0 else None,
        }
    )
    write_json(run_dir / rundir.METRICS_DIR / f"{split}.json", metrics)
    if figures:
        _write_figures(run_dir, trained, metrics, part, order, quiet=quiet)
    return metrics


def _write_figures(
    run_dir: Path,
    trained: Any,
    metrics: dict[str, Any],
    part: Any,
    order: np.ndarray,
    quiet: bool = False,
) -> None:
    """The split's figures, each on its own: one that fails is named on stderr and the others still come."""
    from birdlens.data.dataset import ImageDataset
    from birdlens.train import rundir
    from birdlens.train.logcsv import read_log_csv

    split, classes, name = metrics["split"], trained.classes, trained.model_name
    fig_dir = run_dir / rundir.FIGURES_DIR
    cm = np.asarray(metrics["confusion_matrix"])

    def top_losses(path: Path) -> None:
        raw = ImageDataset(part, transform=None, class_to_idx={c: i for i, c in enumerate(classes)})
        geom = _display_geometry(trained)
        imgs = [np.asarray(geom(raw.load_image(int(i)))).transpose(1, 2, 0) for i in order]
        top = metrics["top_losses"]  # the rows of ``order``, as written to the JSON
        plot_top_losses(
            imgs,
            [t["true"] for t in top],
            [t["pred"] for t in top],
            [t["prob"] for t in top],
            [t["loss"] for t in top],
            path,
            title=f"{name} {split}: highest-loss images",
        )

    def learning_curves(path: Path) -> None:
        log = run_dir / rundir.LOG
        rows = read_log_csv(log) if log.is_file() else []
        if rows:
            meta = trained.meta
            title = f"{name} ({meta.get('mode')}, augment {meta.get('augment')})"
            plot_learning_curves(rows, path, title=title)

    figures = {
        f"confusion_{split}_counts.png": lambda p: plot_confusion(
            cm, classes, p, title=f"{name} {split}: confusion (counts)"
        ),
        f"confusion_{split}_normalized.png": lambda p: plot_confusion(
            cm, classes, p, normalize=True, title=f"{name} {split}: confusion (row-normalised)"
        ),
        f"reliability_{split}.png": lambda p: plot_reliability(
            metrics["reliability"],
            metrics["ece"],
            p,
            title=f"{name} {split}: reliability (ECE {metrics['ece']:.3f})",
        ),
        f"top_losses_{split}.png": top_losses,
        "learning_curves.png": learning_curves,
    }
    for file, draw in figures.items():
        figure_or_warning(draw, fig_dir / file)


def _display_geometry(trained: Any) -> Any:
    from birdlens.models.data_config import eval_geometry

    return eval_geometry(trained.data_config)
