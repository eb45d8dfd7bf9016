"""Seeded, stratified train/valid/test splits.

Each class is shuffled with its own RNG seeded by ``(seed, crc32(label))`` after sorting its records by
path, so the split of a class does not depend on the order files were listed in, nor on which other classes
are present: adding a species never reshuffles the others.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from birdlens.data.manifest import Record, replace_record

DEFAULT_RATIOS: tuple[float, float, float] = (0.7, 0.15, 0.15)


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate and normalise (train, valid, test) ratios so they sum to 1."""
    if len(ratios) != 3:
        raise ValueError(f"ratios must be three numbers (train, valid, test), got {list(ratios)}")
    r = tuple(float(x) for x in ratios)
    if any(x < 0 for x in r) or r[0] <= 0:
        raise ValueError(f"ratios must be >= 0 with a positive train share, got {list(ratios)}")
    total = sum(r)
    return (r[0] / total, r[1] / total, r[2] / total)


def class_rng(seed: int, label: str) -> np.random.Generator:
    """An RNG for one class that depends only on the seed and the class name."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(label.encode("utf-8"))])


def split_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of ``n`` images go to train/valid/test.

    Rounded per split; a class with >= 3 images gets at least one valid and one test image when those ratios
    are non-zero, and train always keeps at least one.
    """
    _, rv, rt = ratios
    k_v = round(n * rv)
    k_t = round(n * rt)
    if n >= 3:
        k_v = max(k_v, 1 if rv > 0 else 0)
        k_t = max(k_t, 1 if rt > 0 else 0)
    while k_v + k_t > max(n - 1, 0):
        if k_t >= k_v and k_t > 0:
            k_t -= 1
        elif k_v > 0:
            k_v -= 1
        else:
            break
    return n - k_v - k_t, k_v, k_t


def stratified_split(
    records: Sequence[Record], ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0
) -> list[Record]:
    """Assign train/valid/test to every record, per class; returns new records in the input order."""
    r = check_ratios(ratios)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_class[rec.label].append(i)
    split_of: dict[int, str] = {}
    for label, idx in by_class.items():
        idx = sorted(idx, key=lambda i: str(records[i].path))
        order = class_rng(seed, label).permutation(len(idx))
        n_tr, n_v, _ = split_counts(len(idx), r)
        for rank, j in enumerate(order):
            split_of[idx[j]] = "train" if rank < n_tr else "valid" if rank < n_tr + n_v else "test"
    return [replace_record(rec, split=split_of[i]) for i, rec in enumerate(records)]


def carve_valid(records: Sequence[Record], fraction: float, seed: int = 0) -> list[Record]:
    """Move a seeded, stratified ``fraction`` of each class's train records to valid (CUB has no valid split)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"valid fraction must be in [0, 1), got {fraction}")
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec.split == "train":
            by_class[rec.label].append(i)
    to_valid: set[int] = set()
    for label, idx in by_class.items():
        idx = sorted(idx, key=lambda i: str(records[i].path))
        k = round(len(idx) * fraction)
        if fraction > 0 and len(idx) >= 3:
            k = max(k, 1)
        k = min(k, len(idx) - 1)
        order = class_rng(seed, label).permutation(len(idx))
        to_valid.update(idx[j] for j in order[:k])
    return [replace_record(rec, split="valid") if i in to_valid else rec for i, rec in enumerate(records)]
