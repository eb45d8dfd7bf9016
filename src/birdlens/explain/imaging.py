"""Small image operations on torch tensors shared by the methods (blur, resize, per-image scaling)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def minmax_per_image(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``(m - min) / (eps + max(m - min))`` per image, exactly pytorch-grad-cam's ``scale_cam_image``."""
    flat = maps.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / (eps + flat.max(1, keepdim=True).values)
    return flat.view_as(maps)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, half-pixel centres (== ``cv2.resize`` INTER_LINEAR when upsampling)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """``cv2.blur(img, (k, k))`` on ``[..., H, W]``: normalised box filter, anchor at ``k // 2``, border
    ``BORDER_REFLECT_101``, accumulated in float64 like OpenCV does for float images."""
    if k <= 1:
        return x.clone()
    dtype = x.dtype
    y = x.to(torch.float64)
    lo, hi = k // 2, k - 1 - k // 2
    for dim in (-1, -2):
        n = y.shape[dim]
        if max(lo, hi) >= n:
            raise ValueError(f"blur kernel {k} too large for an image side of {n} (must be < {2 * n})")
        idx = torch.arange(-lo, n + hi, device=y.device).abs()
        idx = torch.where(idx >= n, 2 * (n - 1) - idx, idx)  # reflect-101
        padded = y.index_select(dim if dim >= 0 else y.ndim + dim, idx)
        c = padded.cumsum(dim)
        zero = torch.zeros_like(c.narrow(dim, 0, 1))
        c = torch.cat([zero, c], dim)
        y = (c.narrow(dim, k, n) - c.narrow(dim, 0, n)) / k
    return y.to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with reflect padding, the one blur of birdlens' explain code
    (IG's blurred baseline, LIME's blur fill, the IG overlay, the metrics' blurred substrate).

    ``radius``: kernel half-width (default ``ceil(3 sigma)``), shrunk to what reflect padding allows on small
    images. Linear and normalised: blurring the normalised image equals normalising the blurred photo, and a
    constant image stays constant.
    """
    if sigma <= 0:
        return x.clone()
    r = max(1, math.ceil(3 * sigma)) if radius is None else int(radius)
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r <= 0:
        return x
    y = x if x.is_floating_point() else x.float()
    t = torch.arange(-r, r + 1, dtype=y.dtype, device=y.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = y.shape[1]
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.to(x.dtype)
