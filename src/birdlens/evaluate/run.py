"""Evaluate a training run on one split: ``metrics/<split>.json`` and the figures in ``figures/``.

On another dataset (``data=``) the outputs are named after it (``metrics/<split>-on-<dataset>.json``), so
the run's own results are never overwritten.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.evaluate.metrics import classification_metrics
from birdlens.evaluate.plots import plot_confusion, plot_learning_curves, plot_reliability, plot_top_losses
from birdlens.runs import layout
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
    device: Any = "cpu",
) -> dict[str, Any]:
    """Evaluate ``RUN_DIR/<which>.safetensors`` on ``split`` of the run's own manifest (or of ``data``).

    ``device``: where the model runs when it is loaded here (a ``torch.device``, ``"cpu"``, ``"cuda:N"``).

    ``trained``: an already loaded :class:`~birdlens.runs.trained.TrainedModel` of this run (saves
    rebuilding a large model when several splits are evaluated). With ``data``, images of classes the model
    does not know are skipped and counted in ``skipped_unknown``.
    Writes ``metrics/<name>.json`` and, when ``figures``, ``figures/confusion_<name>_{counts,normalized}.png``,
    ``figures/reliability_<name>.png``, ``figures/top_losses_<name>.png`` and ``figures/learning_curves.png``,
    where ``<name>`` is :func:`birdlens.runs.layout.metrics_name` (the split, or the split on ``data``).
    """
    from birdlens.data.manifest import normalise_split
    from birdlens.runs.trained import load_trained, refuse_multi_label

    run_dir = Path(run_dir)
    split = normalise_split(split) or "test"
    if trained is None:
        trained = load_trained(run_dir, which=which, device=device)  # type: ignore[arg-type]
    refuse_multi_label(trained, "evaluate")
    part, skipped_unknown, unknown = _split_images(run_dir, trained, data, split)
    t0 = time.perf_counter()
    probs, targets = predict_dataset(
        trained,
        _dataset(part, trained.classes, trained.transform()),
        batch_size=batch_size,
        quiet=quiet,
        description=f"evaluating {split}",
    )
    seconds = time.perf_counter() - t0
    metrics = classification_metrics(probs, targets, trained.classes)
    losses = -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1.0))
    order = np.argsort(-losses, kind="stable")[:TOP_LOSSES]
    metrics["top_losses"] = [
        {
            "path": str(part.records[i].path),
            "true": trained.classes[targets[i]],
            "pred": trained.classes[int(probs[i].argmax())],
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
    name = layout.metrics_name(split, data)
    write_json(run_dir / layout.METRICS_DIR / f"{name}.json", metrics)
    if figures:
        _write_figures(run_dir, trained, part, metrics, probs, targets, losses, order, name)
    return metrics


def _split_images(run_dir: Path, trained: Any, data: Any, split: str) -> tuple[Any, int, list[str]]:
    """The split's images of the model's classes, how many were skipped as unknown, and their classes."""
    from birdlens.data.layouts import load_manifest

    classes = trained.classes
    if data is None:
        manifest = layout.run_manifest(run_dir)
    else:
        manifest = load_manifest(data, seed=int(trained.meta.get("seed", 0)))
    part = manifest.split(split)
    known = set(classes)
    unknown = sorted({r.label for r in part if r.label not in known})
    skipped_unknown = sum(1 for r in part if r.label not in known)
    part = part.filter(labels=list(classes))
    if len(part) == 0:
        raise ValueError(
            f"no '{split}' images of the model's {len(classes)} classes in "
            f"{data or run_dir / layout.MANIFEST}; choose another --split or --data"
        )
    return part, skipped_unknown, unknown


def _dataset(part: Any, classes: list[str], transform: Any) -> Any:
    from birdlens.data.dataset import ImageDataset

    return ImageDataset(part, transform=transform, class_to_idx={c: i for i, c in enumerate(classes)})


def _write_figures(
    run_dir: Path,
    trained: Any,
    part: Any,
    metrics: dict[str, Any],
    probs: np.ndarray,
    targets: np.ndarray,
    losses: np.ndarray,
    order: np.ndarray,
    name: str,
) -> None:
    """Confusion (counts and row-normalised), reliability, top losses and the learning curves.

    Each figure on its own: one that fails is named on stderr and the others (and the JSON) still come.
    """
    from birdlens.models.data_config import eval_geometry

    classes, model, split = trained.classes, trained.model_name, metrics["split"]
    fig_dir = run_dir / layout.FIGURES_DIR
    cm = np.asarray(metrics["confusion_matrix"])
    for normalize, kind in ((False, "counts"), (True, "row-normalised")):
        suffix = "normalized" if normalize else "counts"
        figure_or_warning(
            lambda p, normalize=normalize, kind=kind: plot_confusion(
                cm, classes, p, normalize=normalize, title=f"{model} {split}: confusion ({kind})"
            ),
            fig_dir / f"confusion_{name}_{suffix}.png",
        )
    figure_or_warning(
        lambda p: plot_reliability(
            metrics["reliability"],
            metrics["ece"],
            p,
            title=f"{model} {split}: reliability (ECE {metrics['ece']:.3f})",
        ),
        fig_dir / f"reliability_{name}.png",
    )

    def top_losses(path: Path) -> None:
        raw = _dataset(part, classes, transform=None)
        geom = eval_geometry(trained.data_config)
        imgs = [np.asarray(geom(raw.load_image(int(i)))).transpose(1, 2, 0) for i in order]
        plot_top_losses(
            imgs,
            [classes[targets[i]] for i in order],
            [classes[int(probs[i].argmax())] for i in order],
            [float(probs[i].max()) for i in order],
            [float(losses[i]) for i in order],
            path,
            title=f"{model} {split}: highest-loss images",
        )

    figure_or_warning(top_losses, fig_dir / f"top_losses_{name}.png")
    figure_or_warning(lambda p: _write_learning_curves(run_dir, trained, p), fig_dir / "learning_curves.png")


def _write_learning_curves(run_dir: Path, trained: Any, path: Path) -> None:
    from birdlens.runs.logcsv import read_log_csv

    log = run_dir / layout.LOG
    rows = read_log_csv(log) if log.is_file() else []
    if rows:
        plot_learning_curves(
            rows,
            path,
            title=f"{trained.model_name} ({trained.meta.get('mode')}, augment {trained.meta.get('augment')})",
        )
