"""Cluttered, class-independent backgrounds: a blurred scene, crisp clutter, a perch and sensor noise.

Everything here depends only on the spec's ``background_seed`` (and the perch on where the feet are), never
on the class, so a classifier cannot win on the background. The clutter reuses the birds' own colours
(beak yellows and oranges, eye-ring reds, wing blacks and whites) and shapes (dots, bars, triangles) so
that "a yellow blob somewhere" is not evidence for a yellow beak.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from birdlens.data.synth import colors as C

_SCENES = {
    # name: (top colour HSV range, bottom colour HSV range)
    "sky": ((205.0, 20.0, (0.2, 0.55), (0.75, 0.98)), (190.0, 30.0, (0.05, 0.3), (0.8, 1.0))),
    "foliage": ((110.0, 30.0, (0.35, 0.7), (0.25, 0.55)), (85.0, 30.0, (0.3, 0.6), (0.35, 0.7))),
    "earth": ((35.0, 15.0, (0.2, 0.5), (0.45, 0.75)), (25.0, 15.0, (0.3, 0.6), (0.25, 0.5))),
    "dusk": ((280.0, 40.0, (0.2, 0.5), (0.35, 0.7)), (25.0, 25.0, (0.3, 0.7), (0.6, 0.9))),
    "grey": ((0.0, 180.0, (0.0, 0.1), (0.5, 0.85)), (0.0, 180.0, (0.0, 0.1), (0.3, 0.7))),
}
_CLUTTER_COLOURS = (
    (52.0, 6.0, (0.8, 0.95), (0.9, 1.0)),  # beak yellow
    (24.0, 6.0, (0.85, 1.0), (0.9, 1.0)),  # beak orange
    (0.0, 6.0, (0.85, 1.0), (0.8, 0.95)),  # eye-ring red
    (0.0, 180.0, (0.0, 0.1), (0.05, 0.15)),  # black
    (0.0, 180.0, (0.0, 0.06), (0.9, 1.0)),  # white
    (0.0, 180.0, (0.3, 0.9), (0.3, 0.95)),  # anything
)


def _colour(rng: np.random.Generator) -> C.RGB:
    return C.sample_hsv(rng, _CLUTTER_COLOURS[int(rng.integers(len(_CLUTTER_COLOURS)))])


def _leaf(cx: float, cy: float, length: float, angle: float) -> list[tuple[float, float]]:
    t = np.linspace(0.0, math.pi, 10)
    half = [(length * (0.5 - 0.5 * math.cos(u)), 0.22 * length * math.sin(u)) for u in t]
    pts = half + [(x, -y) for x, y in half[::-1][1:-1]]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def render_background(
    seed: int, size: int, supersample: int, perch: tuple[float, float, float] | None = None
) -> np.ndarray:
    """uint8 (N, N, 3) with N = size * supersample. ``perch`` = (x, y, angle_deg) in image fractions."""
    rng = np.random.default_rng(seed)
    n = size * supersample
    scene = list(_SCENES)[int(rng.integers(len(_SCENES)))]
    top = np.array(C.sample_hsv(rng, _SCENES[scene][0]), dtype=np.float32)
    bot = np.array(C.sample_hsv(rng, _SCENES[scene][1]), dtype=np.float32)
    # the layers draw from one generator in this order, so each image's bytes stay fixed by its seed
    img = _soft_scene(rng, size, n, top, bot)
    d = ImageDraw.Draw(img)
    _twigs_and_leaves(d, rng, n)
    _distractors(d, rng, n)
    if perch is not None:
        _perch(d, rng, n, perch)
    return np.asarray(img, dtype=np.uint8)


def _soft_scene(rng: np.random.Generator, size: int, n: int, top: np.ndarray, bot: np.ndarray) -> Image.Image:
    """A soft, out-of-focus scene at low resolution, upsampled to ``n`` pixels (cheap bokeh)."""
    lo = max(size // 4, 16)
    g = np.linspace(0.0, 1.0, lo, dtype=np.float32)[:, None, None]
    soft = Image.fromarray(np.broadcast_to(top * (1 - g) + bot * g, (lo, lo, 3)).astype(np.uint8))
    d = ImageDraw.Draw(soft)
    for _ in range(int(rng.integers(6, 16))):
        cx, cy, r = rng.uniform(-0.1, 1.1) * lo, rng.uniform(-0.1, 1.1) * lo, rng.uniform(0.05, 0.3) * lo
        base = top if rng.random() < 0.5 else bot
        col = (
            tuple(int(v) for v in np.clip(base * rng.uniform(0.6, 1.35), 0, 255))
            if rng.random() < 0.7
            else _colour(rng)
        )
        d.ellipse((cx - r, cy - r * rng.uniform(0.5, 1.0), cx + r, cy + r), fill=col)
    # blurred and upsampled to the output size, then each pixel repeated to full resolution: the soft layer
    # has no edges to anti-alias, so a smooth resize to full resolution would cost more for the same look
    soft = soft.filter(ImageFilter.GaussianBlur(lo / 64)).resize((size, size), Image.Resampling.BILINEAR)
    return soft.resize((n, n), Image.Resampling.NEAREST)


def _twigs_and_leaves(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int) -> None:
    """Crisp clutter at full resolution: branches and leaves."""
    for _ in range(int(rng.integers(1, 4))):  # twigs
        x0, y0 = rng.uniform(0, 1, 2) * n
        ang = rng.uniform(0, 2 * math.pi)
        ln = rng.uniform(0.2, 0.7) * n
        d.line(
            (x0, y0, x0 + ln * math.cos(ang), y0 + ln * math.sin(ang)),
            fill=C.sample_hsv(rng, (28.0, 12.0, (0.3, 0.6), (0.2, 0.45))),
            width=max(1, int(rng.uniform(0.006, 0.02) * n)),
        )
    for _ in range(int(rng.integers(3, 12))):  # leaves
        leaf = _leaf(
            rng.uniform(0, 1) * n,
            rng.uniform(0, 1) * n,
            rng.uniform(0.06, 0.16) * n,
            rng.uniform(0, 2 * math.pi),
        )
        d.polygon(leaf, fill=C.sample_hsv(rng, (100.0, 40.0, (0.35, 0.8), (0.3, 0.75))))


def _distractors(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int) -> None:
    """Dots, bars and triangles in the birds' own colours, so a coloured blob is no evidence of a part."""
    for _ in range(int(rng.integers(3, 10))):
        cx, cy = rng.uniform(0, 1, 2) * n
        r = rng.uniform(0.01, 0.05) * n
        kind = int(rng.integers(3))
        col = _colour(rng)
        if kind == 0:
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
        elif kind == 1:
            ang = rng.uniform(0, 2 * math.pi)
            d.line(
                (cx, cy, cx + 3 * r * math.cos(ang), cy + 3 * r * math.sin(ang)),
                fill=col,
                width=max(1, int(r * 0.6)),
            )
        else:
            ang = rng.uniform(0, 2 * math.pi)
            d.polygon(
                [(cx + r * math.cos(ang + k * 2.1), cy + r * math.sin(ang + k * 2.1)) for k in range(3)],
                fill=col,
            )


