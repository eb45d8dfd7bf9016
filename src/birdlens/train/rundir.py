"""The training run directory: its file names, and the rule that an existing run is never silently replaced.

Layout (``RUN_DIR``)::

    config.yaml            the fully resolved TrainConfig (re-runnable with ``birdlens train --config``)
    env.json               versions, hardware, threads, seed
    best.safetensors       weights of the best validation epoch (full model: backbone + head)
    last.safetensors       weights at the end of training
    last.ckpt              Lightning checkpoint (fine-tune only): exact resume, written every N steps
    meta.json              model name, classes, data config, CAM layer, image size, mode, metrics, timings
    log.csv                one row per epoch (probe: one row per regularisation strength tried)
    metrics/<split>.json   evaluation (``birdlens evaluate``)
    figures/*.png          confusion matrices, learning curves, reliability diagram, top-loss grid
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CONFIG = "config.yaml"
ENV = "env.json"
META = "meta.json"
LOG = "log.csv"
BEST = "best.safetensors"
LAST = "last.safetensors"
LAST_CKPT = "last.ckpt"
METRICS_DIR = "metrics"
FIGURES_DIR = "figures"


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists without --force, nothing to resume, ...)."""


def prepare_run_dir(out: str | os.PathLike[str], force: bool = False, resume: bool = False) -> Path:
    """Create ``out`` for a new run, or check it for ``resume``.

    A non-empty folder is refused unless ``force`` (then its contents are deleted) or ``resume``.
    """
    out = Path(out)
    if force and resume:
        raise RunDirError(
            "--force and --resume contradict each other: --force deletes the run --resume continues"
        )
    if resume:
        if not (out / LAST_CKPT).is_file() and not (out / CONFIG).is_file():
            raise RunDirError(
                f"nothing to resume in {out}: it has no {LAST_CKPT} or {CONFIG}; start a new run "
                "without --resume"
            )
        return out
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} exists and is a file; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise RunDirError(
                f"run directory {out} already exists and is not empty; pass --force to replace it "
                "or --resume to continue it"
            )
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out
