"""Nearest training examples: birdlens' exact torch search against scikit-learn's brute-force NearestNeighbors.

    .venv/bin/python benchmarks/knn_search.py     # Lite0-sized features (1280), the shared set's 840 training images

Both search the same float32 features with the cosine distance and must return the same neighbours; the ratio
of their times, measured interleaved in the same run, is the result. The features are random non-negative
vectors (pooled post-activation features are non-negative); the search cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from birdlens.explain.examples import FeatureIndex


def timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[840, 20000], help="indexed images")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--queries", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.1f}; threads {torch.get_num_threads()}")
    print("| n | queries | birdlens (s) | sklearn brute (s) | ratio sklearn/birdlens | same neighbours |")
    for n in a.n:
        feats = np.abs(rng.normal(size=(n, a.dim))).astype(np.float32)
        labels = torch.from_numpy(rng.integers(0, 20, n))
        index = FeatureIndex(torch.from_numpy(feats), labels, [""] * n, [str(c) for c in range(20)])
        nn_ = NearestNeighbors(n_neighbors=a.k, algorithm="brute", metric="cosine").fit(feats)
        for q in a.queries:
            queries = np.abs(rng.normal(size=(q, a.dim))).astype(np.float32)
            ours_s, ours = timed(functools.partial(index.nearest, torch.from_numpy(queries), a.k), a.repeats)
            ref_s, ref = timed(functools.partial(nn_.kneighbors, queries), a.repeats)
            same = bool(np.array_equal(ours.rows.numpy(), ref[1]))  # type: ignore[union-attr,index]
            print(f"| {n} | {q} | {ours_s:.4f} | {ref_s:.4f} | {ref_s / ours_s:.2f}x | {same} |")
        # one class only (what explain, the report and the web page ask): sklearn fitted on that class alone
        q1 = np.abs(rng.normal(size=(1, a.dim))).astype(np.float32)
        members = np.flatnonzero(labels.numpy() == 3)
        one = NearestNeighbors(n_neighbors=a.k, algorithm="brute", metric="cosine").fit(feats[members])
        ours_s, ours = timed(functools.partial(index.nearest, torch.from_numpy(q1), a.k, [3]), a.repeats)
        ref_s, ref = timed(functools.partial(one.kneighbors, q1), a.repeats)
        same = bool(np.array_equal(ours.rows.numpy(), members[ref[1]]))  # type: ignore[union-attr,index]
        print(
            f"| {n}, one class ({len(members)}) | 1 | {ours_s:.4f} | {ref_s:.4f} | {ref_s / ours_s:.2f}x | {same} |"
        )
    n = a.n[0]
    feats = np.abs(rng.normal(size=(n, a.dim))).astype(np.float32)
    index = FeatureIndex(
        torch.from_numpy(feats),
        torch.from_numpy(rng.integers(0, 20, n)),
        [""] * n,
        [str(c) for c in range(20)],
    )
    med_s, _ = timed(index.medoids, a.repeats)
    print(f"medoids of {n} images in 20 classes: {med_s:.4f} s")


if __name__ == "__main__":
    main()
