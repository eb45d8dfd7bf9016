"""Acceptance of the shortcut audit (issue 25): planted cues, a model trained on them, the audit scored.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shortcut_audit.py --out /tmp/bl_audit \
        --cues patch border --seeds 0 1 2 --model simple_cnn

Per (cue kind, seed): a synthetic dataset (``--classes``, default 10) with the cue planted in 3 classes
(p = 0.9 in train/valid; test images of every class cued with p = 0.5), or ``--real DIR`` (the shared
photos, 3 of 20 species); a run trained on it (``--model``: ``simple_cnn`` from scratch, or
``efficientnet_lite0`` fine-tuned); then, side by side from the same run:

* test accuracy on the clean test images and on the cued ones (the cue is decorrelated in test);
* per planted class, whether the model *relies on* the cue, measured without the audit: the true cue is
  pasted onto other classes' clean test images (not already predicted as the class); relied on when at least
  10% flip to the planted class, ignored under 2%;
* the audit (:func:`birdlens.explain.audit.core.audit_run`, never given the cue), scored: recall over the
  relied-on planted classes and the share of clean classes flagged.

Results: ``OUT/results.json`` and one JSON line per run on stdout; the summary table at the end.
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
os.environ.setdefault("BIRDLENS_QUIET", "1")

import numpy as np
import torch

torch.set_num_threads(1)

from PIL import Image  # noqa: E402

from birdlens.data.layouts import load_manifest  # noqa: E402
from birdlens.data.shortcuts import choose_classes, make_cue, plant_shortcut, read_shortcut  # noqa: E402
from birdlens.data.synth import generate_dataset  # noqa: E402
from birdlens.explain.audit.core import AuditConfig, audit_run, predict  # noqa: E402
from birdlens.explain.audit.counterfactual import wilson_interval  # noqa: E402
from birdlens.models import eval_geometry  # noqa: E402
from birdlens.runs.trained import load_trained  # noqa: E402
from birdlens.train import TrainConfig, train  # noqa: E402
from birdlens.utils.atomic import write_json  # noqa: E402


def _photo(trained: Any, arr: np.ndarray) -> np.ndarray:
    geom = eval_geometry(trained.data_config, trained.image_size)
    return torch.as_tensor(geom(torch.from_numpy(arr.copy()).permute(2, 0, 1))).permute(1, 2, 0).numpy()


def _raw(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def score_reliance(trained: Any, data: Path) -> dict[str, Any]:
    """Accuracy with and without the cue, and per planted class the true cue's flip rate (no audit)."""
    truth = read_shortcut(data)
    cue, cued = truth["cue"], truth["images"]
    test = load_manifest(data).split("test")
    rel = [Path(r.path).relative_to(data).as_posix() for r in test]
    labels = np.array([trained.classes.index(r.label) for r in test])
    has_cue = np.array([k in cued for k in rel])
    photos = np.stack([_photo(trained, _raw(r.path)) for r in test])
    pred = predict(trained, photos)
    out: dict[str, Any] = {
        "acc_clean": float((pred == labels)[~has_cue].mean()),
        "acc_cued": float((pred == labels)[has_cue].mean()) if has_cue.any() else None,
        "reliance": {},
        "reliance_n": {},  # recipients per planted class: the rate's precision (Wilson interval in the summary)
    }
    clean = np.nonzero(~has_cue)[0]
    pasted = np.stack([_photo(trained, cue.apply(_raw(test[i].path))[0]) for i in clean])
    after = predict(trained, pasted)
    for name in truth["classes"]:
        c = trained.classes.index(name)
        ok = (labels[clean] != c) & (pred[clean] != c)
        out["reliance"][name] = float((after[ok] == c).mean()) if ok.any() else 0.0
        out["reliance_n"][name] = int(ok.sum())
    return out


def _train(data: Path, run: Path, args: argparse.Namespace, seed: int) -> Path:
    cnn = args.model == "simple_cnn"
    train(
        TrainConfig(
            data=str(data),
            out=str(run),
            model=args.model,
            mode=args.mode,
            image_size=args.size,
            epochs=args.epochs,
            seed=seed,
            batch_size=32,
            patience=None,
            warmup_epochs=0 if cnn else 0.5,
            quiet=True,
        ),
        force=True,
    )
    return run


