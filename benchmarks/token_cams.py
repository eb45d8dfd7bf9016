"""Grad-CAM on random-init timm token models at 224 px: birdlens against pytorch-grad-cam on the same layer.

Prints one Markdown row per model: the layer birdlens chose, how it folded the tokens, the largest difference
from ``pytorch_grad_cam.GradCAM`` with the matching ``reshape_transform``, and ms per image for both (8 images,
one batch, after a warm-up call). Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/token_cams.py``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import timm
import torch

from birdlens.explain import make_explainer

MODELS = ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "swin_tiny_patch4_window7_224")


def _fold(prefix: int, h: int, w: int):  # pytorch-grad-cam's ViT reshape_transform, prefix generalised
    return lambda t: t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).permute(0, 3, 1, 2)


def row(name: str, n: int = 8) -> str:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=20).eval()
    x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ex = make_explainer("gradcam", model, channels_last=False)
    ex.explain(x[:1])
    t0 = time.perf_counter()
    ours = ex.explain(x)
    t_ours = time.perf_counter() - t0
    p = ours.params
    fold = _fold(p["prefix_tokens"], *p["grid"])
    with pgc.GradCAM(
        model=model, target_layers=[model.get_submodule(p["layer"])], reshape_transform=fold
    ) as cam:
        targets = [ClassifierOutputTarget(int(t)) for t in ours.target]
        cam(input_tensor=x[:1], targets=targets[:1])
        t0 = time.perf_counter()
        ref = cam(input_tensor=x, targets=targets)
        t_ref = time.perf_counter() - t0
    diff = float(np.abs(ours.maps.numpy() - ref).max())
    grid = f"{p['grid'][0]}x{p['grid'][1]}"
    return (
        f"| {name} | {p['layer']} | {p['prefix_tokens']} | {grid} | {diff:.1e} | "
        f"{t_ours / n * 1000:.0f} ms | {t_ref / n * 1000:.0f} ms | {t_ref / t_ours:.1f}x |"
    )


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"load average {os.getloadavg()[0]:.1f}, {torch.get_num_threads()} torch thread(s)")
    print("| model | layer | prefix tokens | grid | max abs diff | birdlens | pytorch-grad-cam | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name in MODELS:
        print(row(name))


if __name__ == "__main__":
    main()
