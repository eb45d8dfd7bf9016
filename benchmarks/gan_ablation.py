"""The augmentation ablation on synthetic birds (CPU budget): real / real+classic / real+GAN / real+classic+GAN.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan_ablation.py --out runs/gan-ablation-synth
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan_ablation.py --data ../shared/data/birds --out runs/gan-ablation-birds

Same as ``birdlens gan ablation``; this script also generates the synthetic data (10 classes, 100 per class,
70/15/15 split, 64 px) when no ``--data`` is given, and records the machine's load alongside the results.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.data import load_images, resolve_manifest, select
from birdlens.augment.gan.features import Lite0Features
from birdlens.study.ablation import AblationConfig, markdown_table, run_ablation
from birdlens.utils.atomic import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset with train and test splits (default: generate synthetic birds)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--classes", type=int, default=10, help="synthetic classes")
    ap.add_argument("--budgets", default="10,40")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--gan-iterations", type=int, default=300)
    ap.add_argument("--gan-width", type=int, default=16)
    ap.add_argument("--gan-batch-size", type=int, default=16)
    ap.add_argument("--classic-copies", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    data = args.data
    if data is None:
        from birdlens.data.synth import generate_dataset

        data = out / "synthetic-data"
        if not (data / "manifest.csv").exists():
            generate_dataset(
                data, classes=args.classes, per_class=100, size=64, seed=0, quiet=True, workers=1
            )
    manifest = resolve_manifest(data)
    train_m = select(manifest, "train")
    names = train_m.classes
    train = load_images(train_m, args.image_size, names)
    test = load_images(
        select(manifest, "test" if "test" in manifest.splits else "valid"), args.image_size, names
    )
    cfg = AblationConfig(
        budgets=[int(b) for b in args.budgets.split(",")],
        seeds=[int(s) for s in args.seeds.split(",")],
        classic_copies=args.classic_copies,
        gan=GANConfig(
            arch="cgan",
            image_size=args.image_size,
            iterations=args.gan_iterations,
            batch_size=args.gan_batch_size,
            g_width=args.gan_width,
            d_width=args.gan_width,
            sample_every=max(args.gan_iterations // 2, 1),
            checkpoint_every=max(args.gan_iterations // 3, 1),
        ),
    )
    t0, load0 = time.perf_counter(), os.getloadavg()
    result = run_ablation(train, test, Lite0Features(), out, cfg, quiet=True, log=print)
    write_json(
        out / "machine.json",
        {
            "seconds": round(time.perf_counter() - t0, 1),
            "load_average_start": load0,
            "load_average_end": os.getloadavg(),
            "threads": torch.get_num_threads(),
            "data": str(data),
        },
    )
    print(markdown_table(result))


if __name__ == "__main__":
    main()
