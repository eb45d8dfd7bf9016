"""Measure a trained GAN against real images: FD-lite0 / KID-lite0 (overall, per class) and the
classification accuracy score (CAS: train a classifier on generated images only, test it on real ones).

The reference set is the real images the GAN was trained on (at the GAN's resolution); by default the same
number of images per class is generated, so real and fake sample sizes match and are reported.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from birdlens.augment.gan.data import ImageSet, to_unit
from birdlens.augment.gan.features import FeatureFn, Lite0Features, extract
from birdlens.augment.gan.metrics import distance_report
from birdlens.augment.gan.probe import linear_probe
from birdlens.augment.gan.train import LoadedGenerator, generate, load_generator


def sample_images(G: torch.nn.Module, labels: torch.Tensor, z_dim: int, seed: int = 0) -> torch.Tensor:
    """Generated images in [-1, 1] for the given labels, noise drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return generate(G, labels, torch.randn(len(labels), z_dim, generator=g))


def gan_metrics(
    run: str | os.PathLike[str] | LoadedGenerator,
    real: ImageSet,
    features: FeatureFn | None = None,
    per_class: int | None = None,
    test: ImageSet | None = None,
    seed: int = 0,
    kid_subset_size: int = 100,
    weights: str = "auto",
) -> dict[str, Any]:
    """FD-lite0/KID-lite0 of a run (folder, checkpoint, snapshot, or a generator already loaded from one: then
    ``weights`` is its own) against ``real`` (+ CAS on ``test``)."""
    loaded = run if isinstance(run, LoadedGenerator) else load_generator(run, weights=weights)
    G, cfg, classes = loaded.G, loaded.cfg, loaded.classes
    assert cfg.z_dim is not None
    if list(classes) != list(real.classes):
        raise ValueError(f"the run's classes {classes} differ from the data's {real.classes}")
    counts = torch.bincount(real.labels, minlength=len(classes))
    n = counts if per_class is None else torch.full_like(counts, per_class)
    fake_labels = torch.repeat_interleave(torch.arange(len(classes)), n)
    fake = sample_images(G, fake_labels, cfg.z_dim, seed)
    fn = features or Lite0Features()
    name = getattr(fn, "name", "custom")
    f_real = extract(fn, to_unit(real.images))
    f_fake = extract(fn, fake)
    rep = distance_report(
        f_real,
        real.labels.numpy(),
        f_fake,
        fake_labels.numpy(),
        classes,
        features=name,
        kid_subset_size=kid_subset_size,
        seed=seed,
    ).to_dict()
    rep["arch"], rep["iterations_trained"], rep["image_size"] = cfg.arch, loaded.iteration, cfg.image_size
    rep["generator"] = loaded.weights
    if test is not None:
        f_test = extract(fn, to_unit(test.images))
        rep["cas"] = classification_accuracy_score(
            f_fake, fake_labels.numpy(), f_test, test.labels.numpy(), seed
        )
        rep["cas"]["real_baseline"] = classification_accuracy_score(
            f_real, real.labels.numpy(), f_test, test.labels.numpy(), seed
        )["accuracy"]
    return rep


def classification_accuracy_score(
    f_fake: np.ndarray, y_fake: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """CAS (Ravuri & Vinyals 2019): a linear probe fitted on generated features, accuracy on real test features."""
    clf = linear_probe(f_fake, y_fake, seed)
    acc = float((clf.predict(f_test) == y_test).mean())
    return {
        "accuracy": acc,
        "n_train_generated": len(y_fake),
        "n_test_real": len(y_test),
        "classifier": "logistic-regression probe on lite0 features",
    }
