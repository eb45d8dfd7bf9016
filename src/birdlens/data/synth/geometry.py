"""Bird shapes as polygons in the bird's own frame, and the pose transform into the image.

Local frame: the bird faces right (+x), y points down (image convention), the body's centre is the origin and
one unit is one body length. Every part is a :class:`PartShape`: filled base polygons (the part's extent),
decorations clipped to the base (a cap, wing stripes, a pupil), an optional dark outline and a shading
centre. Polygons rather than pixel formulas keep the drawing in Pillow's C rasteriser (fast) and make the
shapes resolution-independent: the same spec renders at any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Poly = np.ndarray  # (n, 2) float64, local units


@dataclass
class PartShape:
    """One part: base polygons (their union is the part), decorations clipped to it, outline, shading."""

    base: list[Poly]
    colour: str  # key into BirdSpec.colours
    decorations: list[tuple[list[Poly], str]] = field(default_factory=list)
    outline: float = 0.0  # outline width in body lengths (0 = none)
    shade: tuple[float, float, float] | None = None  # (cx, cy, radius) in local units, or None = flat


def ellipse(cx: float, cy: float, rx: float, ry: float, rot_deg: float = 0.0, n: int = 40) -> Poly:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    return rotate(pts, rot_deg) + np.array([cx, cy])


def rotate(pts: Poly, deg: float) -> Poly:
    """Rotate about the origin; positive angles turn clockwise on screen (y points down)."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return pts @ np.array([[c, s], [-s, c]])


def thick_line(p0: tuple[float, float], p1: tuple[float, float], width: float) -> Poly:
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    ox, oy = -dy / n * width / 2, dx / n * width / 2
    return np.array([[x0 + ox, y0 + oy], [x1 + ox, y1 + oy], [x1 - ox, y1 - oy], [x0 - ox, y0 - oy]])


def _poly(points: list[tuple[float, float]]) -> Poly:
    return np.asarray(points, dtype=np.float64)


# --------------------------------------------------------------------------------------------- the parts
BODY_TILT = -18.0  # the body leans forward-up, like a perching bird


def bird_shapes(attributes: dict[str, str], shape: dict[str, float]) -> dict[str, PartShape]:
    """Every part of a bird with these attributes and shape jitters (``shape`` factors are ~1.0)."""
    a = attributes
    aspect = shape.get("body_aspect", 1.0)
    head = _Head.place(shape, aspect)
    out: dict[str, PartShape] = {
        "body": PartShape(
            [ellipse(0.0, 0.0, 0.5, 0.3 * aspect, BODY_TILT, 56)],
            "body",
            outline=0.014,
            shade=(0.05, -0.12, 0.55),
        ),
        "head": _head(a, head),
        "beak": _beak(a["beak_shape"], shape.get("beak", 1.0), head),
        "eye": _eye(a["eye_ring"], head),
    }
    crest = _crest(a["crest"], shape.get("crest", 1.0), head)
    if crest is not None:
        out["crest"] = crest
    out["wing"] = _wing(a["wing_pattern"], shape.get("wing", 1.0))
    out["tail"] = _tail(a["tail_shape"], shape.get("tail", 1.0))
    out["legs"] = _legs(leg_foot_y(attributes, shape))
    return out


@dataclass(frozen=True)
class _Head:
    """Where the head sits (centre ``hx, hy``, radius ``r``) and its eye (``ex, ey``): beak, eye and crest hang on it."""

    hx: float
    hy: float
    r: float
    ex: float
    ey: float

    @classmethod
    def place(cls, shape: dict[str, float], aspect: float) -> _Head:
        r = 0.2 * shape.get("head", 1.0)
        hx, hy = 0.42, -0.33 * aspect - 0.05
        return cls(hx, hy, r, hx + 0.36 * r, hy - 0.12 * r)


