"""Render a :class:`BirdSpec` to an RGB image and a part mask, optionally with one part left out.

How it works (and why part removal is exact):

1. The background is drawn at ``SUPERSAMPLE`` x the output size.
2. Parts are painted back to front (``DRAW_ORDER``) into a *material* canvas at that resolution: every
   pixel holds the id of the last material that covered it (a part's fill, a decoration, its outline).
   Leaving a part out changes exactly the high-resolution pixels where that part was the visible one:
   they now show what was painted before it (the body under a wing, or the background).
3. Colours are looked up from the materials (with a soft shading field) and the image is box-downsampled
   by ``SUPERSAMPLE`` (anti-aliasing). An output pixel changes under removal only if its block held a
   visible pixel of the part: that set is the part's *footprint* (:func:`part_footprint`); every other
   pixel is byte-identical. (Sensor noise is then added at output resolution in proportion to each
   pixel's background share, so it too changes only inside the footprint.)
4. The mask is the label at each output pixel's centre sub-sample: crisp, and always inside the footprint.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from birdlens.data.synth import colors as C
from birdlens.data.synth.background import background_noise, render_background
from birdlens.data.synth.catalog import DRAW_ORDER, PART_IDS, PARTS
from birdlens.data.synth.geometry import bird_shapes, leg_foot_y
from birdlens.data.synth.spec import BirdSpec

#: Supersampling factor: 3 gives smooth edges and a true centre sub-sample for the mask.
SUPERSAMPLE = 3
_OUTLINE_DARKEN = 0.45


def _flat(p: np.ndarray, x0: int, y0: int) -> list[float]:
    return (p - (x0, y0)).ravel().tolist()


def _draw(polys: list[np.ndarray], shape: tuple[int, int], x0: int, y0: int, line: int = 0) -> np.ndarray:
    im = Image.new("L", (shape[1], shape[0]), 0)
    d = ImageDraw.Draw(im)
    for p in polys:
        if line:
            closed = np.concatenate([p, p[:1]])
            d.line(_flat(closed, x0, y0), fill=1, width=line, joint="curve")
        else:
            d.polygon(_flat(p, x0, y0), fill=1)
    return np.asarray(im) > 0


def _render_hi(spec: BirdSpec, size: int, remove: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 (N, N, 3), part labels uint8 (N, N)) at N = size * SUPERSAMPLE, before noise."""
    if remove is not None and remove not in PART_IDS:
        raise ValueError(f"unknown part {remove!r}; parts are {', '.join(PARTS)}")
    n = size * SUPERSAMPLE
    pose = spec.pose
    foot = pose.apply(np.array([[0.05, leg_foot_y(spec.attributes, spec.shape)]]), 1.0)[0]
    rgb = render_background(spec.background_seed, size, SUPERSAMPLE, perch=(foot[0], foot[1], spec.angle))
    rgb = rgb.copy()
    labels = np.zeros((n, n), np.uint8)
    paint_bird(rgb, labels, spec, remove)
    return rgb, labels


