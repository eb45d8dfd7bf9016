"""Random draws of the stochastic metrics (ROAD's imputation noise, infidelity's and the sensitivities'
perturbations, random logit's other class), one generator per image seeded by ``(seed, image content)``.

Seeding per image, not per batch, is what makes an image's value independent of which images share its batch
and of the batch size (the invariance every metric is tested for), and makes two runs equal. The reference
libraries draw from one global generator in batch order instead; the parity tests inject these same draws
into them (their perturbation functions take them, or their generator call is patched).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def image_rngs(images: torch.Tensor, seed: int) -> list[np.random.Generator]:
    """One ``numpy.random.Generator`` per image, seeded with ``[seed, crc32(image bytes)]``."""
    x = images.detach().cpu().float().contiguous().numpy()
    return [np.random.default_rng([int(seed) % 2**32, zlib.crc32(x[i].tobytes())]) for i in range(x.shape[0])]