def _perch(
    d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, perch: tuple[float, float, float]
) -> None:
    """The perch the bird stands on: it depends on the pose, never on the class."""
    px, py, pang = perch[0] * n, perch[1] * n, math.radians(perch[2] + rng.uniform(-8, 8))
    ln = 2.0 * n
    c, s = math.cos(pang), math.sin(pang)
    thick = rng.uniform(0.025, 0.045) * n
    # the perch's top edge passes through the feet
    ox, oy = -s * thick / 2, c * thick / 2
    bark = C.sample_hsv(rng, (28.0, 10.0, (0.35, 0.6), (0.25, 0.45)))
    d.line(
        (px - ln * c + ox, py - ln * s + oy, px + ln * c + ox, py + ln * s + oy),
        fill=bark,
        width=max(1, int(thick)),
    )
    d.line(
        (px - ln * c + ox * 0.4, py - ln * s + oy * 0.4, px + ln * c + ox * 0.4, py + ln * s + oy * 0.4),
        fill=C.scale(bark, 1.25),
        width=max(1, int(thick * 0.2)),
    )


def background_noise(seed: int, size: int) -> np.ndarray:
    """int16 (size, size, 3) sensor-like noise at output resolution, drawn from the background seed.

    Uniform integers (fast to draw); only its texture matters, it never carries class information.
    """
    rng = np.random.default_rng([seed, 7])
    amp = int(rng.integers(2, 9))
    return rng.integers(-amp, amp + 1, (size, size, 3), dtype=np.int16)
