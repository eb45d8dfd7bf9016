"""Synthetic birds generated per second (224 px), with 1 and 2 worker processes.

    .venv/bin/python benchmarks/synth_speed.py --n 1000 [--json benchmarks/out/synth_speed.json]

Reports: render-only speed (one process, no PNG), and the full ``generate_dataset`` (render + PNG encode +
write) for each worker count. The machine's load average is printed before and after, because on a shared
2-core machine the numbers move with what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from birdlens.data.synth import class_catalog, generate_dataset, render_bird, sample_spec
from birdlens.utils.atomic import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="images per run (spread over 10 classes)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    load0 = os.getloadavg()
    result: dict[str, object] = {
        "n": args.n,
        "size": args.size,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load0,
    }

    cats = class_catalog(10, 0)
    specs = [sample_spec(cats[i % 10], np.random.default_rng(i)) for i in range(min(args.n, 200))]
    t = time.perf_counter()
    for s in specs:
        render_bird(s, args.size)
    dt = time.perf_counter() - t
    result["render_only_images_per_s"] = round(len(specs) / dt, 1)
    print(
        f"render only (1 process, no PNG): {len(specs) / dt:.1f} images/s ({1000 * dt / len(specs):.1f} ms each)"
    )

    per_class = max(1, args.n // 10)
    for w in (int(x) for x in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            m = generate_dataset(
                Path(tmp) / "ds", classes=10, per_class=per_class, size=args.size, quiet=True, workers=w
            )
            dt = time.perf_counter() - t
        result[f"generate_workers_{w}_images_per_s"] = round(len(m) / dt, 1)
        result[f"generate_workers_{w}_seconds"] = round(dt, 2)
        print(f"generate_dataset, {w} worker(s): {len(m)} images in {dt:.1f} s = {len(m) / dt:.1f} images/s")
    result["loadavg_after"] = os.getloadavg()
    print(
        f"load average before {load0[0]:.2f}, after {result['loadavg_after'][0]:.2f} "  # type: ignore[index]
        f"(on {os.cpu_count()} cores)"
    )
    if args.json:
        write_json(args.json, result)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
