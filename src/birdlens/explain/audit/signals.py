"""Two signals that tell a shortcut region from a part of the bird without masks or boxes.

* :func:`others_object`: where the bird is, taken from the model itself. The evidence for the image's *other*
  likely classes lies on the bird (that is what tells birds apart), so a class whose evidence sits where no
  other class looks is off the object, and a class that looks at the bird's head is on it.
* :func:`pixel_agreement`: a planted (or real-world: watermark, tag) mark has nearly the same pixels in every
  image of its class; a bird part in a photo never does, so agreement among the class's images, beyond the
  agreement of other classes' images at the same place, is a mark.
"""

from __future__ import annotations

import numpy as np


def others_object(others_maps: np.ndarray, level: float) -> np.ndarray:
    """Bool ``[N, H, W]``: per image, where the mean of its other classes' maps ``[N, K, H, W]`` reaches
    ``level`` of its maximum (each map min-max normalised first, so no one class dominates).

    An image whose maps are all zero gets an all-False estimate: nothing is known of its object there.
    """
    m = np.nan_to_num(others_maps.astype(np.float64), nan=0.0).clip(min=0)
    top = m.reshape(*m.shape[:2], -1).max(2)[..., None, None]
    mean = (m / np.where(top > 0, top, 1.0)).mean(1)
    peak = mean.reshape(len(mean), -1).max(1)[:, None, None]
    return (mean >= level * peak) & (peak > 0)


def agreeing_pixels(
    images: np.ndarray, region: np.ndarray, tol: float, quorum: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(mask [H, W], median [H, W, 3])``: the pixels of ``region`` where at least ``quorum`` of ``images
    [N, H, W, 3]`` lie within ``tol`` (0–255, every channel) of the per-pixel median, and that median.

    A quorum rather than all of them, since a cue planted with probability p is missing from some images.
    """
    mask = np.zeros(region.shape, bool)
    median = np.zeros((*region.shape, 3))
    if not region.any() or len(images) == 0:
        return mask, median
    px = images[:, region].astype(np.float64)  # [N, P, 3]
    med = np.median(px, axis=0)
    close = (np.abs(px - med[None]) <= tol).all(2)  # [N, P]
    mask[region] = close.mean(0) >= quorum
    median[region] = med
    return mask, median


def pixel_agreement(images: np.ndarray, region: np.ndarray, tol: float, quorum: float) -> float:
    """Share of ``region``'s pixels that :func:`agreeing_pixels` finds: the images show the same thing there."""
    if not region.any():
        return 0.0
    return float(agreeing_pixels(images, region, tol, quorum)[0].sum() / region.sum())


def carries(
    images: np.ndarray, mask: np.ndarray, median: np.ndarray, tol: float, quorum: float
) -> np.ndarray:
    """Bool ``[N]``: the images that already show the mark (at least ``quorum`` of the ``mask`` pixels within
    ``tol`` of ``median``), for which pasting it is no test; all False for an empty mask."""
    if not mask.any():
        return np.zeros(len(images), bool)
    close = (np.abs(images[:, mask].astype(np.float64) - median[mask][None]) <= tol).all(2)
    return close.mean(1) >= quorum


def mark_extent(seed: np.ndarray, exclusive: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: the 8-connected parts of ``exclusive`` (pixels the class's images share and other
    classes' do not) that touch ``seed``: the whole mark a piece of which the evidence points at, since a
    global mark such as a frame moves the model only when it is all there."""
    from scipy.ndimage import label

    parts, _ = label(exclusive, structure=np.ones((3, 3), bool))
    keep = np.unique(parts[seed & exclusive])
    return np.isin(parts, keep[keep > 0])
