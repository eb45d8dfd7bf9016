"""Exact and near duplicates, within and across splits; a pair across train/valid/test is a *leak*.

Exact: equal content hash (SHA-1 of the bytes). Near: 64-bit dHash of the decoded image within a Hamming
distance, default 5 of 64: above what recompression, resizing and brightness changes move the hash, below the
closest pair of different photos. Crops are not caught (measured: docs/benchmarks.md#data).

The near search compares all pairs with vectorised XOR + popcount in blocks: ~n^2/2 64-bit ops with no index
to build or get wrong, and fast next to decoding the same photos even for a dataset of Kaggle's size
(measured: docs/benchmarks.md#data; ``--top`` makes both small).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from birdlens.data.images import ImageInfo
from birdlens.data.manifest import SPLITS, Manifest, Record

DEFAULT_NEAR_THRESHOLD = 5
_SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}


@dataclass(frozen=True)
class DuplicatePair:
    """Records ``a`` < ``b`` (indices into the manifest) are copies of one photo."""

    a: int
    b: int
    kind: str  # "exact" or "near"
    distance: int  # dHash Hamming distance (0 for exact)

    def is_leak(self, records: Sequence[Record]) -> bool:
        return records[self.a].split != records[self.b].split


def hamming_pairs(
    hashes: Sequence[int], threshold: int, block: int | None = None
) -> list[tuple[int, int, int]]:
    """All (i, j, distance) with i < j and popcount(h_i ^ h_j) <= threshold.

    Rows are processed in blocks of ~8M comparisons (~64 MB of temporaries) whatever ``n`` is.
    """
    n = len(hashes)
    if n < 2 or threshold < 0:
        return []
    block = block or max(1, 8_000_000 // n)
    h = np.array([x & 0xFFFFFFFFFFFFFFFF for x in hashes], dtype=np.uint64)
    out: list[tuple[int, int, int]] = []
    for start in range(0, n, block):
        rows = h[start : start + block]
        # only j > i: compare this block against itself and everything after it
        d = np.bitwise_count(rows[:, None] ^ h[None, start:])
        ii, jj = np.nonzero(d <= threshold)
        keep = jj + start > ii + start
        for i, j in zip(ii[keep], jj[keep], strict=True):
            out.append((int(i) + start, int(j) + start, int(d[i, j])))
    return out


def find_duplicates(
    manifest: Manifest, infos: Sequence[ImageInfo], near_threshold: int | None = DEFAULT_NEAR_THRESHOLD
) -> list[DuplicatePair]:
    """Exact pairs (each copy paired with its group's copy in the earliest split) plus near pairs; sorted by (a, b).

    ``near_threshold=None`` switches the near search off.
    """
    if len(infos) != len(manifest):
        raise ValueError("infos must be aligned with the manifest records (use validate_manifest's output)")
    pairs: dict[tuple[int, int], DuplicatePair] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, info in enumerate(infos):
        groups[info.sha1].append(i)
    recs = manifest.records
    for idx in groups.values():
        # pair every copy with the one in the earliest split, so dropping "the later copy" removes all leaks
        idx.sort(key=lambda i: (_SPLIT_ORDER.get(recs[i].split or "", len(SPLITS)), i))
        for j in idx[1:]:
            a, b = min(idx[0], j), max(idx[0], j)
            pairs[(a, b)] = DuplicatePair(a, b, "exact", 0)
    if near_threshold is not None:
        same = {i: g[0] for g in groups.values() for i in g}
        for i, j, dist in hamming_pairs([x.dhash for x in infos], near_threshold):
            if same[i] == same[j]:
                continue  # identical bytes: already an exact pair (or a copy of one)
            pairs.setdefault((i, j), DuplicatePair(i, j, "near", dist))
    return sorted(pairs.values(), key=lambda p: (p.a, p.b))


def dedupe(
    manifest: Manifest, infos: Sequence[ImageInfo], pairs: Sequence[DuplicatePair]
) -> tuple[Manifest, list[ImageInfo], list[Record]]:
    """Drop, for each pair, the copy in the later split (train < valid < test; same split: the later record).

    Returns the kept manifest, its aligned infos and the dropped records.
    """
    recs = manifest.records

    def rank(i: int) -> tuple[int, int]:
        return (_SPLIT_ORDER.get(recs[i].split or "", len(SPLITS)), i)

    drop: set[int] = set()
    for p in sorted(pairs, key=lambda p: (min(rank(p.a), rank(p.b)), max(rank(p.a), rank(p.b)))):
        keep_i, drop_i = (p.a, p.b) if rank(p.a) <= rank(p.b) else (p.b, p.a)
        if keep_i in drop:
            continue  # its partner is already gone: the copy it resembles is kept via another pair
        drop.add(drop_i)
    kept = [i for i in range(len(recs)) if i not in drop]
    return (
        Manifest([recs[i] for i in kept], manifest.root),
        [infos[i] for i in kept],
        [recs[i] for i in sorted(drop)],
    )
