"""A trained generator as one small safetensors file that records what it was trained on.

Why a separate file: a run's checkpoint also holds the discriminator and both optimisers (several times the
generator's size); a shipped generator needs only the weights it is sampled with. Why record the data: a
generator is only meaningful beside the images it learnt from, so a user of the file (the demo) can check that
its own data are those before it compares classifiers with and without the generated images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from birdlens.augment.gan.checkpoint import load_checkpoint, module_state, save_checkpoint
from birdlens.augment.gan.train import CHECKPOINT, load_generator

EXPORT_FORMAT = "birdlens-gan-generator-1"
# the synthetic-data generator's settings a shipped generator must share with the data it is used beside
SYNTH_KEYS: tuple[str, ...] = ("generator", "version", "seed", "size", "per_class", "splits")


def data_record(dataset: str | os.PathLike[str]) -> dict[str, Any]:
    """What a dataset folder says about how it was made: the synthetic generator's settings (``parts.json``)
    when it has them, else only its path (a folder of photos cannot be re-made)."""
    parts = Path(dataset) / "parts.json"
    if not parts.is_file():
        return {"source": "path", "path": str(dataset)}
    spec = json.loads(parts.read_text(encoding="utf-8"))
    return {"source": "synth", **{k: spec.get(k) for k in SYNTH_KEYS}}


def export_generator(
    run: str | os.PathLike[str], out: str | os.PathLike[str], data: dict[str, Any], weights: str = "auto"
) -> Path:
    """Write the run's sampling generator (EMA when it has one) with its config, classes and ``data`` record;
    :func:`~birdlens.augment.gan.train.load_generator` reads the file like a snapshot."""
    path = Path(run)
    ckpt = path / CHECKPOINT if path.is_dir() else path
    loaded = load_generator(ckpt, weights=weights)
    tensors, meta = load_checkpoint(ckpt)
    prefix = "EMA" if loaded.weights == "ema" else "G"
    kept = {f"{prefix}.{k}": v.contiguous() for k, v in module_state(tensors, prefix).items()}
    record = {
        "format": EXPORT_FORMAT,
        "iteration": loaded.iteration,
        "config": meta["config"],
        "classes": loaded.classes,
        "weights": loaded.weights,
        "data": data,
    }
    return save_checkpoint(out, kept, record)


def data_mismatch(
    recorded: dict[str, Any], actual: dict[str, Any], classes: list[str], trained: list[str]
) -> str:
    """Why a generator does not belong to these data ('' when it does): the synthetic settings or the class
    list differ."""
    if recorded.get("source") != "synth" or actual.get("source") != "synth":
        return "the generator or the data are not the synthetic birds it was exported with"
    diff = [k for k in SYNTH_KEYS if recorded.get(k) != actual.get(k)]
    if diff:
        pairs = ", ".join(f"{k} {recorded.get(k)!r} vs {actual.get(k)!r}" for k in diff)
        return f"it was trained on other synthetic data ({pairs}; generator vs study)"
    if list(classes) != list(trained):
        return f"its classes {trained} are not the study's {classes}"
    return ""
