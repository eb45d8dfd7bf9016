"""GAN augmentation: the study's DCGAN baseline, a data-efficient conditional GAN, and honest measurement.

Flow: ``data.load_images`` -> ``train.train_gan`` (run folder with checkpoints and sample grids) ->
``sample.write_samples`` (a split-folder dataset to mix into training) -> ``evaluate.gan_metrics``
(FD-lite0 / KID-lite0 / CAS) and ``ablation.run_ablation`` (does GAN data help a classifier?).
"""

from birdlens.augment.gan.config import ARCHS, GANConfig
from birdlens.augment.gan.diffaug import diff_augment
from birdlens.augment.gan.metrics import distance_report, frechet_distance, kernel_distance, mmd2_unbiased

__all__ = [
    "ARCHS",
    "GANConfig",
    "diff_augment",
    "distance_report",
    "frechet_distance",
    "kernel_distance",
    "mmd2_unbiased",
]
