"""Cross-image batching vs the per-image loop: IG, LIME and SHAP on the same photos, back to back in one run.

For each method: the wall time of explaining N photos one call per photo (the per-image loop) and in one call
(cross-image batching: the model batches hold rows of several photos), their ratio, whether every map is
bit for bit the same, and else the largest difference relative to the largest map value (batch-size dependent
kernels: see ``birdlens.explain.batching``). Model: EfficientNet-Lite0 (random init; speed does not depend on the weights),
224 px, channels_last, fp32; the shared bird photos (test split) when present, else random pixels.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_speed.py [--n 16] [--ig 50] [--lime 1000] [--shap 500]
        [--device cpu] [--threads 1]

The per-image loop and the batched call alternate per method, so machine noise mostly cancels; the load
average is printed before and after (this CPU is shared). ``benchmarks/gpu_check.sh`` runs it on a GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def photos(n: int, data: Path) -> tuple[torch.Tensor, str]:
    """``n`` photos (224 px, normalised) from ``data``'s test split, else seeded random pixels."""
    from PIL import Image

    files = sorted((data / "test").glob("*/*.jpg"))[:n] if data.is_dir() else []
    if len(files) < n:
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 3, 224, 224, generator=g), "random pixels"
    arr = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224))) for f in files])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(NORM["mean"]).view(1, 3, 1, 1), torch.tensor(NORM["std"]).view(1, 3, 1, 1)
    return (x - mean) / std, f"{n} photos of {data}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="photos")
    ap.add_argument("--ig", type=int, default=50, help="IG steps")
    ap.add_argument("--lime", type=int, default=1000, help="LIME samples")
    ap.add_argument("--shap", type=int, default=500, help="SHAP max_evals")
    ap.add_argument("--methods", default="ig,lime,shap", help="comma-separated subset")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument(
        "--batch", type=int, default=None, help="model batch size of every method (default: theirs)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import timm

    from birdlens.explain import make_explainer

    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", num_classes=20).eval().to(args.device)
    x, what = photos(args.n, args.data)
    print(f"{what}; torch {torch.__version__}; device {args.device}; {torch.get_num_threads()} threads")
    print(f"load average before: {os.getloadavg()[0]:.2f}")

    def chunk(key: str) -> dict[str, int]:  # make_explainer takes sizes past the web app's caps (a GPU)
        return {} if args.batch is None else {key: args.batch}

    cases = [
        ("ig", {"steps": args.ig, **chunk("internal_batch_size")}),
        ("lime", {"num_samples": args.lime, **chunk("batch_size")}),
        ("shap", {"max_evals": args.shap, **chunk("forward_chunk")}),
    ]
    head = f"{'method':<10} {'per-image s':>12} {'batched s':>10} {'ratio':>6} {'img/s loop':>11} {'img/s batch':>12}"
    print(head, "equal", "max|diff|/max|map|")
    for name, params in [c for c in cases if c[0] in args.methods.split(",")]:
        ex = make_explainer(name, model, data_config=NORM, **params)
        ex.explain(x[:2])  # warm-up: the folded copy, the kernels
        t = time.perf_counter()
        loop = torch.cat([ex.explain(x[i : i + 1]).maps for i in range(x.shape[0])])
        t_loop = time.perf_counter() - t
        t = time.perf_counter()
        batched = ex.explain(x).maps
        t_batch = time.perf_counter() - t
        budget = next(iter(params.values()))
        label = f"{name}-{budget}"
        n = x.shape[0]
        diff = float((loop - batched).abs().max() / loop.abs().max().clamp_min(1e-30))
        print(
            f"{label:<10} {t_loop:12.1f} {t_batch:10.1f} {t_loop / t_batch:6.2f} {n / t_loop:11.2f} "
            f"{n / t_batch:12.2f} {torch.equal(loop, batched)} {diff:.1e}",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
