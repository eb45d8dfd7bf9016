"""How many model evaluations do LIME and SHAP need for a stable answer?

LIME: the top-5 superpixels (largest positive weights) across 5 sampling seeds, mean pairwise Jaccard, as a
function of ``num_samples``, for lime's uniform sampler (identical to ``LimeImageExplainer(random_state=s)``'s
design, tested) and an antithetic sampler (every row paired with its complement). Budgets are prefixes of one
1000-row design per seed, so each seed costs 1000 model evaluations whatever the number of budgets.

SHAP: shap's Partition explainer is deterministic (its seed only breaks exact ties), so the seed-to-seed
Jaccard is 1 at every budget; the useful question is how close a smaller budget gets to the answer at 500
evaluations: Jaccard of the top-5 regions (quickshift superpixels, SHAP summed per region) vs max_evals=500.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/explain_stability.py [--images 1] [--seeds 5]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"
BUDGETS = (100, 200, 300, 500, 750, 1000)
SHAP_BUDGETS = (100, 200, 300, 400, 500)


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def top5(weights: np.ndarray) -> set[int]:
    return set(np.argsort(-weights)[:5].tolist())


def memoised(values_fn, memo: dict):
    """Cache SHAP's model values by mask (the masks of a smaller budget are a prefix of a larger one's)."""

    def wrapped(xi, blurred, masks, target):
        todo = [m for m in masks if (m, target) not in memo]
        if todo:
            for m, v in zip(todo, values_fn(xi, blurred, todo, target), strict=True):
                memo[(m, target)] = v
        return [memo[(m, target)] for m in masks]

    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--skip-shap", action="store_true")
    ap.add_argument("--max-antithetic", type=int, default=500, help="largest antithetic budget tried")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from PIL import Image

    from birdlens.explain import make_explainer
    from birdlens.explain.methods.lime import cosine_to_ones, lime_kernel, sample_design, weighted_ridge
    from birdlens.models import create_model

    print(f"threads={args.threads}  load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    files = sorted((SHARED / "test").glob("*/*.jpg"))[:: max(1, 120 // max(args.images, 1))][: args.images]
    t0 = time.perf_counter()
    lime_j: dict[tuple[str, int], list[float]] = {}
    shap_j: dict[int, list[float]] = {}
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB").resize((224, 224)), dtype=np.float32) / 255
        x = ((torch.from_numpy(img).permute(2, 0, 1)[None] - 0.5) / 0.5).contiguous()
        lime = make_explainer("lime", model, num_samples=max(BUDGETS), mean=[0.5] * 3, std=[0.5] * 3)
        xi = lime.prepare(x)
        _, target = lime.predict(xi, None)
        seg = lime.segments_for(xi)[0]
        n = int(seg.max()) + 1
        seg_flat = torch.from_numpy(seg.copy()).reshape(-1)
        fill = lime.fill_image(xi, seg_flat, n)
        samplers = {"uniform": list(BUDGETS), "antithetic": [b for b in BUDGETS if b <= args.max_antithetic]}
        tops: dict[tuple[str, int], list[set[int]]] = {(sp, b): [] for sp, bs in samplers.items() for b in bs}
        for seed in range(args.seeds):  # seed-major, printing as it goes: partial results survive a timeout
            for sampler, budgets in samplers.items():
                design = sample_design(n, max(budgets), seed, sampler)
                values = lime.model_values(xi, fill, seg_flat, design, int(target[0]))
                for b in budgets:
                    d = design[:b]
                    coef, *_ = weighted_ridge(d, values[:b], lime_kernel(cosine_to_ones(d)))
                    tops[(sampler, b)].append(top5(coef))
            if seed >= 1:
                print(f"  after {seed + 1} seeds ({time.perf_counter() - t0:.0f} s):", flush=True)
                for sampler, budgets in samplers.items():
                    js = [
                        np.mean([jaccard(p, q) for p, q in itertools.combinations(tops[(sampler, b)], 2)])
                        for b in budgets
                    ]
                    print(
                        f"    {sampler:>10} "
                        + " ".join(f"{b}:{j:.3f}" for b, j in zip(budgets, js, strict=True)),
                        flush=True,
                    )
        for (sampler, b), sets in tops.items():
            pairs = [jaccard(p, q) for p, q in itertools.combinations(sets, 2)]
            lime_j.setdefault((sampler, b), []).append(float(np.mean(pairs)))
        if not args.skip_shap:
            ref = None
            memo: dict[tuple, float] = {}
            for b in sorted(SHAP_BUDGETS, reverse=True):
                shap = make_explainer("shap", model, max_evals=b)
                shap._values = memoised(
                    shap._values, memo
                )  # smaller budgets replay a prefix of the same masks
                m = shap.explain(x, target=target).maps[0].numpy()
                per = np.bincount(seg.ravel(), weights=m.ravel(), minlength=n)
                if ref is None:
                    ref = top5(per)
                shap_j.setdefault(b, []).append(jaccard(top5(per), ref))
        print(
            f"  {f.parent.name}/{f.name}: {n} superpixels, {time.perf_counter() - t0:.0f} s so far",
            flush=True,
        )

    print("\nLIME: mean pairwise Jaccard of the top-5 superpixels across seeds (1 = identical sets)")
    print(f"{'num_samples':>12} " + " ".join(f"{b:>7}" for b in BUDGETS))
    for sampler in ("uniform", "antithetic"):
        vals = [np.mean(lime_j[(sampler, b)]) if (sampler, b) in lime_j else None for b in BUDGETS]
        print(f"{sampler:>12} " + " ".join(f"{v:7.3f}" if v is not None else f"{'-':>7}" for v in vals))
    ref = np.mean(lime_j[("uniform", 1000)])
    for sampler in ("uniform", "antithetic"):
        ok = [b for b in BUDGETS if (sampler, b) in lime_j and np.mean(lime_j[(sampler, b)]) >= ref]
        if ok:
            print(
                f"  {sampler}: reaches lime's 1000-sample stability ({ref:.3f}) at {min(ok)} samples "
                f"-> {1000 / min(ok):.1f}x fewer evaluations"
            )
    if shap_j:
        print(
            "\nSHAP: Jaccard of the top-5 regions vs the answer at max_evals=500 (seed-to-seed Jaccard is 1.000)"
        )
        print(f"{'max_evals':>12} " + " ".join(f"{b:>7}" for b in SHAP_BUDGETS))
        print(f"{'vs 500':>12} " + " ".join(f"{np.mean(shap_j[b]):7.3f}" for b in SHAP_BUDGETS))
    print(
        f"\n{len(files)} image(s), {args.seeds} seeds, {time.perf_counter() - t0:.0f} s; load average after: "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )


if __name__ == "__main__":
    main()
