"""The default GAN for small bird datasets: a class-conditional residual GAN (SNGAN / BigGAN family).

Why each piece (all standard, chosen because the data are tiny, tens of images per class):

* residual generator with **conditional batch norm** (Dumoulin et al.; Miyato & Koyama): the class changes
  the per-channel gain and bias of every normalisation layer, so one network serves every species and they
  share what birds have in common;
* **spectral normalisation** in both networks (Miyato et al. 2018; Zhang et al. 2019 for G): bounds each
  layer's Lipschitz constant, the main fix for an overconfident discriminator on little data;
* **projection discriminator** (Miyato & Koyama 2018): logit = psi(h) + <embed(y), h>, the conditioning that
  works best for class-conditional GANs;
* optional **per-pixel noise inputs** (StyleGAN, Karras et al. 2019; ``noise=True``): a learned per-channel
  scale (initially 0) times a fresh noise map after each generator convolution, so that a small generator can
  draw grain and fine texture instead of a smooth function of ``z``. Why it is there: the cgan's samples are
  blurred and FD-lite0 punishes blur hard. Why it is off: its early lead on the synthetic birds did not last
  (numbers: docs/benchmarks.md, "GAN");
* **hinge loss** (``losses.py``), **EMA** of the generator weights for sampling (``ema.py``) and DiffAugment
  (``diffaug.py``) are wired in by the trainer.

Spectral norm is ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per training forward).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

_NOISE_RNG: contextvars.ContextVar[torch.Generator | None] = contextvars.ContextVar("noise_rng", default=None)


@contextlib.contextmanager
def noise_source(gen: torch.Generator | None) -> Iterator[None]:
    """Draw the generator's noise inputs from ``gen`` (a CPU generator) inside the block.

    Why a context and not an attribute: the trainer draws them from its checkpointed RNG, so a resumed run
    reproduces the uninterrupted one, and sampling draws them from a fixed seed, so the same ``z`` gives the same
    image; a generator object stored on the module would not survive the EMA's deep copy or a state dict.
    Outside any block the global torch RNG is used.
    """
    token = _NOISE_RNG.set(gen)
    try:
        yield
    finally:
        _NOISE_RNG.reset(token)


class NoiseInjection(nn.Module):
    """``h + scale[c] * n`` with one standard normal map ``n`` per image shared by the channels (StyleGAN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gen = _NOISE_RNG.get()
        b, _, height, width = h.shape
        if gen is None:
            n = torch.randn(b, 1, height, width, device=h.device, dtype=h.dtype)
        else:  # drawn on the CPU: the same numbers on any device
            n = torch.randn(b, 1, height, width, generator=gen).to(h.device, h.dtype)
        return h + self.scale.view(1, -1, 1, 1) * n


def _sn(m: nn.Module) -> nn.Module:
    return spectral_norm(m)


def _n_blocks(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if 2 ** (n + 2) != image_size or n < 2:
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return n


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without its own affine; a per-class gain (init 1) and bias (init 0) replace it."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class GBlock(nn.Module):
    """CBN-ReLU-up-conv-CBN-ReLU-conv, plus an upsampled 1x1 shortcut (``noise``: noise after each conv)."""

    def __init__(self, cin: int, cout: int, num_classes: int, noise: bool = False) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(cin, num_classes)
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, 1, 1))
        self.bn2 = ConditionalBatchNorm2d(cout, num_classes)
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = _sn(nn.Conv2d(cin, cout, 1))
        self.noise1: nn.Module = NoiseInjection(cout) if noise else nn.Identity()
        self.noise2: nn.Module = NoiseInjection(cout) if noise else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2, mode="nearest")
        h = self.noise2(self.conv2(F.relu(self.bn2(self.noise1(self.conv1(h)), y))))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResGenerator(nn.Module):
    """z -> linear -> 4x4 -> one GBlock per doubling -> BN-ReLU-conv-tanh. ``width`` sets the narrowest layer;
    ``noise`` adds the per-pixel noise inputs (see the module doc)."""

    def __init__(
        self, num_classes: int, image_size: int = 64, z_dim: int = 128, width: int = 32, noise: bool = False
    ) -> None:
        super().__init__()
        self.num_classes, self.image_size, self.z_dim = num_classes, image_size, z_dim
        n = _n_blocks(image_size)
        chans = [width * min(8, 2 ** (n - i)) for i in range(n + 1)]  # 64px, w=32: 256 256 128 64 32
        self.linear = _sn(nn.Linear(z_dim, chans[0] * 16))
        self.blocks = nn.ModuleList(GBlock(a, b, num_classes, noise) for a, b in itertools.pairwise(chans))
        self.bn = nn.BatchNorm2d(chans[-1])
        self.out = _sn(nn.Conv2d(chans[-1], 3, 3, 1, 1))
        self._c0 = chans[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(z.shape[0], self._c0, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class DBlock(nn.Module):
    """(ReLU)-conv-ReLU-conv(-avgpool) with a 1x1 (+avgpool) shortcut; the first block skips the leading ReLU."""

    def __init__(self, cin: int, cout: int, down: bool = True, first: bool = False) -> None:
        super().__init__()
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = _sn(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # "optimized" first block: pool before the 1x1 conv (Miyato et al.)
            s = F.avg_pool2d(s, 2) if self.down else s
            s = self.skip(s) if self.skip is not None else s
        else:
            s = self.skip(s) if self.skip is not None else s
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ProjectionDiscriminator(nn.Module):
    """Residual down-blocks to 4x4, one more block, ReLU + sum pooling, then linear + class projection."""

    def __init__(self, num_classes: int, image_size: int = 64, width: int = 32) -> None:
        super().__init__()
        self.num_classes, self.image_size = num_classes, image_size
        n = _n_blocks(image_size)
        chans = [3] + [width * min(8, 2**i) for i in range(n)]  # 64px, w=32: 3 32 64 128 256
        self.blocks = nn.ModuleList(
            DBlock(a, b, down=True, first=(i == 0)) for i, (a, b) in enumerate(itertools.pairwise(chans))
        )
        self.final = DBlock(chans[-1], chans[-1], down=False)
        self.linear = _sn(nn.Linear(chans[-1], 1))
        self.embed = _sn(nn.Embedding(num_classes, chans[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            h = block(h)
        h = F.relu(self.final(h)).sum(dim=(2, 3))
        return self.linear(h).flatten() + (self.embed(y) * h).sum(dim=1)