def one(args: argparse.Namespace, kind: str, seed: int) -> dict[str, Any] | None:
    """Plant, train, score reliance, audit, score the audit: one row."""
    base = Path(args.out) / f"{'real' if args.real else 'synth'}_{args.model}_{args.mode}_{kind}_s{seed}"
    data, t0 = base / "data", time.perf_counter()
    if args.score_only and not (base / "run" / "metrics").is_dir():
        return None  # nothing to score: plant and train nothing
    if not (data / "shortcut.json").is_file():
        if args.real:
            src = load_manifest(args.real)
            plant_shortcut(
                src, data, make_cue(kind), choose_classes(src.classes, 3, seed), p=args.p, seed=seed
            )
        else:
            m = generate_dataset(
                data,
                classes=args.classes,
                per_class=args.per_class,
                size=args.size,
                seed=seed,
                quiet=True,
                force=True,
            )
            plant_shortcut(m, None, make_cue(kind), choose_classes(m.classes, 3, seed), p=args.p, seed=seed)
    t_data = time.perf_counter() - t0
    run = base / "run"
    finished = (run / "metrics").is_dir()  # written at the very end of training
    if args.score_only and not finished:
        return None
    if not finished or args.retrain:
        _train(data, run, args, seed)
    t_train = time.perf_counter() - t0 - t_data
    trained = load_trained(run)
    score = score_reliance(trained, data)
    t1 = time.perf_counter()
    cfg = AuditConfig(
        method=args.audit_method,
        seed=seed,
        per_class=args.audit_per_class,
        recipients=args.audit_recipients,
        flag_background=args.flag_background,
        threshold=args.audit_threshold,
        alpha=None if args.audit_alpha is None or args.audit_alpha < 0 else args.audit_alpha,
        mark_control=args.audit_mark_control,
    )
    audit = audit_run(trained, load_manifest(data), base / f"audit_{args.audit_method}{args.tag}", cfg)
    t_audit = time.perf_counter() - t1
    planted = set(read_shortcut(data)["classes"])
    relied = [c for c, r in score["reliance"].items() if r >= 0.10]
    ignored = [c for c, r in score["reliance"].items() if r < 0.02]
    flagged = set(audit["flagged"])
    clean = [c for c in trained.classes if c not in planted]
    row = {
        "data": "real" if args.real else "synth",
        "model": f"{args.model} {args.mode}",
        "cue": kind,
        "audit_method": args.audit_method,
        "seed": seed,
        **{k: v for k, v in score.items() if k not in ("reliance", "reliance_n")},
        "reliance": score["reliance"],
        "reliance_ci95": {
            c: [
                round(b, 3)
                for b in wilson_interval(round(r * score["reliance_n"][c]), score["reliance_n"][c])
            ]
            for c, r in score["reliance"].items()
        },
        "relied": len(relied),
        "ignored": len(ignored),
        "found": sum(c in flagged for c in relied),
        "flagged_ignored": sum(c in flagged for c in ignored),
        "clean": len(clean),
        "clean_flagged": sum(c in flagged for c in clean),
        "flip_rates": {c: round(v["flip_rate"], 3) for c, v in audit["classes"].items()},
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "audit": round(t_audit, 1)},
    }
    print(json.dumps(row), flush=True)
    return row


def summary(rows: list[dict[str, Any]]) -> str:
    """Recall over relied-on planted classes and the clean classes' flag rate, per (data, model, cue)."""
    lines = []
    for key in sorted({(r["data"], r["model"], r["cue"], r["audit_method"]) for r in rows}):
        rs = [r for r in rows if (r["data"], r["model"], r["cue"], r["audit_method"]) == key]
        relied, found = sum(r["relied"] for r in rs), sum(r["found"] for r in rs)
        clean, cf = sum(r["clean"] for r in rs), sum(r["clean_flagged"] for r in rs)
        acc_c = statistics.mean(r["acc_clean"] for r in rs)
        acc_q = statistics.mean(r["acc_cued"] for r in rs if r["acc_cued"] is not None)
        lines.append(
            f"{'/'.join(key)} seeds {[r['seed'] for r in rs]}: recall {found}/{relied}"
            f" = {found / relied if relied else float('nan'):.2f} (planted classes relied on; "
            f"{sum(r['ignored'] for r in rs)} ignored), clean classes flagged {cf}/{clean} = {cf / clean:.2f}; "
            f"test accuracy clean {acc_c:.3f}, cued {acc_q:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cues", nargs="+", default=["patch", "border"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--model", default="simple_cnn")
    ap.add_argument("--real", type=Path, default=None, help="plant into this real dataset instead of synth")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--p", type=float, default=0.9)
    ap.add_argument("--mode", default="finetune", choices=["finetune", "probe"])
    ap.add_argument("--audit-method", default=AuditConfig.method, help="explainer the audit clusters")
    ap.add_argument("--audit-per-class", type=int, default=AuditConfig.per_class)
    ap.add_argument("--audit-recipients", type=int, default=AuditConfig.recipients)
    ap.add_argument("--flag-background", action="store_true", help="AuditConfig.flag_background")
    ap.add_argument("--audit-threshold", type=float, default=AuditConfig.threshold)
    ap.add_argument(
        "--audit-alpha", type=float, default=AuditConfig.alpha, help="AuditConfig.alpha (negative: None)"
    )
    ap.add_argument("--audit-mark-control", action="store_true", help="AuditConfig.mark_control")
    ap.add_argument("--tag", default="", help="suffix of the audit folder and results file (keeps old ones)")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--score-only", action="store_true", help="score finished runs again; train nothing")
    args = ap.parse_args()
    a, b, c = os.getloadavg()
    print(f"load average {a:.1f} / {b:.1f} / {c:.1f} on {os.cpu_count()} cores", flush=True)
    rows = [r for kind in args.cues for seed in args.seeds if (r := one(args, kind, seed)) is not None]
    write_json(
        Path(args.out) / f"results_{rows[0]['data'] if rows else 'none'}_{args.audit_method}{args.tag}.json",
        {"args": vars(args), "rows": rows},
    )
    print(summary(rows))


if __name__ == "__main__":
    main()
