"""The explanation-quality tables for the report: Grad-CAM, LIME, SHAP, IG and the baselines, with intervals.

    .venv/bin/python benchmarks/xmetrics_tables.py --real-run RUN --synth-run RUN --synth-data DIR --out DIR

* real photos: ``../shared/data/birds`` (20 species, test split) with a Lite0 run (probe or fine-tune; if
  ``--real-run`` is not given, a linear probe is trained with ``birdlens.train``);
* synthetic birds: a dataset from ``birdlens data synth`` and a model trained on it (``--synth-run``; if not
  given, 4 classes x 100 birds at 64 px are generated and the paper's simple CNN is trained on them here).

Everything goes through :func:`birdlens.explain.metrics.evaluate_explanations`; this script only picks the
budgets (printed with the tables: n, steps, explainer budgets) and writes ``tables.md`` beside each
``results.json``. On a busy 2-core CPU the LIME/SHAP budgets are the knob that decides the run time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from birdlens.explain.metrics.base import Direction, metric_info
from birdlens.explain.metrics.summary import rank_methods
from birdlens.explain.metrics.table import _metric_order

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"


def markdown(results: dict[str, Any], title: str) -> str:
    """Methods x metrics table, ``mean [lo, hi]`` and the rank, plus one ranking line per metric."""
    summary = results["methods"]
    ranking = rank_methods(summary)
    metrics = _metric_order(ranking)
    head = (
        "| method | "
        + " | ".join(f"{m} {Direction(metric_info(m)['direction']).arrow}" for m in metrics)
        + " |"
    )
    lines = [f"### {title}", "", head, "|" + "---|" * (len(metrics) + 1)]
    for meth in summary:
        cells = []
        for m in metrics:
            st = summary[meth].get(m)
            if not st or st["mean"] is None:
                cells.append("—")
                continue
            r = ranking[m].index(meth) + 1
            cells.append(f"{st['mean']:.3f} [{st['ci95'][0]:.3f}, {st['ci95'][1]:.3f}] #{r}")
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in metrics:
        tr = results.get("top_resolved", {}).get(m)
        note = (
            "" if tr is None else (" (best vs #2 resolved)" if tr["resolved"] else " (best and #2 overlap)")
        )
        lines.append(
            f"- {m} {Direction(metric_info(m)['direction']).arrow}: " + " > ".join(ranking[m]) + note
        )
    verdicts = results["sanity"]["verdicts"]
    lines.append(
        f"- sanity check (fail if |rho| after full randomisation > {results['sanity']['threshold']}): "
        + ", ".join(f"{k}: {v}" for k, v in verdicts.items())
    )
    s = results["sample"]
    lines.append(
        f"- n = {results['data']['n']} images ({results['data']['split']} split), target = "
        f"{s['target']}, model accuracy on the sample {s['accuracy']:.3f}, mean target prob "
        f"{s['mean_target_prob']:.3f}; sanity n = {results['sanity']['n']}; settings: "
        + json.dumps(
            {k: results["settings"][k] for k in ("n_steps", "sanity_points", "stability_n", "method_params")}
        )
    )
    lines.append(
        "- explain seconds per image: "
        + ", ".join(f"{k} {v:.2f}" for k, v in results["seconds_per_image"].items())
        + f"; total {results['seconds_total']:.0f} s"
    )
    return "\n".join(lines) + "\n"


def train_probe(out: Path) -> Path:
    from birdlens.train.api import train
    from birdlens.train.config import TrainConfig

    train(TrainConfig(data=str(SHARED), out=str(out), model="efficientnet_lite0", mode="probe"), force=True)
    return out


def make_synth_run(
    out: Path, classes: int, per_class: int, size: int, epochs: int, seed: int
) -> tuple[Path, Path]:
    """Generate synthetic birds and train the paper's simple CNN on them with a plain loop (fast on a busy
    CPU: images are decoded once), saved as a birdlens run (``best.safetensors`` + ``meta.json``)."""
    from torch import nn

    from birdlens.data.images import load_rgb
    from birdlens.data.synth import generate_dataset
    from birdlens.models import DataConfig, create_model, eval_transform
    from birdlens.runs.trained import save_weights
    from birdlens.utils.atomic import write_json

    data, run = out / "synth_data", out / "synth_run"
    if not (data / "manifest.csv").is_file():
        generate_dataset(data, classes=classes, per_class=per_class, size=size, seed=seed, quiet=True)
    if (run / "meta.json").is_file():
        return run, data / "manifest.csv"
    from birdlens.data import load_manifest

    man = load_manifest(data / "manifest.csv")
    dc = DataConfig(
        input_size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0
    )
    tf = eval_transform(dc)
    idx = man.class_to_idx

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        recs = man.split(split).records
        return torch.stack([tf(load_rgb(r.path)) for r in recs]), torch.tensor([idx[r.label] for r in recs])

    xtr, ytr = tensors("train")
    xva, yva = tensors("valid")
    torch.manual_seed(seed)
    model = create_model("simple_cnn", num_classes=len(idx), pretrained=False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    best, best_state = -1.0, None
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 32):
            j = perm[i : i + 32]
            flip = torch.rand(len(j)) < 0.5  # mirrored birds are the same species
            xb = torch.where(flip[:, None, None, None], xtr[j].flip(3), xtr[j])
            loss = nn.functional.cross_entropy(model(xb), ytr[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xva).argmax(1) == yva).float().mean().item()
        print(f"  synth epoch {ep}: loss {loss.item():.3f}, valid acc {acc:.3f}", flush=True)
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    save_weights(model, run / "best.safetensors")
    write_json(
        run / "meta.json",
        {
            "model": "simple_cnn",
            "classes": man.classes,
            "num_classes": len(idx),
            "data_config": dc.to_dict(),
            "image_size": size,
            "cam_layer": "features.2.act",
            "mode": "finetune (plain loop)",
            "epochs": epochs,
            "valid": {"accuracy": best},
            "data": str(data),
        },
    )
    return run, data / "manifest.csv"


def run_one(
    label: str,
    run: Path,
    data: Path,
    out: Path,
    n: int,
    steps: int,
    params: dict[str, Any],
    sanity_n: int,
    stability_n: int,
    methods: list[str],
    seed: int,
    sanity_points: int,
) -> str:
    from birdlens.data import load_manifest
    from birdlens.explain.metrics.evaluate import evaluate_explanations
    from birdlens.runs.trained import load_trained

    trained = load_trained(run)
    manifest = load_manifest(data)
    t0 = time.perf_counter()
    res = evaluate_explanations(
        trained,
        manifest,
        methods,
        n=n,
        out_dir=out,
        seed=seed,
        n_steps=steps,
        sanity_n=sanity_n,
        stability_n=stability_n,
        method_params=params,
        sanity_points=sanity_points,
        print_table=True,
    )
    md = markdown(res, f"{label}: {trained.model_name} ({run}), data {data}")
    (out / "tables.md").write_text(md, encoding="utf-8")
    print(md, flush=True)
    print(f"[{label}] {time.perf_counter() - t0:.0f} s", flush=True)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("xmetrics_tables"))
    ap.add_argument("--which", choices=("real", "synth", "both"), default="both")
    ap.add_argument("--methods", default="gradcam,lime,shap,ig")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-run", type=Path)
    ap.add_argument("--real-data", type=Path, default=SHARED)
    ap.add_argument("--real-n", type=int, default=12)
    ap.add_argument("--real-steps", type=int, default=16)
    ap.add_argument("--real-lime", type=int, default=1000, help="LIME num_samples on the photos")
    ap.add_argument("--real-shap", type=int, default=500, help="SHAP max_evals on the photos")
    ap.add_argument("--real-ig", type=int, default=16, help="IG steps on the photos")
    ap.add_argument("--real-sanity-n", type=int, default=4)
    ap.add_argument("--real-stability-n", type=int, default=2)
    ap.add_argument("--real-sanity-points", type=int, default=3)
    ap.add_argument("--synth-run", type=Path)
    ap.add_argument("--synth-data", type=Path)
    ap.add_argument("--synth-classes", type=int, default=4)
    ap.add_argument("--synth-per-class", type=int, default=100)
    ap.add_argument("--synth-size", type=int, default=64)
    ap.add_argument("--synth-epochs", type=int, default=25)
    ap.add_argument("--synth-n", type=int, default=30)
    ap.add_argument("--synth-steps", type=int, default=48)
    ap.add_argument("--synth-sanity-n", type=int, default=8)
    ap.add_argument("--synth-stability-n", type=int, default=8)
    ap.add_argument("--synth-sanity-points", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    out: list[str] = []
    if args.which in ("synth", "both"):
        synth_run, synth_data = args.synth_run, args.synth_data
        if synth_run is None or synth_data is None:
            synth_run, synth_data = make_synth_run(
                args.out,
                args.synth_classes,
                args.synth_per_class,
                args.synth_size,
                args.synth_epochs,
                args.seed,
            )
        # SHAP's default blur kernel (128 px) is sized for 224 px inputs: scale it to the synthetic size
        synth_params = {"shap": {"blur_kernel": max(3, round(128 * args.synth_size / 224))}}
        out.append(
            run_one(
                "synthetic birds",
                synth_run,
                synth_data,
                args.out / "synth",
                args.synth_n,
                args.synth_steps,
                synth_params,
                args.synth_sanity_n,
                args.synth_stability_n,
                methods,
                args.seed,
                args.synth_sanity_points,
            )
        )
    if args.which in ("real", "both"):
        run = args.real_run or train_probe(args.out / "lite0_probe")
        params = {
            "lime": {"num_samples": args.real_lime},
            "shap": {"max_evals": args.real_shap},
            "ig": {"steps": args.real_ig},
        }
        out.append(
            run_one(
                "real photos",
                run,
                args.real_data,
                args.out / "real",
                args.real_n,
                args.real_steps,
                params,
                args.real_sanity_n,
                args.real_stability_n,
                methods,
                args.seed,
                args.real_sanity_points,
            )
        )
    print(f"load average at the end: {os.getloadavg()}")
    (args.out / "tables.md").write_text("\n".join(out), encoding="utf-8")


if __name__ == "__main__":
    main()