def _head(a: dict[str, str], h: _Head) -> PartShape:
    hx, hy, r, ey = h.hx, h.hy, h.r, h.ey
    head_deco: list[tuple[list[Poly], str]] = []
    if a["head_pattern"] == "BLACK-CAPPED":
        cap = rotate(_poly([(-2.0, -2.0), (2.0, -2.0), (2.0, -0.1), (-2.0, 0.15)]) * r, -8.0) + np.array(
            [hx, hy]
        )
        head_deco.append(([cap], "cap"))
    elif a["head_pattern"] == "MASKED":
        band = _poly(
            [
                (hx - 0.3 * r, ey - 0.3 * r),
                (hx + 2 * r, ey - 0.26 * r),
                (hx + 2 * r, ey + 0.3 * r),
                (hx - 0.3 * r, ey + 0.34 * r),
            ]
        )
        head_deco.append(([band], "cap"))
    return PartShape(
        [ellipse(hx, hy, r, r, 0.0, 40)], "head", head_deco, outline=0.014, shade=(hx, hy, r * 1.2)
    )


def _beak(kind: str, b: float, h: _Head) -> PartShape:
    """Anchored at the front of the head."""
    bx, by = h.hx + 0.8 * h.r, h.hy + 0.12 * h.r
    if kind == "CONE":  # short and deep, a finch
        pts = [(-0.03, -0.085), (0.17 * b, 0.0), (-0.03, 0.085)]
    elif kind == "LONG":  # long and thin, a probing bill
        pts = [
            (-0.03, -0.04),
            (0.2 * b, -0.012),
            (0.4 * b, 0.012),
            (0.4 * b, 0.022),
            (0.2 * b, 0.03),
            (-0.03, 0.045),
        ]
    else:  # HOOKED: upper mandible curving down over the lower, a raptor / parrot
        pts = [
            (-0.03, -0.08),
            (0.08 * b, -0.085),
            (0.15 * b, -0.06),
            (0.2 * b, -0.01),
            (0.205 * b, 0.05),
            (0.185 * b, 0.095),
            (0.16 * b, 0.05),
            (0.12 * b, 0.035),
            (0.06 * b, 0.06),
            (-0.03, 0.07),
        ]
    beak = _poly(pts) + np.array([bx, by])
    return PartShape([beak], "beak", outline=0.01)


def _eye(eye_ring: str, h: _Head) -> PartShape:
    """Ring, pupil, highlight."""
    ex, ey = h.ex, h.ey
    ring_r = 0.066 if eye_ring != "NONE" else 0.045
    return PartShape(
        [ellipse(ex, ey, ring_r, ring_r, 0.0, 28)],
        "eye_ring",
        [
            ([ellipse(ex, ey, 0.034, 0.034, 0.0, 24)], "pupil"),
            ([ellipse(ex + 0.012, ey - 0.013, 0.011, 0.011, 0.0, 12)], "highlight"),
        ],
    )


def _crest(kind: str, c: float, h: _Head) -> PartShape | None:
    """Behind the head, sprouting from its top-back; None for a bird without one."""
    hx, hy, r = h.hx, h.hy, h.r
    if kind == "SPIKY":
        spikes = []
        for ang, length in ((-75.0, 0.19), (-105.0, 0.24), (-135.0, 0.22), (-160.0, 0.16)):
            base_ang = math.radians(ang)
            tip_ang = math.radians(ang - 22.0)
            px, py = hx + 0.85 * r * math.cos(base_ang), hy + 0.85 * r * math.sin(base_ang)
            tx, ty = hx + (r + length * c) * math.cos(tip_ang), hy + (r + length * c) * math.sin(tip_ang)
            nx, ny = -math.sin(base_ang) * 0.045, math.cos(base_ang) * 0.045
            spikes.append(_poly([(px + nx, py + ny), (tx, ty), (px - nx, py - ny)]))
        return PartShape(spikes, "crest", outline=0.008)
    if kind == "ROUND":
        ang = math.radians(-118.0)
        cx, cy = hx + 0.95 * r * math.cos(ang), hy + 0.95 * r * math.sin(ang)
        return PartShape(
            [ellipse(cx, cy, 0.15 * c, 0.12 * c, -28.0, 32)], "crest", outline=0.012, shade=(cx, cy, 0.16)
        )
    return None


def _wing(pattern: str, w: float) -> PartShape:
    """A leaf over the body, pointed at the back, with its pattern."""
    wcx, wcy, wrot = -0.07, -0.02, BODY_TILT + 8.0
    t = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
    wx = 0.33 * w * np.cos(t)
    wy = 0.15 * np.sin(t) * np.where(np.cos(t) < 0, 1.0 + 0.75 * np.cos(t), 1.0)  # narrows to a tip
    wing_local = np.stack([wx - 0.04, wy], axis=1)  # wing frame
    wing_deco = _wing_pattern(pattern)

    def to_body(p: Poly) -> Poly:
        return rotate(p, wrot) + np.array([wcx, wcy])

    return PartShape(
        [to_body(wing_local)],
        "wing",
        [([to_body(p) for p in ps], k) for ps, k in wing_deco],
        outline=0.012,
        shade=(wcx + 0.05, wcy - 0.06, 0.36),
    )


