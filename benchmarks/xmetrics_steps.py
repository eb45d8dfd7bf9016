"""How few deletion/insertion steps keep every AUC within 0.01 of RISE's 224 (issue 24).

    .venv/bin/python benchmarks/xmetrics_steps.py --run RUN [--n 8] [--out /tmp/bl_steps]

Explains ``--n`` shared test photos (the seeded, class-balanced sample ``explain-eval`` takes) with each method
at its default budget plus the two baselines, computes the 224-step curves once, and reads the AUC at fewer
steps off the same curves: for a step count that divides 224 the points of the coarser curve are a subset of
the 224-step points (step ``224 * 224 / s`` pixels = a whole number of 224-pixel steps), so the AUC at ``s``
steps is the trapezoid over those points, exactly what ``perturbation_curves(n_steps=s)`` computes (the test
``tests/test_xmetrics_cost.py`` checks that identity). The maps and curves are cached in ``--out``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"
DIVISORS = (112, 56, 32, 28, 16, 14, 8, 7, 4)


def curves_224(run: Path, n: int, methods: list[str], out: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{method: {"deletion": [n, 225], "insertion": [n, 225]}}`` probabilities at 224 steps (cached)."""
    from birdlens.data import load_manifest
    from birdlens.explain.metrics.evaluate import (
        EvalSettings,
        _entries,
        _load_sample,
    )
    from birdlens.explain.metrics.perturbation import perturbation_curves
    from birdlens.runs.trained import load_trained

    trained = load_trained(run)
    cfg = EvalSettings()
    sample = _load_sample(trained, load_manifest(SHARED), n, 0, "test", None, cfg)
    got: dict[str, dict[str, np.ndarray]] = {}
    out.mkdir(parents=True, exist_ok=True)
    for name, fn, _ in _entries(methods, trained, cfg, 0):
        cache = out / f"curves_{n}_{name.split()[0]}.pt"  # one file per method: a rerun resumes
        if not cache.is_file():
            maps = fn(sample.model, sample.images, sample.targets)
            cur = perturbation_curves(sample.scorer, sample.images, maps, sample.targets, n_steps=224)
            torch.save({mode: c.probs for mode, c in cur.items()}, cache)
            print(f"  {name}: maps and 224-step curves done", flush=True)
        got[name] = torch.load(cache, weights_only=False)
    return got


def trapezoid(p: np.ndarray) -> np.ndarray:
    return (p.sum(-1) - p[..., 0] / 2 - p[..., -1] / 2) / (p.shape[-1] - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a trained run on the shared birds")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--methods", default="gradcam,lime,shap,ig")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bl_steps"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    got = curves_224(args.run, args.n, args.methods.split(","), args.out)
    print(f"{args.n} shared photos, AUC at s steps vs 224 steps: max |diff| over every image and method")
    print(f"{'steps':>6} {'evals/curve':>12} {'deletion':>9} {'insertion':>10}  method order (by mean AUC)")
    full = {m: {k: trapezoid(v) for k, v in c.items()} for m, c in got.items()}
    for s in DIVISORS:
        row = f"{s:>6} {s - 1:>12}"
        orders = []
        for mode in ("deletion", "insertion"):
            sub = {m: trapezoid(c[mode][:, :: 224 // s]) for m, c in got.items()}
            worst = max(float(np.abs(sub[m] - full[m][mode]).max()) for m in got)
            row += f" {worst:>9.4f}" if mode == "deletion" else f" {worst:>10.4f}"
            ref = sorted(got, key=lambda m, mode=mode: full[m][mode].mean())
            orders.append(
                f"{mode} {'same' if ref == sorted(got, key=lambda m: sub[m].mean()) else 'CHANGED'}"
            )
        print(row + "  " + ", ".join(orders))
    for mode in ("deletion", "insertion"):
        best = sorted(got, key=lambda m, mode=mode: full[m][mode].mean(), reverse=mode == "insertion")
        print(f"224-step {mode} order (best first): " + " > ".join(best))
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
