"""Colour ranges for the synthetic birds, in HSV so that "a red bird" means a range, not one RGB value.

Body colour families deliberately overlap (a dark RED bird and a light BROWN bird can have the same
colour), so body colour is a weak cue and models must look at the parts. Part colours (beak, eye ring)
are jittered only a little so that they stay nameable.
"""

from __future__ import annotations

import colorsys

import numpy as np

RGB = tuple[int, int, int]

# family -> (hue centre in degrees, hue half-width, (sat lo, hi), (val lo, hi))
BODY_FAMILIES: dict[str, tuple[float, float, tuple[float, float], tuple[float, float]]] = {
    "RED": (0.0, 32.0, (0.5, 0.9), (0.5, 0.92)),
    "BROWN": (28.0, 22.0, (0.3, 0.7), (0.35, 0.7)),
    "YELLOW": (50.0, 24.0, (0.5, 0.9), (0.7, 0.97)),
    "GREEN": (110.0, 48.0, (0.35, 0.8), (0.45, 0.85)),
    "BLUE": (205.0, 48.0, (0.4, 0.85), (0.5, 0.9)),
    "GREY": (0.0, 180.0, (0.0, 0.18), (0.4, 0.8)),
}
BEAK_COLOURS: dict[str, tuple[float, float, tuple[float, float], tuple[float, float]]] = {
    "YELLOW": (52.0, 4.0, (0.8, 0.95), (0.9, 1.0)),
    "ORANGE": (24.0, 4.0, (0.85, 1.0), (0.9, 1.0)),
    "BLACK": (0.0, 180.0, (0.0, 0.2), (0.08, 0.16)),
}
EYE_RINGS: dict[str, tuple[float, float, tuple[float, float], tuple[float, float]]] = {
    "NONE": (0.0, 180.0, (0.0, 0.15), (0.12, 0.2)),
    "WHITE": (0.0, 180.0, (0.0, 0.06), (0.93, 1.0)),
    "YELLOW": (55.0, 4.0, (0.85, 1.0), (0.9, 1.0)),
    "RED": (0.0, 4.0, (0.85, 1.0), (0.8, 0.95)),
}
LEG_COLOURS: tuple[tuple[float, float, tuple[float, float], tuple[float, float]], ...] = (
    (10.0, 8.0, (0.25, 0.45), (0.7, 0.85)),  # pink
    (0.0, 180.0, (0.0, 0.1), (0.2, 0.35)),  # dark grey
    (35.0, 6.0, (0.6, 0.8), (0.6, 0.8)),  # orange-brown
)


def hsv_to_rgb(h_deg: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def sample_hsv(
    rng: np.random.Generator, spec: tuple[float, float, tuple[float, float], tuple[float, float]]
) -> RGB:
    hue, width, (s0, s1), (v0, v1) = spec
    return hsv_to_rgb(hue + rng.uniform(-width, width), rng.uniform(s0, s1), rng.uniform(v0, v1))


def scale(c: RGB, f: float) -> RGB:
    """Darken (f < 1) or lighten towards white (f > 1) a colour."""
    if f <= 1.0:
        return (round(c[0] * f), round(c[1] * f), round(c[2] * f))
    t = min(f - 1.0, 1.0)
    return tuple(round(x + (255 - x) * t) for x in c)  # type: ignore[return-value]


def luminance(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
