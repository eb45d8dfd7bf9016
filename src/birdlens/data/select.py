"""Choose the classes and images a study uses, as in the paper: top-N species, at most K images each.

Order of operations (each step reported):

1. classes with fewer than ``min_per_class`` images are dropped, with a warning naming them;
2. the ``top`` classes by number of images are kept (ties broken by name, so the choice is deterministic);
3. a class with more than ``per_class`` images is subsampled with a seeded RNG, stratified by split: each split
   keeps its share (largest-remainder rounding), so a 70/15/15 class stays 70/15/15.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from birdlens.data.manifest import SPLITS, Manifest
from birdlens.data.splits import class_rng


@dataclass
class Selection:
    """The selected manifest, the indices it keeps (into the input) and what was dropped and why."""

    manifest: Manifest
    kept: list[int]
    dropped_classes: dict[str, str] = field(default_factory=dict)  # class -> reason
    subsampled: dict[str, tuple[int, int]] = field(default_factory=dict)  # class -> (before, after)
    settings: dict[str, int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "settings": self.settings,
            "n_images": len(self.manifest),
            "n_classes": len(self.manifest.classes),
            "classes": self.manifest.classes,
            "dropped_classes": self.dropped_classes,
            "subsampled": {
                k: {"before": a, "after": b}
                for k, a, b in ((k, *v) for k, v in sorted(self.subsampled.items()))
            },
        }


def rank_classes(manifest: Manifest) -> list[tuple[str, int]]:
    """(class, n_images) by decreasing count, ties by name."""
    counts = Counter(r.label for r in manifest.records)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def allocate(counts: dict[str, int], k: int) -> dict[str, int]:
    """Split a budget ``k`` across splits proportionally to ``counts`` (largest remainder, split order breaks ties)."""
    total = sum(counts.values())
    if total <= k:
        return dict(counts)
    exact = {s: counts[s] * k / total for s in counts}
    out = {s: int(exact[s]) for s in counts}
    order = sorted(counts, key=lambda s: (-(exact[s] - out[s]), SPLITS.index(s) if s in SPLITS else 9))
    for s in order[: k - sum(out.values())]:
        out[s] += 1
    return out


def select(
    manifest: Manifest,
    top: int | None = None,
    per_class: int | None = None,
    min_per_class: int = 1,
    seed: int = 0,
) -> Selection:
    """Apply min / top-N / per-class-K (see module doc); warns (``UserWarning``) about dropped classes."""
    if top is not None and top < 1:
        raise ValueError("--top must be >= 1")
    if per_class is not None and per_class < 1:
        raise ValueError("--per-class must be >= 1")
    ranked = rank_classes(manifest)
    dropped: dict[str, str] = {}
    eligible = []
    for label, n in ranked:
        if n < min_per_class:
            dropped[label] = f"only {n} image(s), below the minimum of {min_per_class}"
        else:
            eligible.append(label)
    if dropped:
        names = ", ".join(sorted(dropped)[:10]) + (" ..." if len(dropped) > 10 else "")
        warnings.warn(
            f"dropped {len(dropped)} class(es) with fewer than {min_per_class} images: {names}",
            UserWarning,
            stacklevel=2,
        )
    chosen = eligible if top is None else eligible[:top]
    for label in eligible[len(chosen) :]:
        dropped[label] = f"not in the top {top} classes by image count"
    chosen_set = set(chosen)

    by_class: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(manifest.records):
        if r.label in chosen_set:
            by_class[r.label][r.split or "unsplit"].append(i)
    keep: set[int] = set()
    subsampled: dict[str, tuple[int, int]] = {}
    for label in chosen:
        per_split = by_class[label]
        n = sum(len(v) for v in per_split.values())
        if per_class is None or n <= per_class:
            for v in per_split.values():
                keep.update(v)
            continue
        budget = allocate({s: len(v) for s, v in per_split.items()}, per_class)
        rng = class_rng(seed, label)
        for s in sorted(per_split, key=lambda s: SPLITS.index(s) if s in SPLITS else 9):
            idx = sorted(per_split[s], key=lambda i: str(manifest.records[i].path))
            pick = rng.permutation(len(idx))[: budget[s]]
            keep.update(idx[j] for j in pick)
        subsampled[label] = (n, per_class)
    kept = sorted(keep)
    return Selection(
        Manifest([manifest.records[i] for i in kept], manifest.root),
        kept,
        dropped,
        subsampled,
        {"top": top, "per_class": per_class, "min_per_class": min_per_class, "seed": seed},
    )
