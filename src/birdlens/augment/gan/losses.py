"""GAN losses: the study's binary cross-entropy (for ``dcgan``) and the hinge loss (for ``cgan``).

Both take raw discriminator logits. The generator side of BCE is the usual non-saturating form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def bce_g(fake: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


LOSSES = {"hinge": (hinge_d, hinge_g), "bce": (bce_d, bce_g)}


class LeCam:
    """LeCam regularisation of the discriminator (Tseng et al., CVPR 2021), for training on little data.

    Why: with few real images D's logits drift apart without bound and it memorises the training set; LeCam
    pulls D(real) towards the running mean of D(fake) and D(fake) towards that of D(real), which bounds the
    gap (the paper shows it complements DiffAugment).

        R = E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2]

    where ``a_real`` / ``a_fake`` are exponential moving averages (``decay``) of the batch means, updated with
    the current batch before R is computed (the first batch sets them). The anchors are plain floats so that a
    checkpoint stores them exactly (``state_dict``).
    """

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.anchor_real: float | None = None
        self.anchor_fake: float | None = None

    def _ema(self, anchor: float | None, value: float) -> float:
        return value if anchor is None else self.decay * anchor + (1.0 - self.decay) * value

    def __call__(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        # one device-to-host copy for both means: this runs in every D update, and each copy waits for the GPU
        mean_real, mean_fake = torch.stack([real.detach().mean(), fake.detach().mean()]).tolist()
        self.anchor_real = self._ema(self.anchor_real, mean_real)
        self.anchor_fake = self._ema(self.anchor_fake, mean_fake)
        return F.relu(real - self.anchor_fake).pow(2).mean() + F.relu(self.anchor_real - fake).pow(2).mean()

    def state_dict(self) -> dict[str, float | None]:
        return {"anchor_real": self.anchor_real, "anchor_fake": self.anchor_fake}

    def load_state_dict(self, d: dict[str, float | None]) -> None:
        self.anchor_real, self.anchor_fake = d["anchor_real"], d["anchor_fake"]


def mode_seeking(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mode-seeking term (MSGAN, Mao et al., CVPR 2019) for a batch whose two halves share their labels.

    Why: a conditional generator tends to ignore its noise and draw one image per class (mode collapse, seen on
    the synthetic birds); this term grows when two noises of the same class give near-identical images.
    Returns ``1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5)``, to be added (weighted) to the generator loss.
    """
    h = fake.shape[0] // 2
    if h == 0 or fake.shape[0] != 2 * h:
        raise ValueError(f"mode seeking needs an even batch of pairs, got {fake.shape[0]}")
    ratio = (fake[:h] - fake[h:]).abs().mean() / (z[:h] - z[h:]).abs().mean()
    return 1.0 / (ratio + 1e-5)
