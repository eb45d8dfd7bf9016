"""The synthetic birds are a fixed function of their seed: the refactored generator draws the same pixels.

The digests were recorded with the generator before ``bird_shapes``, ``render_background`` and
``generate_dataset`` were split into named pieces (commit cebf443); they hash decoded pixels, not PNG bytes,
so a different zlib cannot change them. If a deliberate change to the drawing alters them, bump
``SPEC_VERSION`` and record the new digests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from birdlens.data.synth import generate_dataset
from birdlens.data.synth.background import render_background
from birdlens.data.synth.catalog import class_catalog
from birdlens.data.synth.geometry import bird_shapes
from birdlens.data.synth.spec import sample_spec

DATASET = "cfac1626d5cab2fa4ae88aa3d2c2f17dac8f5471c19fdb27d290c214423b1c02"
SHAPES = "f4ab430f7995bb5cb1f269c0b6a3e3a6fb09806c41c0b2498b7d0c2e1530562d"
BACKGROUNDS = "06239169817a36833490ca640c579273a1c6c4361c9f7198dfbd74d3ad5116a4"


def dataset_digest(root: Path) -> str:
    """Paths, pixels of every image and mask, the specs and the manifest of a generated dataset."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "parts.json"):
        h.update(f.relative_to(root).as_posix().encode())
        if f.suffix == ".png":
            with Image.open(f) as im:
                h.update(im.mode.encode())
                h.update(np.asarray(im).tobytes())
        else:
            h.update(f.read_bytes().replace(str(root).encode(), b"ROOT"))
    return h.hexdigest()


def shapes_digest() -> str:
    """Every part polygon of three birds of each of 60 classes (covers every attribute value)."""
    h = hashlib.sha256()
    for cls in class_catalog(60, 1):
        for i in range(3):
            spec = sample_spec(cls, np.random.default_rng([1, cls.index, i]))
            for name, part in bird_shapes(spec.attributes, spec.shape).items():
                h.update(repr((name, part.colour, part.outline, part.shade)).encode())
                polys = [*part.base, *(p for ps, _ in part.decorations for p in ps)]
                keys = [k for _, k in part.decorations]
                h.update(repr(keys).encode())
                for p in polys:
                    h.update(np.round(p, 9).tobytes())
    return h.hexdigest()


def backgrounds_digest() -> str:
    h = hashlib.sha256()
    for seed in range(40):
        h.update(render_background(seed, 48, 2, None if seed % 3 == 0 else (0.5, 0.7, 5.0)).tobytes())
    return h.hexdigest()


def test_bird_shapes_unchanged() -> None:
    assert shapes_digest() == SHAPES


def test_backgrounds_unchanged() -> None:
    assert backgrounds_digest() == BACKGROUNDS


def test_generated_dataset_unchanged_and_independent_of_workers(tmp_path: Path) -> None:
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        generate_dataset(root, classes=12, per_class=3, size=48, seed=11, quiet=True, workers=workers)
        assert dataset_digest(root) == DATASET, workers
