"""The parts of a synthetic bird and the species catalogue: each class is a combination of part attributes.

A class is defined the way a birder describes a species, by *field marks* on named parts ("black hooked
beak, spiky crest, wing bar"), so every difference between two classes lives in a part that the generator
can mask and remove. Body colour is an attribute too, but a weak one on purpose: its families overlap in
hue (see :mod:`birdlens.data.synth.colors`) and the catalogue guarantees that any two classes also differ in
at least ``MIN_PART_DISTANCE`` *other* parts, so a model cannot solve the task from body colour alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Part names; in a mask, value 0 is background and value ``i + 1`` is ``PARTS[i]``.
PARTS: tuple[str, ...] = ("body", "head", "beak", "eye", "crest", "wing", "tail", "legs")
PART_IDS: dict[str, int] = {p: i + 1 for i, p in enumerate(PARTS)}

#: Painter's order, back to front. A mask shows the part that is *visible* at a pixel: the legs' tops are
#: hidden by the body, the crest's base by the head, the body's middle by the wing, the head by the eye.
DRAW_ORDER: tuple[str, ...] = ("tail", "legs", "body", "wing", "crest", "head", "beak", "eye")

#: attribute -> (part it belongs to, possible values). The first value is the "plain" default that is left
#: out of class names (except for attributes in ``_ALWAYS_NAMED``).
ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "body_colour": ("body", ("RED", "BROWN", "YELLOW", "GREEN", "BLUE", "GREY")),
    "head_pattern": ("head", ("PLAIN", "BLACK-CAPPED", "MASKED")),
    "beak_colour": ("beak", ("YELLOW", "ORANGE", "BLACK")),
    "beak_shape": ("beak", ("CONE", "LONG", "HOOKED")),
    "eye_ring": ("eye", ("NONE", "WHITE", "YELLOW", "RED")),
    "crest": ("crest", ("NONE", "SPIKY", "ROUND")),
    "wing_pattern": ("wing", ("PLAIN", "STRIPED", "SPOTTED", "BAR")),
    "tail_shape": ("tail", ("FAN", "FORKED", "LONG")),
    "legs": ("legs", ("SHORT", "LONG")),
}
ATTRIBUTE_PART: dict[str, str] = {a: p for a, (p, _) in ATTRIBUTES.items()}

#: Two classes always differ in at least this many parts other than the body (its colour is a weak cue).
MIN_PART_DISTANCE = 2


@dataclass(frozen=True)
class ClassDef:
    """One synthetic species: its index, its human-readable name and its part attributes."""

    index: int
    name: str
    attributes: dict[str, str] = field(hash=False)

    def differing_parts(self, other: ClassDef) -> tuple[str, ...]:
        """Parts (in ``PARTS`` order) whose attributes differ between the two classes."""
        return differing_parts(self.attributes, other.attributes)

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "name": self.name, "attributes": dict(self.attributes)}


def differing_parts(a: dict[str, str], b: dict[str, str]) -> tuple[str, ...]:
    """Parts whose attribute values differ between two attribute dicts, in ``PARTS`` order."""
    parts = {ATTRIBUTE_PART[k] for k in ATTRIBUTES if a[k] != b[k]}
    return tuple(p for p in PARTS if p in parts)


def class_name(attributes: dict[str, str]) -> str:
    """Upper-case readable name, e.g. ``'RED BLACK-CAPPED YELLOW-HOOKED-BEAK SPIKY-CRESTED WING-BAR'``.

    Body colour and beak are always named; other attributes only when they differ from the plain bird
    (plain head, no eye ring, no crest, plain wing, fan tail, short legs). Every token belongs to one
    attribute value, so the name determines the attributes and distinct classes get distinct names.
    """
    a = attributes
    words = [a["body_colour"]]
    if a["head_pattern"] != "PLAIN":
        words.append(a["head_pattern"])
    words.append(f"{a['beak_colour']}-{a['beak_shape']}-BEAK")
    if a["eye_ring"] != "NONE":
        words.append(f"{a['eye_ring']}-EYED")
    if a["crest"] != "NONE":
        words.append(f"{a['crest']}-CRESTED")
    if a["wing_pattern"] != "PLAIN":
        words.append("WING-BAR" if a["wing_pattern"] == "BAR" else f"{a['wing_pattern']}-WING")
    if a["tail_shape"] != "FAN":
        words.append(f"{a['tail_shape']}-TAIL")
    if a["legs"] != "SHORT":
        words.append("LONG-LEGGED")
    return " ".join(words)


def _part_distance(a: dict[str, str], b: dict[str, str]) -> int:
    """Number of non-body parts that differ (``a`` and ``b`` may lack ``body_colour``)."""
    parts = {ATTRIBUTE_PART[k] for k in ATTRIBUTES if k != "body_colour" and a[k] != b[k]}
    return len(parts - {"body"})


def class_catalog(n_classes: int, seed: int = 0) -> list[ClassDef]:
    """``n_classes`` distinct species, seeded; a prefix-stable list (the first 10 of 20 are the 10).

    Part attributes: greedy over seeded draws, a candidate is kept when it differs from every kept class in
    at least :data:`MIN_PART_DISTANCE` non-body parts; values are drawn favouring the least used ones so
    that they stay balanced across classes. Body colour is then dealt out in *pairs* (classes 0 and 1 share
    a family, 2 and 3 the next, ...; an odd last class joins the previous pair): every class shares its body
    colour with another, so body colour alone can never tell a class from all others.
    """
    if n_classes < 1:
        raise ValueError("n_classes must be >= 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B1D]))
    names = [k for k in ATTRIBUTES if k != "body_colour"]
    usage = {k: dict.fromkeys(ATTRIBUTES[k][1], 0) for k in names}
    kept: list[dict[str, str]] = []
    failures = 0
    while len(kept) < n_classes:
        cand: dict[str, str] = {}
        for k in names:
            values = list(ATTRIBUTES[k][1])
            counts = np.array([usage[k][v] for v in values], dtype=float)
            # prefer rarely used values; randomness breaks ties and keeps variety
            weights = np.exp(-(counts - counts.min()) * 1.5)
            cand[k] = values[int(rng.choice(len(values), p=weights / weights.sum()))]
        if all(_part_distance(cand, other) >= MIN_PART_DISTANCE for other in kept):
            kept.append(cand)
            for k in names:
                usage[k][cand[k]] += 1
            failures = 0
        else:
            failures += 1
            if failures > 20000:
                raise ValueError(
                    f"cannot find {n_classes} classes that differ in >= {MIN_PART_DISTANCE} parts "
                    f"(found {len(kept)}); ask for fewer classes"
                )
    families = ATTRIBUTES["body_colour"][1]
    order = [families[int(i)] for i in np.random.default_rng([seed, 0xB0D7]).permutation(len(families))]
    out = []
    for i, attrs in enumerate(kept):
        pair = i // 2 if not (i == n_classes - 1 and i % 2 == 0 and i > 0) else (i - 1) // 2
        a = {"body_colour": order[pair % len(order)], **attrs}
        a = {k: a[k] for k in ATTRIBUTES}
        out.append(ClassDef(i, class_name(a), a))
    return out


def parts_summary(classes: list[ClassDef]) -> dict[str, object]:
    """What ``parts.json`` says about the classes: pairwise differing parts and each class's key parts.

    - ``pairwise[A][B]``: parts whose attributes differ between classes A and B.
    - ``classes[i].key_parts``: the parts that tell the class apart from its nearest look-alikes (the
      classes with the fewest differing non-body parts) -- its field marks. Body colour is never a key part
      because its ranges overlap between families.
    - ``classes[i].any_parts``: the parts that differ from at least one other class.
    - ``classes[i].absent_parts``: parts this class does not have (``crest`` when crest is NONE): removing them
      is a no-op and their masks are empty, although their *absence* can be evidence.
    """
    pairwise: dict[str, dict[str, list[str]]] = {}
    rows = []
    for c in classes:
        pairwise[c.name] = {}
        dists = {}
        any_parts: set[str] = set()
        for d in classes:
            if d is c:
                continue
            diff = c.differing_parts(d)
            pairwise[c.name][d.name] = list(diff)
            any_parts.update(diff)
            dists[d.name] = _part_distance(c.attributes, d.attributes)
        nearest = sorted(n for n, v in dists.items() if v == min(dists.values())) if dists else []
        key = {p for n in nearest for p in pairwise[c.name][n] if p != "body"}
        rows.append(
            {
                **c.to_dict(),
                "nearest": nearest,
                "key_parts": [p for p in PARTS if p in key],
                "any_parts": [p for p in PARTS if p in any_parts],
                "absent_parts": ["crest"] if c.attributes["crest"] == "NONE" else [],
            }
        )
    return {"classes": rows, "pairwise": pairwise}
