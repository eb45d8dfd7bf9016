"""The embedded default dataset: procedurally drawn, part-based synthetic birds (after FunnyBirds, ICCV 2023).

Each class is a combination of part attributes a person can name (beak shape and colour, crest, wing pattern,
tail, eye ring, head pattern, legs); each image comes with a part mask, and any bird can be re-rendered with
one part removed, which gives ground truth for *where* the evidence is and *how much* each part matters.

    >>> from birdlens.data.synth import generate_dataset, render_bird, load_spec
    >>> manifest = generate_dataset("data/synth", classes=10, per_class=100)      # doctest: +SKIP
    >>> spec = load_spec("data/synth", manifest[0].path)                          # doctest: +SKIP
    >>> img, mask = render_bird(spec, 224, remove="beak")                         # doctest: +SKIP
"""

from birdlens.data.synth.catalog import (
    ATTRIBUTES,
    DRAW_ORDER,
    PART_IDS,
    PARTS,
    ClassDef,
    class_catalog,
    class_name,
    differing_parts,
    parts_summary,
)
from birdlens.data.synth.dataset import generate_dataset, load_parts, load_spec, load_specs, png_bytes
from birdlens.data.synth.render import SUPERSAMPLE, part_coverage, part_footprint, render_bird
from birdlens.data.synth.sheet import PART_PALETTE, colour_mask, contact_sheet
from birdlens.data.synth.spec import BirdSpec, sample_spec

__all__ = [
    "ATTRIBUTES",
    "DRAW_ORDER",
    "PARTS",
    "PART_IDS",
    "PART_PALETTE",
    "SUPERSAMPLE",
    "BirdSpec",
    "ClassDef",
    "class_catalog",
    "class_name",
    "colour_mask",
    "contact_sheet",
    "differing_parts",
    "generate_dataset",
    "load_parts",
    "load_spec",
    "load_specs",
    "part_coverage",
    "part_footprint",
    "parts_summary",
    "png_bytes",
    "render_bird",
    "sample_spec",
]
