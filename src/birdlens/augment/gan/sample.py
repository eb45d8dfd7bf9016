"""Write generated images as a dataset that training can mix in: ``OUT/train/<CLASS>/gan_XXXX.png`` + manifest.

The manifest is a normal birdlens ``manifest.csv`` (split ``train``), so ``Manifest.from_csv`` reads it and
it can be concatenated with a real manifest. ``OUT/gan.json`` records which run, checkpoint iteration, seed
and generator (EMA or raw) produced the images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from birdlens.augment.gan.data import to_uint8
from birdlens.augment.gan.evaluate import sample_images
from birdlens.augment.gan.train import CHECKPOINT, load_generator
from birdlens.data.manifest import Manifest, Record, normalise_label
from birdlens.utils import console
from birdlens.utils.atomic import atomic_path, write_json


def write_samples(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    per_class: int,
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    split: str = "train",
    batch_size: int = 64,
    quiet: bool | None = None,
    weights: str = "auto",
    force: bool = False,
) -> Manifest:
    """Generate ``per_class`` images for every class of the run (or ``classes``) and write them + manifest.csv.

    A folder that is not empty is refused unless ``force``: it may be a real dataset, whose ``manifest.csv``
    would be replaced. With ``force`` the old ``gan_*.png`` go first, so a smaller ``per_class`` leaves none behind.
    """
    loaded = load_generator(run, weights=weights)
    G, cfg, run_classes = loaded.G, loaded.cfg, loaded.classes
    assert cfg.z_dim is not None
    wanted = [normalise_label(c) for c in classes] if classes else list(run_classes)
    unknown = sorted(set(wanted) - set(run_classes))
    if unknown:
        raise ValueError(f"the GAN was not trained on {unknown}; it knows {run_classes}")
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(
                f"{out} is not empty: write the samples to a new folder (and mix the manifests), "
                "or pass --force to replace the GAN images there"
            )
        for old in out.glob(f"{split}/*/gan_*.png"):
            old.unlink()
    records: list[Record] = []
    with console.loop_progress(len(wanted), "sampling", quiet) as bar:
        for n_done, name in enumerate(wanted, 1):
            label = run_classes.index(name)
            # one seed per class, so adding classes later does not change the images of the others
            imgs = to_uint8(
                sample_images(G, torch.full((per_class,), label), cfg.z_dim, seed=seed * 100_003 + label)
            )
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(imgs):
                path = folder / f"gan_{i:04d}.png"
                with atomic_path(path, suffix=".png") as tmp:
                    Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
                records.append(Record(path=path, label=name, split=split))
            bar.update(n_done, name)
    manifest = Manifest(records, out)
    manifest.to_csv(out / "manifest.csv")
    ckpt = Path(run) / CHECKPOINT if Path(run).is_dir() else Path(run)
    write_json(
        out / "gan.json",
        {
            "run": str(Path(run).resolve()),
            "checkpoint": str(ckpt.resolve()),
            "arch": cfg.arch,
            "iterations": loaded.iteration,
            "image_size": cfg.image_size,
            "seed": seed,
            "per_class": per_class,
            "classes": wanted,
            "generator": loaded.weights,
        },
    )
    return manifest
