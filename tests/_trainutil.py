"""Tiny runs for the training/evaluation/explanation tests: a labelled image folder (generated, a few kB,
deterministic), the smallest probe config, and an untrained CNN saved as a run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from birdlens.models import DataConfig, create_model
from birdlens.runs.trained import TrainedModel, save_weights
from birdlens.train import TrainConfig
from birdlens.utils.atomic import write_json

COLOURS = [(200, 40, 40), (40, 160, 60), (50, 70, 210), (220, 200, 40), (150, 60, 170)]


def make_image_folder(
    root: Path,
    n_classes: int = 3,
    train: int = 8,
    valid: int = 2,
    test: int = 2,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """``root/{train,valid,test}/CLASS_k/*.png``: each class a colour with a bright square at its own place,
    plus noise, so even a tiny network separates them after a few steps."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("valid", valid), ("test", test)):
        for c in range(n_classes):
            d = root / split / f"CLASS {chr(65 + c)}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(
                    np.array(COLOURS[c % len(COLOURS)], dtype=np.float64)[None, None, :]
                    + rng.normal(0, 35, size=(size, size, 3)),
                    0,
                    255,
                )
                q = size // 4
                y0, x0 = (c * q) % (size - q), (c * 2 * q) % (size - q)
                img[y0 : y0 + q, x0 : x0 + q] = 255
                Image.fromarray(img.astype(np.uint8)).save(d / f"{split}_{c}_{i}.png")
    return root


def tiny_probe_config(data: Path, root: Path) -> TrainConfig:
    """The smallest real training run: a 32 px ``simple_cnn`` probe into ``root/run``, its cache in
    ``root/features``."""
    return TrainConfig(
        data=str(data),
        out=str(root / "run"),
        model="simple_cnn",
        mode="probe",
        image_size=32,
        feature_cache=str(root / "features"),
        quiet=True,
    )


def untrained_cnn(classes: list[str], size: int = 64) -> TrainedModel:
    """A seeded, untrained ``simple_cnn`` as a :class:`TrainedModel` (the explainers need a model, not a good one)."""
    torch.manual_seed(0)
    model = create_model("simple_cnn", num_classes=len(classes), pretrained=False).eval()
    dc = DataConfig(
        input_size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0
    )
    return TrainedModel(
        model=model,
        classes=classes,
        data_config=dc,
        model_name="simple_cnn",
        cam_layer="features.2.act",
        meta={"image_size": size},
    )


def save_run(trained: TrainedModel, run: Path) -> Path:
    """``run/best.safetensors`` and ``run/meta.json`` of ``trained``: what ``load_trained`` reads back."""
    save_weights(trained.model, run / "best.safetensors")
    write_json(
        run / "meta.json",
        {
            "model": trained.model_name,
            "classes": trained.classes,
            "data_config": trained.data_config.to_dict(),
            "image_size": trained.meta["image_size"],
            "cam_layer": trained.cam_layer,
        },
    )
    return run
