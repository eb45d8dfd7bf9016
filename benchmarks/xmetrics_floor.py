"""The forward floor of ``explain-eval`` (issue 24): how fast the default run on N photos could be on this machine.

    .venv/bin/python benchmarks/xmetrics_floor.py --run RUN [--n 50] [--sanity-n 8] [--stability-n 8]
        [--counts COUNTS.json]   # re-time on a quiet machine without counting again

1. Counts the model evaluations of the default run per phase and method: one real, counted
   :func:`evaluate_explanations` on ``--count-n`` photos (sanity and stability on one of them) at the default
   budgets, scaled per phase to ``--n`` photos (``sanity`` x ``--sanity-n``, ``stability`` x
   ``--stability-n``, every other phase x ``--n / --count-n``).
2. Measures the best throughput of the run's model on this machine in the same process: no-grad rows per second
   (channels_last, the best of several batch sizes) and forward+backward rows per second (input gradients,
   what IG and Grad-CAM run), one process; then the no-grad rate of two processes running at once (what
   ``--devices 2`` can get from two cores).
3. Prints the floor: evaluations / best throughput, per phase, with and without the sanity and stability
   phases. A run cannot be faster than its floor, so a floor above a time target proves the target needs fewer
   evaluations (smaller method budgets), cheaper ones (bf16) or faster hardware, not better code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"
CHUNKS = (2, 4, 8, 16, 32)
#: methods whose rows run a backward pass too (the gradient rate applies to them)
GRADIENT = {"ig", "gradcam", "gradcampp", "layercam", "hirescam", "xgradcam", "saliency", "smoothgrad"}


def rows_per_second(model: torch.nn.Module, size: int, chunk: int, grad: bool, seconds: float) -> float:
    """Rows per second of one batch size, timed for ``seconds`` after a warm-up batch."""
    x = torch.randn(chunk, 3, size, size).contiguous(memory_format=torch.channels_last)

    def once() -> None:
        if grad:
            xi = x.clone().requires_grad_(True)
            (_g,) = torch.autograd.grad(model(xi)[:, 0].sum(), xi)
        else:
            with torch.inference_mode():
                model(x)

    once()
    t0, rows = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        once()
        rows += chunk
    return rows / (time.perf_counter() - t0)


def best_rate(model: torch.nn.Module, size: int, grad: bool, seconds: float) -> tuple[float, int]:
    rates = {c: rows_per_second(model, size, c, grad, seconds) for c in CHUNKS}
    chunk = max(rates, key=lambda c: rates[c])
    return rates[chunk], chunk


def _model(run: Path) -> tuple[torch.nn.Module, int]:
    from birdlens.runs.trained import load_trained

    trained = load_trained(run)
    model = trained.model.eval().to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, int(trained.image_size)


def count(args: argparse.Namespace) -> dict[str, Any]:
    from birdlens.data import load_manifest
    from birdlens.explain.metrics.evaluate import evaluate_explanations
    from birdlens.runs.trained import load_trained

    res = evaluate_explanations(
        load_trained(args.run),
        load_manifest(SHARED),
        args.methods.split(","),
        n=args.count_n,
        seed=0,
        sanity_n=1,
        stability_n=1,
        figures=False,
        quiet=True,
    )
    scale = {"sanity": args.sanity_n, "stability": args.stability_n}
    out: dict[str, Any] = {}
    for phase, e in res["evaluations"].items():
        k = scale.get(phase, args.n / args.count_n)
        methods = e["methods"] or {"-": {"evaluations": e["evaluations"]}}
        out[phase] = {m: round(v["evaluations"] * k) for m, v in methods.items()}
    return {"phases": out, "counted_seconds": res["seconds_total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a trained run on the shared birds")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--sanity-n", type=int, default=8)
    ap.add_argument("--stability-n", type=int, default=8)
    ap.add_argument("--count-n", type=int, default=2, help="photos of the counted run")
    ap.add_argument("--methods", default="gradcam,lime,shap,ig")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per batch size")
    ap.add_argument(
        "--counts", type=Path, help="JSON of an earlier count (written to --out) instead of counting"
    )
    ap.add_argument(
        "--out", type=Path, default=Path("/tmp/bl_xmetrics_floor.json"), help="the counts written"
    )
    ap.add_argument("--rate-only", action="store_true", help=argparse.SUPPRESS)  # the 2-process leg
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, size = _model(args.run)
    if args.rate_only:
        print(json.dumps(best_rate(model, size, False, args.seconds)))
        return
    load0 = os.getloadavg()[0]
    if args.counts:
        counts = json.loads(args.counts.read_text())
    else:
        counts = count(args)
        args.out.write_text(json.dumps(counts, indent=1))
    fwd, fwd_chunk = best_rate(model, size, False, args.seconds)
    bwd, bwd_chunk = best_rate(model, size, True, args.seconds)
    cmd = [sys.executable, __file__, "--run", str(args.run), "--rate-only", "--seconds", str(args.seconds)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    pair = [json.loads(p.communicate()[0].strip().splitlines()[-1])[0] for p in procs]
    two = sum(pair)
    print(
        f"{args.n} photos (sanity {args.sanity_n}, stability {args.stability_n}), methods {args.methods}, "
        f"{size} px; counted on {args.count_n} photos in {counts['counted_seconds']:.0f} s"
    )
    print(
        f"best throughput, 1 process: {fwd:.1f} rows/s no-grad (batch {fwd_chunk}), {bwd:.1f} rows/s "
        f"forward+backward (batch {bwd_chunk}); 2 processes at once: {pair[0]:.1f} + {pair[1]:.1f} = "
        f"{two:.1f} rows/s no-grad"
    )
    print(f"{'phase':<22}{'method':<12}{'evaluations':>12}{'floor 1 proc s':>16}{'floor 2 procs s':>17}")
    total = {"all": [0, 0.0, 0.0], "maps and curves": [0, 0.0, 0.0]}
    for phase, methods in counts["phases"].items():
        for m, ev in methods.items():
            rate = bwd if m in GRADIENT and phase in ("explain", "sanity") else fwd
            s1, s2 = ev / rate, ev / (rate * two / fwd)
            print(f"{phase:<22}{m:<12}{ev:>12,}{s1:>16.0f}{s2:>17.0f}")
            for key in total:
                if key == "all" or phase not in ("sanity", "stability"):
                    total[key][0] += ev
                    total[key][1] += s1
                    total[key][2] += s2
    for key, (ev, s1, s2) in total.items():
        print(f"{'total: ' + key:<34}{ev:>12,}{s1:>16.0f}{s2:>17.0f}  ({s2 / 60:.1f} min with 2 processes)")
    print(f"load average before {load0:.2f}, after {os.getloadavg()[0]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
