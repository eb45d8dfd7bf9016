"""Background independence, target sensitivity and class-level evidence on the synthetic birds, one run.

    .venv/bin/python benchmarks/synth_ground_truth.py --out /tmp/synthgt-bench

Generates synthetic birds and trains the paper's simple CNN on them (``xmetrics_tables.make_synth_run``, or
``--run``/``--data``), then scores Grad-CAM, IG and LIME (small budget) beside the random and centre baselines
with :func:`birdlens.explain.metrics.evaluate_explanations` and measures class-level evidence with
:func:`birdlens.explain.metrics.class_evidence.evaluate_class_evidence`. Prints one table: each metric's mean
with its 95% bootstrap interval, and each method's mean divided by the random baseline's (the ratio the
metric must put above 1 for a method that is better than chance).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from xmetrics_tables import make_synth_run

METRICS = ("background_independence", "target_sensitivity", "part_rank_corr")
RANDOM = "random (baseline)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--per-class-evidence", type=int, default=4)
    ap.add_argument("--methods", default="gradcam,ig,lime")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from birdlens.data import load_manifest
    from birdlens.explain.metrics.class_evidence import evaluate_class_evidence
    from birdlens.explain.metrics.evaluate import evaluate_explanations
    from birdlens.runs.trained import load_trained

    run, data = args.run, args.data
    if run is None or data is None:
        run, data = make_synth_run(args.out, args.classes, args.per_class, args.size, args.epochs, args.seed)
    trained, manifest = load_trained(run), load_manifest(data)
    methods = [m for m in args.methods.split(",") if m]
    params = {"lime": {"num_samples": 100}, "ig": {"steps": 16}}
    t0 = time.perf_counter()
    res = evaluate_explanations(
        trained,
        manifest,
        methods,
        n=args.n,
        out_dir=args.out / "eval",
        seed=args.seed,
        n_steps=8,
        sanity_n=0,
        stability_n=0,
        variants_n=args.n,
        method_params=params,
        figures=False,
        quiet=True,
    )
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate_class_evidence(
        trained,
        manifest,
        methods,
        n_per_class=args.per_class_evidence,
        out_dir=args.out / "evidence",
        seed=args.seed,
        method_params=params,
    )
    t_ev = time.perf_counter() - t0
    print(f"model: {trained.model_name}, sample accuracy {res['sample']['accuracy']:.3f}, n = {args.n}")
    print("| method | " + " | ".join(METRICS) + " | class-evidence mean rho | s/image |")
    print("|---" * (len(METRICS) + 3) + "|")
    rand = res["methods"][RANDOM]
    for name, per in res["methods"].items():
        cells = []
        for m in METRICS:
            st, base = per.get(m), rand.get(m)
            if not st or st["mean"] is None:
                cells.append("—")
                continue
            ratio = "" if not base or not base["mean"] else f", x{st['mean'] / base['mean']:.2f} random"
            cells.append(f"{st['mean']:.3f} [{st['ci95'][0]:.3f}, {st['ci95'][1]:.3f}]{ratio}")
        rho = ev["mean_agreement"].get(name)
        cells.append("—" if rho is None else f"{rho:.3f}")
        cells.append(f"{res['seconds_per_image'].get(name, float('nan')):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"explain-eval {t_eval:.0f} s, class evidence {t_ev:.0f} s")


if __name__ == "__main__":
    main()
