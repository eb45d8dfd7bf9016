"""Gradient-free CAMs and XGradCAM (issue 24): birdlens vs pytorch-grad-cam, side by side in one run.

For XGradCAM, Eigen-CAM, Score-CAM and Ablation-CAM on Lite0 (bundled weights) and real bird photos it prints
our time per image, pytorch-grad-cam's on the same layer and images, the speed-up, the largest difference of
the maps, and our time as a multiple of the *forward floor*: (model forwards the method needs) / (the best
inference throughput of the same model measured in this run). Score-CAM and Ablation-CAM need one forward per
channel of the layer (1280 at Lite0's ``bn2``) plus one; XGradCAM and Eigen-CAM one.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cam_speed.py [--size 224] [--images 8] [--heavy-images 1]

Eigen-CAM is compared with pytorch-grad-cam's EigenCAM using its own sign-corrected projection
(``get_2d_projection_with_sign_correction``), the rule birdlens applies; the load average is printed before
and after (this CPU is shared).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"


def photos(n: int, size: int) -> torch.Tensor:
    from PIL import Image

    files = sorted((SHARED / "test").glob("*/*.jpg"))[:n]
    arr = [
        np.asarray(Image.open(f).convert("RGB").resize((size, size)), dtype=np.float32) / 255 for f in files
    ]
    return (torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2) - 0.5) / 0.5


def floor_rate(model: torch.nn.Module, x1: torch.Tensor) -> float:
    """Best images/s of plain inference over a few batch sizes."""
    best = 0.0
    for b in (4, 16):
        xb = x1.expand(b, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            model(xb)
            t = min(_time(lambda xb=xb: model(xb)) for _ in range(3))
        best = max(best, b / t)
    return best


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def reference(method: str, model, layer, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    import pytorch_grad_cam as pgc
    import pytorch_grad_cam.eigen_cam as ec
    import tqdm
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    ec.get_2d_projection = get_2d_projection_with_sign_correction
    tqdm.tqdm = lambda it, *a, **k: it  # its per-batch progress bars
    cls = {"xgradcam": pgc.XGradCAM, "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM,
           "ablationcam": pgc.AblationCAM}[method]  # fmt: skip
    kw = {"batch_size": 16} if method == "ablationcam" else {}
    with cls(model=model, target_layers=[layer], **kw) as cam:
        cam.batch_size = 16  # Score-CAM's default, and ours
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=8, help="images for XGradCAM and Eigen-CAM (one batch)")
    ap.add_argument("--heavy-images", type=int, default=1, help="images for Score-CAM and Ablation-CAM")
    ap.add_argument("--only", default="xgradcam,eigencam,scorecam,ablationcam")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from birdlens.explain import make_explainer
    from birdlens.models import create_model

    load0 = os.getloadavg()
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    model.to(memory_format=torch.channels_last)
    rate = floor_rate(model, photos(1, args.size))
    channels = int(model.bn2.num_features)
    print(f"Lite0 at {args.size} px, {torch.get_num_threads()} thread(s): floor {rate:.1f} images/s")
    print(f"{'method':12} {'images':>6} {'ours s/img':>10} {'pgc s/img':>10} {'speed-up':>8} "
          f"{'x floor':>8} {'max |diff|':>10}")  # fmt: skip
    for method in args.only.split(","):
        heavy = method in ("scorecam", "ablationcam")
        x = photos(args.heavy_images if heavy else args.images, args.size)
        forwards = x.shape[0] * ((channels + 1) if heavy else 1)
        ex = make_explainer(method, model, **({"batch_size": 16} if heavy else {}))
        if heavy:  # their BN-folded copy is built once per explainer; the 1280 forwards need no warm-up
            ex.inference_model(ex.prepare(x[:1]))
        else:
            ex.explain(x[:1])  # warm-up
        t0 = time.perf_counter()
        ours = ex.explain(x)
        t_ours = time.perf_counter() - t0
        if not heavy:
            reference(method, model, model.bn2, x[:1], ours.target[:1].tolist())  # its warm-up
        t0 = time.perf_counter()
        ref = reference(method, model, model.bn2, x, ours.target.tolist())
        t_ref = time.perf_counter() - t0
        n = x.shape[0]
        print(f"{method:12} {n:>6} {t_ours / n:>10.3f} {t_ref / n:>10.3f} {t_ref / t_ours:>7.2f}x "
              f"{t_ours / (forwards / rate):>7.2f}x {np.abs(ours.maps.numpy() - ref).max():>10.2e}")  # fmt: skip
    print(f"load average before {load0[0]:.1f}, after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
