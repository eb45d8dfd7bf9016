"""GAN augmentation: the study's DCGAN baseline, a data-efficient conditional GAN, and honest measurement.

Flow: ``data.load_images`` -> ``train.train_gan`` (run folder with checkpoints and sample grids) ->
``sample.write_samples`` (a split-folder dataset to mix into training) -> ``evaluate.gan_metrics``
(FD-lite0 / KID-lite0 / CAS). Whether GAN data help a classifier is a study experiment: ``birdlens.study.ablation``.
"""

from birdlens.utils.lazy import lazy_exports

# Lazy exports: ``birdlens --help`` must not pay for importing torch (seconds on this CPU).
_LAZY = {
    "ARCHS": "birdlens.augment.gan.config",
    "GANConfig": "birdlens.augment.gan.config",
    "diff_augment": "birdlens.augment.gan.diffaug",
    "distance_report": "birdlens.augment.gan.metrics",
    "frechet_distance": "birdlens.augment.gan.metrics",
    "kernel_distance": "birdlens.augment.gan.metrics",
    "mmd2_unbiased": "birdlens.augment.gan.metrics",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