def _wing_pattern(pattern: str) -> list[tuple[list[Poly], str]]:
    """The wing's decorations in the wing's own frame."""
    wing_deco: list[tuple[list[Poly], str]] = []
    if pattern == "STRIPED":  # three long feather stripes along the wing
        stripes = [thick_line((-0.42, dy * 0.9), (0.18, dy), 0.026) for dy in (-0.065, 0.0, 0.065)]
        wing_deco.append((stripes, "pattern"))
    elif pattern == "SPOTTED":
        spots = [
            ellipse(x, y, 0.03, 0.03, 0.0, 16)
            for x, y in (
                (0.16, -0.04),
                (0.16, 0.05),
                (0.06, -0.08),
                (0.06, 0.01),
                (0.06, 0.09),
                (-0.05, -0.05),
                (-0.05, 0.05),
                (-0.16, 0.0),
                (-0.25, -0.02),
            )
        ]
        wing_deco.append((spots, "pattern"))
    elif pattern == "BAR":  # one broad bar across the wing
        wing_deco.append(([_poly([(0.0, -0.3), (0.09, -0.3), (0.07, 0.3), (-0.02, 0.3)])], "pattern"))
    return wing_deco


def _tail(tail_kind: str, tl: float) -> PartShape:
    """From the rear of the body, pointing back and down."""
    if tail_kind == "FAN":
        arc = [
            (0.34 * tl * math.cos(math.radians(d)), 0.34 * tl * math.sin(math.radians(d)))
            for d in np.linspace(152.0, 208.0, 9)
        ]
        tpts = [(0.04, -0.065), *arc[::-1], (0.04, 0.065)]  # the arc runs top (208 deg) -> bottom
    elif tail_kind == "FORKED":
        tpts = [(0.04, -0.06), (-0.46 * tl, -0.17), (-0.27 * tl, -0.005), (-0.46 * tl, 0.15), (0.04, 0.06)]
    else:  # LONG
        tpts = [(0.04, -0.05), (-0.6 * tl, -0.06), (-0.67 * tl, -0.01), (-0.6 * tl, 0.04), (0.04, 0.05)]
    tail = rotate(_poly(tpts), BODY_TILT - 10.0) + np.array([-0.38, 0.1])
    return PartShape([tail], "tail", outline=0.012, shade=(-0.5, 0.05, 0.4))


def _legs(foot_y: float) -> PartShape:
    """Two thin legs with toes, ending on the perch."""
    legs = []
    for lx in (0.0, 0.12):
        top = (lx, 0.12)
        foot = (lx - 0.02, foot_y)
        legs.append(thick_line(top, foot, 0.03))
        for tx, ty in ((0.09, 0.005), (0.075, -0.025), (-0.06, 0.0)):
            legs.append(thick_line(foot, (foot[0] + tx, foot[1] + ty), 0.022))
    return PartShape(legs, "legs")


def leg_foot_y(attributes: dict[str, str], shape: dict[str, float]) -> float:
    """Where the feet are (local y): the perch is drawn through this line."""
    return (0.46 if attributes["legs"] == "SHORT" else 0.64) * shape.get("legs", 1.0)


@dataclass(frozen=True)
class Pose:
    """Where the bird is: centre (fractions of the image), body length (fraction), rotation, facing."""

    x: float
    y: float
    scale: float
    angle: float
    facing: str  # "right" | "left"

    def apply(self, pts: Poly, size_px: float) -> Poly:
        """Local units -> pixel coordinates of an image ``size_px`` wide (and high)."""
        p = pts.copy()
        if self.facing == "left":
            p[:, 0] = -p[:, 0]
        return rotate(p * self.scale, self.angle) * size_px + np.array([self.x, self.y]) * size_px


def bird_extent(shapes: dict[str, PartShape], pose: Pose) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of every base polygon after the pose, in image fractions."""
    pts = np.concatenate([pose.apply(p, 1.0) for s in shapes.values() for p in s.base])
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())
