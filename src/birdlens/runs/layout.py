"""The run directory: its file names, and the rule that an existing run is never silently replaced.

One layout and one :func:`prepare_run_dir` for every command that writes a run (``birdlens train``,
``birdlens study``), so that ``--force`` and ``--resume`` mean the same everywhere.

Training run layout (``RUN_DIR``)::

    config.yaml            the fully resolved TrainConfig (re-runnable with ``birdlens train --config``)
    env.json               versions, hardware, threads, seed
    manifest.csv           the images and splits the run trained and evaluates on
    best.safetensors       weights of the best validation epoch (full model: backbone + head)
    last.safetensors       weights at the end of training
    last.ckpt              Lightning checkpoint (fine-tune only): exact resume, written every N steps
    meta.json              model name, classes, data config, CAM layer, image size, mode, metrics, timings
    log.csv                one row per epoch (probe: one row per regularisation strength tried)
    metrics/<split>.json   evaluation on the run's own images (``birdlens evaluate``)
    metrics/<split>-on-<dataset>.json   evaluation on another dataset (``birdlens evaluate --data``)
    figures/*.png          confusion matrices, learning curves, reliability diagram, top-loss grid
    examples/index.npz     training-set feature index for nearest-example explanations (rebuilt when stale)
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from birdlens.data.manifest import Manifest

CONFIG = "config.yaml"
ENV = "env.json"
META = "meta.json"
LOG = "log.csv"
MANIFEST = "manifest.csv"
BEST = "best.safetensors"
LAST = "last.safetensors"
LAST_CKPT = "last.ckpt"
METRICS_DIR = "metrics"
FIGURES_DIR = "figures"
EXAMPLES_INDEX = "examples/index.npz"

#: What makes a training run resumable: its exact-resume checkpoint or at least its saved config.
TRAIN_RESUMABLE = (LAST_CKPT, CONFIG)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists without --force, nothing to resume, damaged file)."""


class CheckpointError(RunDirError):
    """A saved file of a run (checkpoint, weights, meta.json) is damaged; the message says which and what to do."""


def prepare_run_dir(
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    resume: bool = False,
    resumable: Sequence[str] = TRAIN_RESUMABLE,
    require_resumable: bool = True,
) -> Path:
    """Create ``out`` for a new run, or check it for ``resume``.

    A non-empty folder is refused unless ``force`` (then its contents are deleted, the folder itself kept)
    or ``resume``. ``resumable`` names the entries whose presence means there is a run to continue; with
    ``require_resumable`` a ``resume`` without any of them is an error (a study instead starts afresh).
    """
    out = Path(out)
    if force and resume:
        raise RunDirError(
            "--force and --resume contradict each other: --force deletes the run --resume continues"
        )
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} exists and is a file; choose another --out")
    can_resume = any((out / name).exists() for name in resumable)
    if resume:
        if require_resumable and not can_resume:
            raise RunDirError(
                f"nothing to resume in {out}: it has no {' or '.join(resumable)}; start a new run "
                "without --resume"
            )
        out.mkdir(parents=True, exist_ok=True)
        return out
    if out.is_dir() and any(out.iterdir()):
        if not force:
            hint = "continue it with --resume" if can_resume else "choose another --out"
            raise RunDirError(f"{out} already exists and is not empty: {hint}, or start over with --force")
        clear_run_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def clear_run_dir(out: Path, keep: Sequence[str] = ()) -> None:
    """Delete what ``out`` holds except the names in ``keep`` (the folder itself, and its mode, stay)."""
    for child in out.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def metrics_name(split: str, data: str | os.PathLike[str] | None = None) -> str:
    """``<split>`` for the run's own images, ``<split>-on-<dataset>`` for another dataset.

    Evaluating on another dataset must never overwrite the run's own results (issue 26).
    """
    if data is None:
        return split
    p = Path(data)
    name = p.stem if p.suffix.lower() == ".csv" else p.name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "data"
    return f"{split}-on-{slug}"


def run_manifest(run_dir: str | os.PathLike[str]) -> Manifest:
    """The images and splits a training run saw (``RUN_DIR/manifest.csv``)."""
    from birdlens.data.manifest import Manifest

    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass --data PATH to evaluate on another dataset")
    return Manifest.from_csv(path)
