"""Deletion + insertion at the RISE resolution vs. the pure forward cost of the same number of evaluations.

    .venv/bin/python benchmarks/xmetrics_speed.py            # 16 images, 224 steps each, Lite0, 1 thread

Both are measured in the same run, *interleaved* in groups of images (metric for a group, then the same number of
plain forwards), so a neighbour process that slows the machine down slows both sides alike; the ratio is the
result (target <= 1.2x). The load average is printed: on a shared 2-core machine absolute speeds vary a lot.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from birdlens.explain.metrics import perturbation_curves, random_maps

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"


def load_images(n: int, data_config) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from birdlens.data.images import load_rgb
    from birdlens.models import eval_transform

    files = sorted(SHARED.glob("test/*/*.jpg"))[:n] if SHARED.is_dir() else []
    if len(files) < n:  # no shared photos: random pixels cost the same
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 3, data_config.input_size, data_config.input_size, generator=g)
    tf = eval_transform(data_config)
    return torch.stack([tf(load_rgb(f)) for f in files])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--group", type=int, default=2, help="images per interleaved measurement")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--no-fold",
        action="store_true",
        help="score with the model as is (default: the BatchNorm-folded copy explain-eval uses; "
        "both sides of the ratio always use the same model)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from birdlens.models import create_model, get_model_info

    model = create_model(args.model, num_classes=20, pretrained=True).eval()
    dc = get_model_info(model).data_config
    x = load_images(args.images, dc)
    b, _, h, w = x.shape
    maps = random_maps((b, h, w), seed=0)
    targets = torch.zeros(b, dtype=torch.long)
    n_points = min(args.steps, h * w) + 1
    load0 = os.getloadavg()

    model.to(memory_format=torch.channels_last)
    fold_note = "model as is"
    if not args.no_fold:
        from birdlens.models.fold import fold_batchnorm

        res = fold_batchnorm(model, x[:2].contiguous(memory_format=torch.channels_last))
        model, fold_note = res.model, f"BatchNorm-folded copy ({res.folded} pairs), as explain-eval scores"
    fwd_batch = x[: args.batch_size].repeat((args.batch_size + b - 1) // b, 1, 1, 1)[: args.batch_size]
    fwd_batch = fwd_batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():  # warm-up both paths
        model(fwd_batch)
    perturbation_curves(model, x[:1], maps[:1], targets[:1], n_steps=4, batch_size=args.batch_size)

    t_metric = t_forward = 0.0
    evals = 0
    for s in range(0, b, args.group):
        sl = slice(s, min(s + args.group, b))
        t0 = time.perf_counter()
        perturbation_curves(
            model, x[sl], maps[sl], targets[sl], n_steps=args.steps, batch_size=args.batch_size
        )
        t_metric += time.perf_counter() - t0
        n_eval = (sl.stop - sl.start) * n_points * 2
        evals += n_eval
        t0 = time.perf_counter()
        with torch.inference_mode():
            done = 0
            while done < n_eval:
                k = min(args.batch_size, n_eval - done)
                model(fwd_batch[:k])
                done += k
        t_forward += time.perf_counter() - t0
        print(
            f"  images {sl.start}-{sl.stop - 1}: metric {t_metric:7.1f} s, forward {t_forward:7.1f} s "
            f"(running ratio {t_metric / t_forward:.3f})",
            flush=True,
        )

    load1 = os.getloadavg()
    print(
        f"model {args.model}, {b} images {h}x{w}, {args.steps} steps -> {n_points} points x 2 curves "
        f"= {evals} evaluations, batch {args.batch_size}, {torch.get_num_threads()} thread(s); {fold_note}"
    )
    print(f"deletion+insertion: {t_metric:.1f} s ({evals / t_metric:.1f} evals/s)")
    print(f"pure forward, same evaluations: {t_forward:.1f} s ({evals / t_forward:.1f} evals/s)")
    print(f"ratio metric / forward = {t_metric / t_forward:.3f}  (target <= 1.2)")
    print(
        f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (2 cores; > 1 means neighbours were busy)"
    )


if __name__ == "__main__":
    main()
