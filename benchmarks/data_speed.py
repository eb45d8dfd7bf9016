"""Data-layer speed on the shared bird photos: validation (no cache / cold / warm cache, 1 vs 2 threads)
and dataset loading (decode vs memory-mapped cache).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_speed.py [PATH] [--rounds 2]

Prints images/s and ratios measured side by side in one run (rounds interleaved), plus the load average,
because on a shared 2-core machine absolute numbers move with what else runs. "Cold" means an empty birdlens
cache; the OS page cache may still hold the JPEG files (the first round warms it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BIRDLENS_QUIET", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "birds"


def _rate(n: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not args.path.exists():
        print(f"no data at {args.path}: pass the folder of the shared bird photos", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(1)
    from birdlens.data.cache import ImageCache
    from birdlens.data.dataset import ImageDataset
    from birdlens.data.layouts import discover
    from birdlens.data.validate import validate_manifest

    load0 = os.getloadavg()
    m = discover(args.path).manifest
    n = len(m)
    print(
        f"data: {args.path} ({n} images, {len(m.classes)} classes); cpu_count={os.cpu_count()}; "
        f"load average at start {load0[0]:.2f}"
    )
    results: dict[str, list[float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="birdlens-bench-"))
    try:
        for r in range(args.rounds):
            cache_dir = tmp / f"cache{r}"
            rows: list[tuple[str, Callable[[], object]]] = [
                ("validate, no cache, 1 thread", lambda: validate_manifest(m, progress=False)),
                ("validate, no cache, 2 threads", lambda: validate_manifest(m, workers=2, progress=False)),
                ("validate, cold cache", lambda cd=cache_dir: validate_manifest(m, cache=cd, progress=False)),  # type: ignore[misc]
                ("validate, warm cache", lambda cd=cache_dir: validate_manifest(m, cache=cd, progress=False)),  # type: ignore[misc]
            ]
            for name, fn in rows:
                results.setdefault(name, []).append(_rate(n, fn))
            # dataset: decode every JPEG vs memory-mapped arrays (cache filled by a first pass)
            plain = ImageDataset(m, size=224)
            cached = ImageDataset(m, size=224, cache=ImageCache(tmp / f"arrays{r}"))
            results.setdefault("dataset item, decode JPEG", []).append(
                _rate(n, lambda ds=plain: [ds[i] for i in range(len(ds))])
            )  # type: ignore[misc]
            results.setdefault("dataset item, cache fill (1st epoch)", []).append(
                _rate(n, lambda ds=cached: [ds[i] for i in range(len(ds))])
            )  # type: ignore[misc]
            results.setdefault("dataset item, warm cache (mmap)", []).append(
                _rate(n, lambda ds=cached: [ds[i] for i in range(len(ds))])
            )  # type: ignore[misc]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base_v = statistics.median(results["validate, no cache, 1 thread"])
    base_d = statistics.median(results["dataset item, decode JPEG"])
    print(f"\n{'what':42s} {'images/s (median)':>18s} {'per round':>22s} {'x baseline':>11s}")
    for name, rates in results.items():
        base = base_v if name.startswith("validate") else base_d
        med = statistics.median(rates)
        print(f"{name:42s} {med:18.0f} {', '.join(f'{x:.0f}' for x in rates):>22s} {med / base:10.2f}x")
    load1 = os.getloadavg()
    print(f"\nload average at end {load1[0]:.2f} (>1 on 2 cores means other work competed for the CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
