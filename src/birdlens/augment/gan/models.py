"""Build the generator/discriminator pair of an architecture from a resolved :class:`GANConfig`."""

from __future__ import annotations

from torch import nn

from birdlens.augment.gan.cgan import ProjectionDiscriminator, ResGenerator
from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.dcgan import DCGANDiscriminator, DCGANGenerator


def build_generator(cfg: GANConfig, num_classes: int) -> nn.Module:
    c = cfg.resolved()
    assert c.z_dim is not None and c.g_width is not None
    if c.arch == "dcgan":
        return DCGANGenerator(num_classes, c.image_size, z_dim=c.z_dim, width=c.g_width)
    return ResGenerator(num_classes, c.image_size, z_dim=c.z_dim, width=c.g_width, noise=c.noise_inputs)


def build_discriminator(cfg: GANConfig, num_classes: int) -> nn.Module:
    c = cfg.resolved()
    assert c.d_width is not None
    if c.arch == "dcgan":
        return DCGANDiscriminator(num_classes, c.image_size, width=c.d_width)
    return ProjectionDiscriminator(num_classes, c.image_size, width=c.d_width)
