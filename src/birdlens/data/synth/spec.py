"""``BirdSpec``: everything that determines one synthetic image, as plain JSON.

A spec is drawn once (seeded) and stored next to the dataset, so any later stage can re-render the exact
same image, with or without one part, at any size, without re-running the generator's random draws.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from birdlens.data.synth import colors as C
from birdlens.data.synth.catalog import ClassDef
from birdlens.data.synth.geometry import Pose, bird_extent, bird_shapes

SPEC_VERSION = 1
_MARGIN = 0.03  # keep the whole bird this far inside the image (fraction of the side)


@dataclass
class BirdSpec:
    """One image: class, attributes, pose, colours, shape jitters and the background's seed."""

    class_index: int
    class_name: str
    attributes: dict[str, str]
    x: float
    y: float
    scale: float
    angle: float
    facing: str
    colours: dict[str, list[int]]
    shape: dict[str, float] = field(default_factory=dict)
    background_seed: int = 0
    version: int = SPEC_VERSION

    @property
    def pose(self) -> Pose:
        return Pose(self.x, self.y, self.scale, self.angle, self.facing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BirdSpec:
        if d.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise ValueError(
                f"BirdSpec version {d.get('version')} is not supported (expected {SPEC_VERSION})"
            )
        return cls(
            class_index=int(d["class_index"]),
            class_name=str(d["class_name"]),
            attributes={str(k): str(v) for k, v in d["attributes"].items()},
            x=float(d["x"]),
            y=float(d["y"]),
            scale=float(d["scale"]),
            angle=float(d["angle"]),
            facing=str(d["facing"]),
            colours={str(k): [int(c) for c in v] for k, v in d["colours"].items()},
            shape={str(k): float(v) for k, v in d.get("shape", {}).items()},
            background_seed=int(d.get("background_seed", 0)),
            version=int(d.get("version", SPEC_VERSION)),
        )

    @classmethod
    def from_json(cls, text: str) -> BirdSpec:
        return cls.from_dict(json.loads(text))


def _r(x: float, nd: int = 4) -> float:
    # rounded so the JSON is short and the spec that is rendered is exactly the one that is stored
    return round(float(x), nd)


def sample_spec(cls: ClassDef, rng: np.random.Generator) -> BirdSpec:
    """Draw one bird of class ``cls``: pose, colour jitter within the class ranges, shape jitter, background."""
    a = cls.attributes
    body = C.sample_hsv(rng, C.BODY_FAMILIES[a["body_colour"]])
    colours: dict[str, C.RGB] = {
        "body": body,
        "head": C.scale(body, rng.uniform(0.95, 1.1)),
        "wing": C.scale(body, rng.uniform(0.7, 0.88)),
        "tail": C.scale(body, rng.uniform(0.6, 0.8)),
        "crest": C.scale(body, rng.uniform(0.85, 1.15)),
        "cap": C.sample_hsv(rng, (0.0, 180.0, (0.0, 0.2), (0.05, 0.14))),
        "beak": C.sample_hsv(rng, C.BEAK_COLOURS[a["beak_colour"]]),
        "eye_ring": C.sample_hsv(rng, C.EYE_RINGS[a["eye_ring"]]),
        "pupil": C.sample_hsv(rng, (0.0, 180.0, (0.0, 0.1), (0.02, 0.06))),
        "highlight": C.sample_hsv(rng, (0.0, 180.0, (0.0, 0.05), (0.93, 1.0))),
        "legs": C.sample_hsv(rng, C.LEG_COLOURS[int(rng.integers(len(C.LEG_COLOURS)))]),
    }
    # wing pattern: light on a dark wing, dark on a light one, so it always shows
    if C.luminance(colours["wing"]) < 120:
        colours["pattern"] = C.sample_hsv(rng, (45.0, 15.0, (0.0, 0.15), (0.9, 1.0)))
    else:
        colours["pattern"] = C.sample_hsv(rng, (0.0, 180.0, (0.0, 0.2), (0.06, 0.16)))
    shape = {k: _r(rng.uniform(0.92, 1.08)) for k in ("head", "beak", "crest", "wing", "tail", "legs")}
    shape["body_aspect"] = _r(rng.uniform(0.9, 1.1))
    scale = rng.uniform(0.32, 0.42)
    angle = rng.uniform(-12.0, 12.0)
    facing = "right" if rng.random() < 0.5 else "left"
    shapes = bird_shapes(a, shape)
    for _ in range(20):  # shrink a bird that would not fit (long tail + long beak + long legs)
        x0, y0, x1, y1 = bird_extent(shapes, Pose(0.5, 0.5, scale, angle, facing))
        if max(x1 - x0, y1 - y0) <= 1 - 2 * _MARGIN:
            break
        scale *= 0.95
    # place the bird anywhere it fits (the extent is measured around the centre at 0.5, 0.5)
    lo_x, hi_x = _MARGIN - x0 + 0.5, 1 - _MARGIN - x1 + 0.5
    lo_y, hi_y = _MARGIN - y0 + 0.5, 1 - _MARGIN - y1 + 0.5
    x = rng.uniform(lo_x, hi_x) if hi_x > lo_x else 0.5 * (lo_x + hi_x)
    y = rng.uniform(lo_y, hi_y) if hi_y > lo_y else 0.5 * (lo_y + hi_y)
    return BirdSpec(
        class_index=cls.index,
        class_name=cls.name,
        attributes=dict(a),
        x=_r(x),
        y=_r(y),
        scale=_r(scale),
        angle=_r(angle, 2),
        facing=facing,
        colours={k: list(v) for k, v in colours.items()},
        shape=shape,
        background_seed=int(rng.integers(2**31 - 1)),
    )
