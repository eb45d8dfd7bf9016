"""Trivial maps every method is reported beside, so a number can be read against chance.

* ``random``: uniform noise on a 7 x 7 grid, bilinearly upsampled (``resolution=None``: i.i.d. per pixel),
  seeded per image. Smooth by default so that it has the blob statistics of a CAM: deleting random *blobs*
  is the fair chance level for a CAM, while scattered single pixels would be a different perturbation. It is
  the chance level of deletion/insertion, of the pointing game and of stability.
* ``centre``: a centred isotropic Gaussian (sigma = a quarter of the shorter side) that ignores the image.
  Bird photos are framed on the bird, so this "edge/centre" prior is a strong, content-free rival: a method
  that does not beat it on localisation has learned nothing a photographer's framing does not give away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BASELINES: tuple[str, ...] = ("random", "centre")


def random_maps(
    shape: tuple[int, int, int], seed: int = 0, offset: int = 0, resolution: int | None = 7
) -> torch.Tensor:
    """``[B, H, W]`` uniform noise; image ``i`` uses ``seed`` and ``offset + i`` (batch-size invariant)."""
    b, h, w = shape
    out = torch.empty(shape, dtype=torch.float32)
    for i in range(b):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + offset + i)
        if resolution:
            small = torch.rand((1, 1, resolution, resolution), generator=g)
            out[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        else:
            out[i] = torch.rand((h, w), generator=g)
    return out


def centre_maps(shape: tuple[int, int, int], sigma_frac: float = 0.25) -> torch.Tensor:
    """``[B, H, W]`` the same centred Gaussian for every image."""
    b, h, w = shape
    sigma = sigma_frac * min(h, w)
    y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    g = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return g.expand(b, h, w).clone()


def baseline_maps(name: str, shape: tuple[int, int, int], seed: int = 0, offset: int = 0) -> torch.Tensor:
    """The maps of baseline ``name`` (``random`` or ``centre``) for a batch of ``shape = (B, H, W)``."""
    if name == "random":
        return random_maps(shape, seed, offset)
    if name == "centre":
        return centre_maps(shape)
    raise ValueError(f"unknown baseline {name!r}; available: {', '.join(BASELINES)}")
