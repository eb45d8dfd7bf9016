"""The cost of measuring (issue 24): ``explain-eval``'s earlier settings against today's defaults, side by side.

    .venv/bin/python benchmarks/xmetrics_cost.py --run RUN [--n 4] [--sanity-n 4] [--stability-n 4]
        [--param lime.num_samples=100 ...] [--only new]

Runs :func:`evaluate_explanations` on the same seeded sample of shared test photos twice, in one process:

* **old**: the settings before issue 24 (224 deletion/insertion steps, 4 explained sanity-cascade points);
* **new**: today's defaults (``birdlens.explain.metrics.budgets``).

Both run on today's code, so the savings that change no value (the curves' shared ends, the stability run
with the evaluation's own seed) are in both; the old run is therefore a lower bound on the old cost. Printed:
model evaluations and seconds per phase, the largest per-image AUC difference, the first-ranked method per
metric and the sanity verdicts. ``--param`` lowers method budgets for both runs alike (the full budgets on
many photos take hours on the 2-core machine); ``--only new`` times the new defaults alone (e.g. on 50 photos).
The load average is printed: on the shared machine the seconds are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"
OLD = {"n_steps": 224, "sanity_points": 4}


def run(
    trained: Any, manifest: Any, args: argparse.Namespace, settings: dict[str, Any], out: Path
) -> dict[str, Any]:
    """One evaluation; its results dict with the per-image values (``per_image.json``) and the wall time."""
    from birdlens.explain.cli_params import parse_params
    from birdlens.explain.metrics.evaluate import evaluate_explanations

    t0 = time.perf_counter()
    res = evaluate_explanations(
        trained,
        manifest,
        args.methods.split(","),
        n=args.n,
        seed=0,
        sanity_n=args.sanity_n,
        stability_n=args.stability_n,
        method_params=parse_params(args.param),
        out_dir=out,
        figures=False,
        quiet=True,
        **settings,
    )
    res["wall"] = time.perf_counter() - t0
    res["per_image"] = json.loads((out / "per_image.json").read_text())["methods"]
    return res


def per_image_aucs(res: dict[str, Any]) -> dict[tuple[str, str], np.ndarray]:
    """``{(method, "deletion" | "insertion"): per-image AUCs}``."""
    return {
        (m, k): np.asarray(res["per_image"][m][k])
        for m in res["per_image"]
        for k in ("deletion", "insertion")
    }


def first_ranked(res: dict[str, Any]) -> dict[str, str]:
    return {metric: (order[0] if order else "-") for metric, order in res["ranking"].items()}


def side_by_side(old: dict[str, Any], new: dict[str, Any]) -> str:
    lines = [f"{'phase':<20}{'old evals':>11}{'old s':>9}{'new evals':>11}{'new s':>9}{'ratio':>8}"]
    for phase in old["evaluations"]:
        o, n = old["evaluations"][phase], new["evaluations"].get(phase, {"evaluations": 0, "seconds": 0.0})
        ratio = f"{o['evaluations'] / n['evaluations']:.1f}x" if n["evaluations"] else "-"
        lines.append(
            f"{phase:<20}{o['evaluations']:>11,}{o['seconds']:>9.1f}{n['evaluations']:>11,}"
            f"{n['seconds']:>9.1f}{ratio:>8}"
        )
    to, tn = (sum(e["evaluations"] for e in r["evaluations"].values()) for r in (old, new))
    lines.append(f"{'total':<20}{to:>11,}{old['wall']:>9.1f}{tn:>11,}{new['wall']:>9.1f}{to / tn:>7.1f}x")
    a, b = per_image_aucs(old), per_image_aucs(new)
    worst = max(a, key=lambda key: float(np.abs(a[key] - b[key]).max()))
    lines.append(
        f"largest per-image AUC difference: {float(np.abs(a[worst] - b[worst]).max()):.4f} "
        f"({worst[0]}, {worst[1]}; target <= 0.01)"
    )
    fo, fn = first_ranked(old), first_ranked(new)
    lines.append(f"{'metric':<20}{'old first':>22}{'new first':>22}")
    for metric in fo:
        mark = "" if fo[metric] == fn.get(metric) else "   CHANGED"
        lines.append(f"{metric:<20}{fo[metric]:>22}{fn.get(metric, '-'):>22}{mark}")
    vo, vn = old["sanity"]["verdicts"], new["sanity"]["verdicts"]
    lines.append("sanity verdicts old -> new: " + ", ".join(f"{m} {vo[m]} -> {vn.get(m)}" for m in vo))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a trained run on the shared birds")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--sanity-n", type=int, default=4)
    ap.add_argument("--stability-n", type=int, default=4)
    ap.add_argument("--methods", default="gradcam,lime,shap,ig")
    ap.add_argument("--param", action="append", default=[], help="METHOD.OPTION=VALUE for both runs")
    ap.add_argument("--only", choices=("new",), help="run the new defaults only (timing)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bl_xmetrics_cost"), help="results of both runs")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from birdlens.data import load_manifest
    from birdlens.explain.metrics.evaluation_count import format_evaluations
    from birdlens.runs.trained import load_trained

    trained, manifest = load_trained(args.run), load_manifest(SHARED)
    load0 = os.getloadavg()
    got: dict[str, dict[str, Any]] = {}
    for label, settings in (("new", {}),) if args.only else (("old", OLD), ("new", {})):
        got[label] = run(trained, manifest, args, settings, args.out / label)
        print(f"{label}: {got[label]['wall']:.1f} s", flush=True)
        print(format_evaluations(got[label]["evaluations"]), flush=True)
    if not args.only:
        print(
            f"\n{args.n} shared photos, sanity {args.sanity_n}, stability {args.stability_n}, params {args.param}"
        )
        print(side_by_side(got["old"], got["new"]))
    load1 = os.getloadavg()
    print(
        f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (2 cores; > 2 means neighbours were busy)"
    )


if __name__ == "__main__":
    main()
