"""The study's DCGAN vs birdlens' conditional GAN at the same iteration budget and seed.

Trains ``dcgan`` then ``cgan`` on the same images, writes their final fixed-noise grids side by side, and
measures FD-lite0 / KID-lite0 of each against the training images (same number of images per class).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan_compare.py --data ../shared/data/birds \
        --iterations 400 --out runs/gan-compare-birds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan_compare.py --synthetic 10 --out runs/gan-compare-synth

The issue's target: FD-lite0(cgan) <= 0.5 * FD-lite0(dcgan). The result JSON says whether it was met.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.data import load_images, resolve_manifest, select
from birdlens.augment.gan.evaluate import gan_metrics
from birdlens.augment.gan.features import Lite0Features
from birdlens.augment.gan.train import train_gan
from birdlens.utils.atomic import atomic_path, write_json, write_text


def side_by_side(paths: list[Path], titles: list[str], out: Path) -> Path:
    ims = [Image.open(p).convert("RGB") for p in paths]
    w, h, head = sum(i.width for i in ims) + 10 * (len(ims) - 1), max(i.height for i in ims), 18
    canvas = Image.new("RGB", (w, h + head), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for im, t in zip(ims, titles, strict=True):
        canvas.paste(im, (x, head))
        draw.text((x + 4, 3), t, fill="black")
        x += im.width + 10
    with atomic_path(out, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="image folder / manifest.csv (train split is used)")
    ap.add_argument("--synthetic", type=int, default=0, help="generate N synthetic bird classes instead")
    ap.add_argument("--per-class", type=int, default=40, help="synthetic images per class")
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cgan-width", type=int, default=16)
    ap.add_argument("--dcgan-width", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--archs", default="dcgan,cgan")
    ap.add_argument(
        "--ema-start", type=int, default=0, help="cgan: steps before its EMA starts (0 = from the first)"
    )
    ap.add_argument("--classes", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    if args.synthetic:
        from birdlens.data.synth import generate_dataset

        data_dir = out / "synthetic-data"
        if not (data_dir / "manifest.csv").exists():
            generate_dataset(
                data_dir,
                classes=args.synthetic,
                per_class=args.per_class,
                size=max(args.image_size, 64),
                seed=args.seed,
            )
        source = f"synthetic birds ({args.synthetic} classes, seed {args.seed})"
        manifest = resolve_manifest(data_dir)
    else:
        source = str(args.data)
        manifest = resolve_manifest(args.data)
    train_m = select(manifest, "train", args.classes)
    real = load_images(train_m, args.image_size)
    load_avg_start = os.getloadavg()
    results: dict[str, dict] = {}
    grids, titles = [], []
    for arch in args.archs.split(","):
        width = args.cgan_width if arch == "cgan" else args.dcgan_width
        cfg = GANConfig(
            arch=arch,
            image_size=args.image_size,
            iterations=args.iterations,
            batch_size=args.batch_size,
            seed=args.seed,
            g_width=width,
            d_width=width,
            classes=args.classes,
            ema_start=args.ema_start if arch == "cgan" else 0,
            sample_every=max(args.iterations // 4, 1),
            checkpoint_every=max(args.iterations // 4, 1),
        )
        t0 = time.perf_counter()
        res = train_gan(cfg, real, out / arch, force=True)
        results[arch] = {
            "train_seconds": round(time.perf_counter() - t0, 1),
            "config": res.state.cfg.to_dict(),
        }
        grids.append(res.grids[-1])
        titles.append(f"{arch}  {args.iterations} it  seed {args.seed}")
    feats = Lite0Features()
    for arch in results:
        t0 = time.perf_counter()
        results[arch]["metrics"] = gan_metrics(out / arch, real, feats, seed=args.seed)
        results[arch]["metric_seconds"] = round(time.perf_counter() - t0, 1)
    summary: dict = {
        "data": source,
        "image_size": args.image_size,
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "n_real": len(real),
        "load_average_at_start": load_avg_start,
        "load_average_at_end": os.getloadavg(),
        "runs": results,
    }
    if "dcgan" in results and "cgan" in results:
        fd_d = results["dcgan"]["metrics"]["FD-lite0"]
        fd_c = results["cgan"]["metrics"]["FD-lite0"]
        summary["fd_ratio_cgan_over_dcgan"] = fd_c / fd_d
        summary["target_met_cgan_le_half_dcgan"] = bool(fd_c <= 0.5 * fd_d)
    side_by_side(grids, titles, out / "side_by_side.png")
    write_json(out / "compare.json", summary)
    lines = [
        f"# dcgan vs cgan on {source}",
        "",
        f"{args.image_size} px, {args.iterations} iterations, batch {args.batch_size}, seed {args.seed}; "
        f"reference: {len(real)} real training images, same number generated per class.",
        "",
        "| arch | FD-lite0 | KID-lite0 (x1e3, mean ± std) | KID subset | train s |",
        "|---|---:|---:|---:|---:|",
    ]
    for arch, r in results.items():
        m = r["metrics"]
        lines.append(
            f"| {arch} | {m['FD-lite0']:.2f} | {1e3 * m['KID-lite0']:.2f} ± {1e3 * m['KID-lite0_std']:.2f} "
            f"| {m['kid_subset_size']} | {r['train_seconds']} |"
        )
    if "fd_ratio_cgan_over_dcgan" in summary:
        lines += [
            "",
            f"FD-lite0 ratio cgan/dcgan: {summary['fd_ratio_cgan_over_dcgan']:.3f} "
            f"(target <= 0.5: {'met' if summary['target_met_cgan_le_half_dcgan'] else 'NOT met'})",
        ]
    write_text(out / "compare.md", "\n".join(lines) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
