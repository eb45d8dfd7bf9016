"""Synthetic birds: catalogue, specs, rendering, masks and exact part removal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from birdlens.data.synth import (
    ATTRIBUTES,
    PART_IDS,
    PARTS,
    BirdSpec,
    class_catalog,
    class_name,
    differing_parts,
    part_coverage,
    part_footprint,
    render_bird,
    sample_spec,
)


def _specs(n_classes: int = 12, per_class: int = 1, seed: int = 0) -> list[BirdSpec]:
    cats = class_catalog(n_classes, seed)
    return [sample_spec(c, np.random.default_rng([seed, c.index, i])) for c in cats for i in range(per_class)]


# ------------------------------------------------------------------------------------------- catalogue
def test_catalog_names_unique_readable_and_parts_separate_every_pair() -> None:
    cats = class_catalog(40, seed=3)
    names = [c.name for c in cats]
    assert len(set(names)) == 40
    assert all(n == n.upper() and "  " not in n for n in names)
    for i, a in enumerate(cats):
        for b in cats[i + 1 :]:
            diff = a.differing_parts(b)
            assert diff == b.differing_parts(a)
            # body colour alone never separates two classes: >= 2 other parts differ
            assert len([p for p in diff if p != "body"]) >= 2


def test_catalog_is_seeded_and_prefix_stable() -> None:
    assert [c.name for c in class_catalog(10, 0)] == [c.name for c in class_catalog(20, 0)[:10]]
    assert [c.name for c in class_catalog(10, 0)] == [c.name for c in class_catalog(10, 0)]
    assert [c.name for c in class_catalog(10, 0)] != [c.name for c in class_catalog(10, 1)]


def test_class_name_determines_attributes() -> None:
    rng = np.random.default_rng(0)
    seen: dict[str, dict[str, str]] = {}
    for _ in range(2000):
        attrs = {k: v[int(rng.integers(len(v)))] for k, (_, v) in ATTRIBUTES.items()}
        name = class_name(attrs)
        assert seen.setdefault(name, attrs) == attrs, name


def test_attribute_values_are_spread_over_classes() -> None:
    cats = class_catalog(10, 0)
    for key, (_, values) in ATTRIBUTES.items():
        used = {c.attributes[key] for c in cats}
        assert len(used) >= min(len(values), 2), key


# ----------------------------------------------------------------------------------------------- specs
def test_spec_json_round_trip_renders_the_same_bytes() -> None:
    spec = _specs(3)[2]
    again = BirdSpec.from_json(spec.to_json())
    assert again == spec
    a, ma = render_bird(spec, 96)
    b, mb = render_bird(again, 96)
    assert a.tobytes() == b.tobytes() and ma.tobytes() == mb.tobytes()


def test_spec_rejects_other_versions() -> None:
    d = _specs(1)[0].to_dict()
    d["version"] = 999
    with pytest.raises(ValueError, match="version"):
        BirdSpec.from_dict(d)


# ------------------------------------------------------------------------------------------- rendering
def test_render_is_deterministic_and_seed_sensitive() -> None:
    s0, s1 = _specs(2, seed=0)[0], _specs(2, seed=1)[0]
    a1, m1 = render_bird(s0, 128)
    a2, m2 = render_bird(s0, 128)
    assert a1.dtype == np.uint8 and a1.shape == (128, 128, 3) and m1.shape == (128, 128)
    assert a1.tobytes() == a2.tobytes() and m1.tobytes() == m2.tobytes()
    b, _ = render_bird(s1, 128)
    assert np.abs(a1.astype(int) - b.astype(int)).mean() > 5


def test_every_part_the_class_has_is_in_the_mask() -> None:
    for spec in _specs(12):
        _, mask = render_bird(spec, 224)
        present = {PARTS[v - 1] for v in np.unique(mask) if v}
        expected = set(PARTS) - ({"crest"} if spec.attributes["crest"] == "NONE" else set())
        assert present == expected, (spec.class_name, present ^ expected)
        # the bird sits inside the picture, not cut by the border
        assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()


def _interior(mask: np.ndarray, part: str, iterations: int = 1) -> np.ndarray:
    return ndimage.binary_erosion(mask == PART_IDS[part], iterations=iterations)


def test_mask_aligns_with_drawn_parts() -> None:
    for spec in _specs(12):
        img, mask = render_bird(spec, 224)
        px = img.astype(int)
        # beak: flat colour with a darker outline (0.45x), so inside its mask most pixels have exactly the
        # spec's beak colour (+-1 for rounding) and every pixel is a mix of that colour and its outline
        beak = _interior(mask, "beak")
        c = np.asarray(spec.colours["beak"], float)
        assert beak.sum() >= 3, spec.class_name
        exact = (np.abs(px[beak] - c).max(1) <= 1).mean()
        assert exact > 0.75, (spec.class_name, exact)
        t = (px[beak].sum(1) + 0.5) / (c.sum() + 0.5)
        assert t.min() > 0.4
        assert np.abs(px[beak] - t[:, None] * c).max() <= 3, spec.class_name
        # body: shaded between x0.73 and x1.15 of the body colour (where it isn't outline)
        body = _interior(mask, "body", 2)
        base = np.asarray(spec.colours["body"], float)
        ratio = (px[body].sum(1) + 1) / (base.sum() + 1)
        ok = (ratio > 0.68) & (ratio < 1.2)
        assert ok.mean() > 0.97, (spec.class_name, ok.mean())
        # legs: the leg colour, never the body or background
        legs = mask == PART_IDS["legs"]
        assert np.abs(np.median(px[legs], axis=0) - spec.colours["legs"]).max() <= 40
        # eye: the ring colour is visible around the pupil
        eye = mask == PART_IDS["eye"]
        near_ring = (np.abs(px[eye] - spec.colours["eye_ring"]).max(1) <= 12).sum()
        near_pupil = (np.abs(px[eye] - spec.colours["pupil"]).max(1) <= 12).sum()
        assert near_pupil >= 1 and near_ring >= 1, spec.class_name


def test_wing_pattern_is_visible_inside_the_wing() -> None:
    for spec in _specs(12):
        img, mask = render_bird(spec, 224)
        wing = _interior(mask, "wing")
        near_pattern = (np.abs(img[wing].astype(int) - spec.colours["pattern"]).max(1) <= 20).mean()
        if spec.attributes["wing_pattern"] == "PLAIN":
            assert near_pattern < 0.02, spec.class_name
        else:
            assert near_pattern > 0.05, (spec.class_name, near_pattern)


@pytest.mark.parametrize("part", PARTS)
def test_removing_a_part_changes_only_its_footprint(part: str) -> None:
    for spec in _specs(6, per_class=1, seed=5):
        full, mask = render_bird(spec, 160)
        cut, mask_cut = render_bird(spec, 160, remove=part)
        foot = part_footprint(spec, 160, part)
        changed = (full != cut).any(axis=-1)
        assert not (changed & ~foot).any()  # nothing outside the footprint changes
        assert (mask_cut == mask)[~foot].all()
        assert not (mask_cut == PART_IDS[part]).any()  # the part is gone from the mask
        assert foot[mask == PART_IDS[part]].all()  # the mask lies inside the footprint
        if (mask == PART_IDS[part]).any():
            # where the part was seen, the picture changes (background or the part beneath shows)
            assert changed[mask == PART_IDS[part]].mean() > 0.9, (part, spec.class_name)
        else:
            assert part == "crest" and spec.attributes["crest"] == "NONE"
            assert full.tobytes() == cut.tobytes()


def test_removing_the_wing_shows_the_body_beneath() -> None:
    spec = _specs(1)[0]
    _, mask = render_bird(spec, 224)
    _, mask_cut = render_bird(spec, 224, remove="wing")
    was_wing = mask == PART_IDS["wing"]
    assert (mask_cut[was_wing] == PART_IDS["body"]).mean() > 0.7


def test_footprint_is_the_mask_grown_by_at_most_one_pixel() -> None:
    spec = _specs(2)[1]
    _, mask = render_bird(spec, 224)
    cov = part_coverage(spec, 224)
    assert cov.shape == (len(PARTS), 224, 224)
    assert np.allclose(cov.sum(0)[mask == 0], cov.sum(0)[mask == 0].clip(0, 1))
    assert np.allclose(cov.sum(0)[ndimage.binary_erosion(mask > 0, iterations=2)], 1.0)
    for i, part in enumerate(PARTS):
        foot = cov[i] > 0
        assert np.array_equal(foot, part_footprint(spec, 224, part))
        grown = ndimage.binary_dilation(mask == i + 1, structure=np.ones((3, 3)))
        assert not (foot & ~grown).any(), part


def test_unknown_part_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown part"):
        render_bird(_specs(1)[0], 64, remove="antenna")


def test_differing_parts_reports_changed_attribute_parts() -> None:
    a = class_catalog(1, 0)[0].attributes
    b = dict(
        a,
        beak_colour="BLACK" if a["beak_colour"] != "BLACK" else "YELLOW",
        tail_shape="LONG" if a["tail_shape"] != "LONG" else "FAN",
    )
    assert differing_parts(a, b) == ("beak", "tail")


def test_render_at_any_size() -> None:
    spec = _specs(1)[0]
    for size in (48, 100):
        img, mask = render_bird(spec, size)
        assert img.shape == (size, size, 3) and mask.shape == (size, size) and mask.max() > 0
