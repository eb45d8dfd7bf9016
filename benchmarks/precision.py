"""bf16 autocast against fp32: the forward floor of Lite0 and vit_tiny, and what bf16 does to the explanation-
quality numbers (deletion/insertion AUCs and the method ranking) on the shared photos.

    .venv/bin/python benchmarks/precision.py [--run LITE0_RUN] [--n 8] [--out /tmp/bl_precision]

* forward floor: random-init ``efficientnet_lite0`` and ``vit_tiny_patch16_224`` (offline), batches of 16 at
  224 px, channels_last, fp32 and bf16 timed alternately in one run; the ratio is what to read.
* quality: a Lite0 linear probe on ``../shared/data/birds`` (trained here unless ``--run`` is given) scored by
  :func:`birdlens.explain.metrics.evaluate_explanations` twice on the same ``--n`` test photos, once in fp32
  and once with ``precision="bf16"`` (LIME/SHAP model evaluations and the deletion/insertion forwards); the
  small budgets below keep it to minutes on a 2-core CPU and are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"
BUDGET = {"lime": {"num_samples": 200}, "shap": {"max_evals": 200}, "ig": {"steps": 16}}
METHODS = ["gradcam", "lime", "shap", "ig"]


def forward_floor(name: str, reps: int = 5, batch: int = 16) -> dict[str, float]:
    """Seconds per image of one forward, fp32 and bf16, median of ``reps`` alternating runs."""
    from birdlens.models import create_model
    from birdlens.utils.device import autocast

    model = create_model(name, num_classes=20, pretrained=False).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        for p in times:  # warm-up
            with autocast(p, "cpu"):
                model(x)
        for _ in range(reps):
            for p in times:
                t = time.perf_counter()
                with autocast(p, "cpu"):
                    model(x)
                times[p].append((time.perf_counter() - t) / batch)
    return {p: statistics.median(v) for p, v in times.items()}


def quality(run: Path, n: int, out: Path) -> dict[str, Any]:
    from birdlens.data import load_manifest
    from birdlens.explain.base import with_precision
    from birdlens.explain.metrics import evaluate_explanations
    from birdlens.runs.trained import load_trained

    trained = load_trained(run)
    manifest = load_manifest(SHARED)
    got: dict[str, Any] = {}
    for p in ("fp32", "bf16"):
        res = evaluate_explanations(
            trained,
            manifest,
            METHODS,
            n=n,
            out_dir=out / p,
            seed=0,
            quiet=True,
            n_steps=32,
            sanity_n=0,
            stability_n=0,
            figures=False,
            precision=p,
            method_params=with_precision(BUDGET, METHODS, p),
        )
        got[p] = {**read(out / p), "results": res}
    return got


def read(folder: Path) -> dict[str, Any]:
    """``results.json`` and ``per_image.json`` of one scored run (``--tables-only`` re-reads them)."""
    return {
        "results": json.loads((folder / "results.json").read_text()),
        "per_image": json.loads((folder / "per_image.json").read_text()),
    }


def table(got: dict[str, Any]) -> str:
    a, b = got["fp32"], got["bf16"]
    lines = [
        "| method | deletion fp32 | deletion bf16 | max per-image \\|Δ\\| | insertion fp32 | insertion bf16 | max per-image \\|Δ\\| |",
        "|---|---|---|---|---|---|---|",
    ]
    for meth in a["results"]["methods"]:
        cells = [meth]
        for metric in ("deletion", "insertion"):
            fa = a["results"]["methods"][meth][metric]["mean"]
            fb = b["results"]["methods"][meth][metric]["mean"]
            pa, pb = a["per_image"]["methods"][meth][metric], b["per_image"]["methods"][meth][metric]
            d = max(abs(x - y) for x, y in zip(pa, pb, strict=True))
            cells += [f"{fa:.4f}", f"{fb:.4f}", f"{d:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for metric in ("deletion", "insertion"):
        ra, rb = a["results"]["ranking"][metric], b["results"]["ranking"][metric]
        lines.append(f"- {metric} ranking fp32: {' > '.join(ra)}; bf16: {' > '.join(rb)}; same: {ra == rb}")
    lines.append(
        f"- seconds: fp32 {a['results']['seconds_total']:.0f}, bf16 {b['results']['seconds_total']:.0f}"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a Lite0 run on the shared birds (default: train a probe)")
    ap.add_argument("--n", type=int, default=8, help="test photos scored (class-balanced, seeded)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bl_precision"))
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--tables-only", action="store_true", help="re-read OUT/fp32 and OUT/bf16, score nothing")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if args.tables_only:
        print(table({p: read(args.out / p) for p in ("fp32", "bf16")}))
        return
    if not args.skip_floor:
        for name in ("efficientnet_lite0", "vit_tiny_patch16_224"):
            f = forward_floor(name)
            print(
                f"{name}: fp32 {f['fp32'] * 1e3:.1f} ms/image, bf16 {f['bf16'] * 1e3:.1f} ms/image, "
                f"bf16 speed-up {f['fp32'] / f['bf16']:.2f}x"
            )
    if not args.skip_quality:
        run = args.run
        if run is None:
            from birdlens.train.api import train
            from birdlens.train.config import TrainConfig

            run = args.out / "lite0_probe"
            cfg = TrainConfig(data=str(SHARED), out=str(run), model="efficientnet_lite0", mode="probe")
            train(cfg, force=True)
        print(f"budgets: {BUDGET}, n={args.n} test photos, 32 deletion/insertion steps")
        print(table(quality(run, args.n, args.out)))


if __name__ == "__main__":
    main()