def paint_bird(rgb: np.ndarray, labels: np.ndarray, spec: BirdSpec, remove: str | None = None) -> None:
    """Paint the bird of ``spec`` over a high-resolution canvas in place (``rgb`` (N, N, 3), ``labels`` (N, N)).

    A canvas may already hold another bird: several birds in one image are painted one after the other.
    """
    n = labels.shape[0]
    pose = spec.pose
    shapes = bird_shapes(spec.attributes, spec.shape)
    # pixel polygons and crop boxes of the parts to draw; all later work happens inside the bird's box
    todo = []
    for part in DRAW_ORDER:
        if part == remove or part not in shapes:
            continue
        ps = shapes[part]
        base = [pose.apply(p, n) for p in ps.base]
        ow = round(ps.outline * pose.scale * n) if ps.outline > 0 else 0
        pts = np.concatenate(base)
        pad = ow + 2
        x0, y0 = max(math.floor(pts[:, 0].min()) - pad, 0), max(math.floor(pts[:, 1].min()) - pad, 0)
        x1, y1 = min(math.ceil(pts[:, 0].max()) + pad, n), min(math.ceil(pts[:, 1].max()) + pad, n)
        if x1 > x0 and y1 > y0:
            todo.append((part, ps, base, ow, x0, y0, x1, y1))
    if not todo:
        return
    bx0, by0 = min(t[4] for t in todo), min(t[5] for t in todo)
    bx1, by1 = max(t[6] for t in todo), max(t[7] for t in todo)
    mat = np.zeros((by1 - by0, bx1 - bx0), np.uint8)  # material id of the visible paint
    shade = np.ones((by1 - by0, bx1 - bx0), np.float32)  # lighting factor of that paint
    lut: list[tuple[int, ...]] = [(0, 0, 0)]
    mat_part: list[int] = [0]
    for part, ps, base, ow, x0, y0, x1, y1 in todo:
        hw = (y1 - y0, x1 - x0)
        colour = tuple(spec.colours[ps.colour])
        local = np.zeros(hw, np.uint8)
        base_m = _draw(base, hw, x0, y0)
        lut.append(colour)
        mat_part.append(PART_IDS[part])
        local[base_m] = len(lut) - 1
        for polys, key in ps.decorations:
            m = _draw([pose.apply(p, n) for p in polys], hw, x0, y0) & base_m
            lut.append(tuple(spec.colours[key]))
            mat_part.append(PART_IDS[part])
            local[m] = len(lut) - 1
        if ow:
            m = _draw(base, hw, x0, y0, line=ow)
            lut.append(C.scale(colour, _OUTLINE_DARKEN))  # type: ignore[arg-type]
            mat_part.append(PART_IDS[part])
            local[m] = len(lut) - 1
        cov = local > 0
        region = (slice(y0 - by0, y1 - by0), slice(x0 - bx0, x1 - bx0))
        mat[region][cov] = local[cov]
        if ps.shade is not None:
            # a soft sphere lit from the top-left of the image
            c = pose.apply(np.array([ps.shade[:2]]), n)[0]
            r = ps.shade[2] * pose.scale * n
            cx, cy = c[0] - 0.3 * r, c[1] - 0.45 * r
            yy, xx = np.ogrid[y0:y1, x0:x1]
            d2 = ((xx - cx) ** 2 + (yy - cy) ** 2).astype(np.float32) / np.float32((1.7 * r) ** 2)
            field = np.float32(1.15) - np.float32(0.42) * np.minimum(d2, np.float32(1.0))
            shade[region][cov] = field[cov]
        else:
            shade[region][cov] = 1.0

    box = (slice(by0, by1), slice(bx0, bx1))
    fg = mat > 0
    lut_arr = np.asarray(lut, np.float32)
    rgb[box][fg] = np.clip(lut_arr[mat[fg]] * shade[fg][:, None] + 0.5, 0, 255).astype(np.uint8)
    labels[box][fg] = np.asarray(mat_part, np.uint8)[mat[fg]]


def _block_sum(a: np.ndarray, size: int, dtype: type = np.uint16) -> np.ndarray:
    """Sum over each SUPERSAMPLE x SUPERSAMPLE block: strided slice adds (much faster than reshape-sum)."""
    s = SUPERSAMPLE
    out = np.zeros((size, size, *a.shape[2:]), dtype)
    for dy in range(s):
        for dx in range(s):
            out += a[dy::s, dx::s]
    return out


def render_bird(spec: BirdSpec, size: int = 224, remove: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB (size, size, 3), uint8 part mask (size, size)); ``remove`` leaves one part out.

    Mask values: 0 background, ``i + 1`` for ``PARTS[i]`` (the visible part at each pixel's centre).
    With ``remove=part`` every pixel outside that part's footprint is byte-identical to the full render.
    """
    rgb_hi, labels = _render_hi(spec, size, remove)
    return finish(rgb_hi, labels, spec.background_seed, size)


def finish(
    rgb_hi: np.ndarray, labels: np.ndarray, noise_seed: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Downsample a high-resolution canvas to ``size`` and add the background's sensor noise: (image, mask)."""
    s2 = SUPERSAMPLE * SUPERSAMPLE
    summed = _block_sum(rgb_hi, size)
    bg_count = _block_sum(labels == 0, size)
    noise = background_noise(noise_seed, size)
    # noise only where the background shows, in proportion: the bird itself stays clean
    img = ((summed * 2 + s2) // (2 * s2)).astype(np.int16)  # block mean, rounded half up, integer-exact
    img += (noise * bg_count[..., None].astype(np.int16)) // s2
    img = np.clip(img, 0, 255).astype(np.uint8)
    c = SUPERSAMPLE // 2
    mask = np.ascontiguousarray(labels[c::SUPERSAMPLE, c::SUPERSAMPLE])
    return img, mask


def part_coverage(spec: BirdSpec, size: int = 224) -> np.ndarray:
    """float32 (len(PARTS), size, size): share of each output pixel where each part is the visible one.

    Soft masks for explanation metrics; ``part_coverage(...)[i] > 0`` is the footprint of ``PARTS[i]``.
    """
    _, labels = _render_hi(spec, size, None)
    s2 = np.float32(SUPERSAMPLE * SUPERSAMPLE)
    return np.stack([_block_sum(labels == i + 1, size).astype(np.float32) / s2 for i in range(len(PARTS))])


def part_footprint(spec: BirdSpec, size: int, part: str) -> np.ndarray:
    """bool (size, size): the output pixels that ``render_bird(spec, size, remove=part)`` may change."""
    if part not in PART_IDS:
        raise ValueError(f"unknown part {part!r}; parts are {', '.join(PARTS)}")
    _, labels = _render_hi(spec, size, None)
    return _block_sum(labels == PART_IDS[part], size) > 0
