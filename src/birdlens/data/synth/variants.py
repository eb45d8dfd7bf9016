"""Controlled variants of a stored bird for ground-truth metrics: the same bird on another background, and two
birds of different classes side by side in one image.

Each variant is a pure function of the stored spec(s) and a small integer, never of global random state, so a
metric that asks for "background 1 of this image" gets the same pixels in every run and on every machine.
(Removing one part needs no variant: ``render_bird(spec, size, remove=part)`` does it.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from birdlens.data.synth.background import render_background
from birdlens.data.synth.geometry import Pose, bird_extent, bird_shapes
from birdlens.data.synth.render import SUPERSAMPLE, finish, paint_bird, render_bird
from birdlens.data.synth.spec import BirdSpec

#: Salt of the derived background seeds (so they never coincide with the dataset's own draws).
_BACKGROUND_SALT = 0xB6C0
#: Each bird of a pair is shrunk to this share of its size so that two fit side by side.
PAIR_SCALE = 0.7
_PAIR_MARGIN = 0.02


def background_seed(spec: BirdSpec, k: int) -> int:
    """The ``k``-th replacement background of a bird (``k >= 1``), derived from its own background seed."""
    if k < 1:
        raise ValueError(f"replacement background index must be >= 1, got {k}")
    rng = np.random.default_rng([spec.background_seed, k, _BACKGROUND_SALT])
    return int(rng.integers(2**31 - 1))


def with_background(spec: BirdSpec, k: int) -> BirdSpec:
    """The same bird, pose and colours on its ``k``-th replacement background: only the scene changes."""
    return dataclasses.replace(spec, background_seed=background_seed(spec, k))


def render_on_background(spec: BirdSpec, size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, part mask) of the bird on its ``k``-th replacement background; the mask equals the original's."""
    return render_bird(with_background(spec, k), size)


def _placed(spec: BirdSpec, lo: float, hi: float) -> BirdSpec:
    """The bird shrunk by ``PAIR_SCALE`` (more if it would not fit) and centred inside the horizontal band ``[lo, hi]``."""
    shapes = bird_shapes(spec.attributes, spec.shape)
    scale = spec.scale * PAIR_SCALE
    for _ in range(40):  # a long-tailed, long-beaked bird may still be wider than its half: shrink it
        x0, y0, x1, y1 = bird_extent(shapes, Pose(0.0, 0.0, scale, spec.angle, spec.facing))
        if x1 - x0 <= hi - lo and y1 - y0 <= 1 - 2 * _PAIR_MARGIN:
            break
        scale *= 0.95
    # centre the extent in the band (x) and in the image (y); the pose's origin is the body's centre
    x = 0.5 * (lo + hi) - 0.5 * (x0 + x1)
    y = 0.5 - 0.5 * (y0 + y1)
    return dataclasses.replace(spec, x=round(x, 4), y=round(y, 4), scale=round(scale, 4))


def pair_specs(left: BirdSpec, right: BirdSpec) -> tuple[BirdSpec, BirdSpec]:
    """The two birds as placed in :func:`render_pair`: ``left`` in the left half, ``right`` in the right."""
    return (
        _placed(left, _PAIR_MARGIN, 0.5 - _PAIR_MARGIN),
        _placed(right, 0.5 + _PAIR_MARGIN, 1 - _PAIR_MARGIN),
    )


def render_pair(left: BirdSpec, right: BirdSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, bird mask) of two birds side by side on ``left``'s background (no perch: neither stands on it).

    Mask values: 0 background, 1 the left bird, 2 the right bird. The birds never overlap (each keeps to its
    own half), so explaining the left bird's class should light up the left half of the mask.
    """
    a, b = pair_specs(left, right)
    n = size * SUPERSAMPLE
    rgb = render_background(left.background_seed, size, SUPERSAMPLE, perch=None).copy()
    labels = np.zeros((n, n), np.uint8)
    paint_bird(rgb, labels, a)
    first = labels > 0
    paint_bird(rgb, labels, b)
    second = (labels > 0) & ~first
    which = np.zeros((n, n), np.uint8)
    which[first], which[second] = 1, 2
    img, mask = finish(rgb, which, left.background_seed, size)
    return img, mask
