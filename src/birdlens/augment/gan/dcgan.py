"""The study's DCGAN, kept as the baseline every other GAN is compared with.

The study describes a generator of five ``ConvTranspose2d`` layers with batch norm and LeakyReLU (tanh at the
end) and "a similar" discriminator, trained with the usual binary cross-entropy on one species. Here it is
written as Radford et al.'s DCGAN with exactly that shape: at 64 px, 4 -> 8 -> 16 -> 32 -> 64 in five
transposed convolutions; the discriminator mirrors it with strided convolutions, batch norm and LeakyReLU.

Two ways to use it, both faithful: *per class* (train on one species: ``classes=[...]`` with one name, so
``num_classes == 1``), or *class-conditional*: a learnt label embedding is concatenated to the noise vector
(generator) and a learnt per-class image-sized map is stacked on the input as a fourth channel (discriminator).
No spectral norm, no DiffAugment, no EMA: those belong to the ``cgan`` this baseline is measured against.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


def _n_up(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2  # 4x4 start
    if 2 ** (n + 2) != image_size or n < 2:
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return n


class DCGANGenerator(nn.Module):
    """z (+ label embedding) -> 4x4 by a transposed conv, then doubling transposed convs to ``image_size``."""

    def __init__(
        self, num_classes: int, image_size: int = 64, z_dim: int = 100, width: int = 64, embed_dim: int = 50
    ) -> None:
        super().__init__()
        self.num_classes, self.image_size, self.z_dim = num_classes, image_size, z_dim
        n = _n_up(image_size)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 1 else None
        in_dim = z_dim + (embed_dim if self.embed is not None else 0)
        chans = [width * min(8, 2 ** (n - 1 - i)) for i in range(n)]  # 64px: 8w, 4w, 2w, w
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, chans[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for a, b in itertools.pairwise(chans):
            layers += [
                nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False),
                nn.BatchNorm2d(b),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = z if self.embed is None else torch.cat([z, self.embed(y)], dim=1)
        return self.net(h[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Mirror of the generator: strided convs down to 4x4, then a 4x4 conv to one logit."""

    def __init__(self, num_classes: int, image_size: int = 64, width: int = 64) -> None:
        super().__init__()
        self.num_classes, self.image_size = num_classes, image_size
        n = _n_up(image_size)
        self.label_map = nn.Embedding(num_classes, image_size * image_size) if num_classes > 1 else None
        chans = [width * min(8, 2**i) for i in range(n)]  # 64px: w, 2w, 4w, 8w
        in_ch = 3 + (1 if self.label_map is not None else 0)
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, chans[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for a, b in itertools.pairwise(chans):
            layers += [
                nn.Conv2d(a, b, 4, 2, 1, bias=False),
                nn.BatchNorm2d(b),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.Conv2d(chans[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.label_map is not None:
            m = self.label_map(y).view(-1, 1, self.image_size, self.image_size)
            x = torch.cat([x, m], dim=1)
        return self.net(x).flatten()


def _dcgan_init(m: nn.Module) -> None:
    # Radford et al.: N(0, 0.02) weights, BN gamma ~ N(1, 0.02).
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
