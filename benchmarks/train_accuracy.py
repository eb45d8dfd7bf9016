"""Acceptance numbers of issue 3 on the shared bird photos (20 species, 42 train images each).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_accuracy.py --data ../shared/data/birds --out /tmp/bl_acc

Sections (``--only probe,finetune,cnn``):

* ``probe``: EfficientNet-Lite0 (bundled ImageNet weights) linear probe, train + evaluate wall time, with the
  torch L-BFGS and the scikit-learn solvers, next to a plain ``LogisticRegression()`` (C=1, raw features) on
  the very same cached features (the issue's ~0.96 reference);
* ``finetune``: Lite0 fine-tuned for a few epochs with the library's defaults, i.e. what
  ``birdlens train --model efficientnet_lite0 --mode finetune --epochs 3`` does (LP-FT: probe-initialised head,
  frozen BatchNorm statistics, head LR 1e-4, backbone LR 2e-5, no augmentation, no label smoothing);
* ``cnn``: the study's simple CNN from scratch at a CPU-friendly size (``--cnn-size``, default 64 px),
  ``keras-paper`` augmentation vs ``none``, over seeds (``--cnn-epochs``, default 120; batch 32, Adam 1e-3,
  cosine schedule, no early stopping, best-validation-loss weights evaluated). 40 epochs is too short: the
  augmented runs still under-fit there and lose; at 120 they win (measured: docs/benchmarks.md#training). On 2 cores, split the six
  runs over two processes and pool them::

      for a in none keras-paper; do OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_accuracy.py \
          --only cnn --augments $a --out /tmp/bl_cnn_$a & done; wait
      .venv/bin/python benchmarks/train_accuracy.py --summarise /tmp/bl_cnn_*/results.json --out /tmp/bl_cnn

Everything runs single-threaded (``OMP_NUM_THREADS=1``); the machine's load average is printed, because this
2-core machine is shared and timings scale with how busy it is. Results go to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BIRDLENS_QUIET", "1")

import torch

torch.set_num_threads(1)

from birdlens.train import TrainConfig, train  # noqa: E402
from birdlens.utils.atomic import write_json  # noqa: E402


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.1f} / {b:.1f} / {c:.1f} on {os.cpu_count()} cores"


def _metrics(run: Path, split: str = "test") -> dict[str, Any]:
    return json.loads((run / "metrics" / f"{split}.json").read_text())


def _meta(run: Path) -> dict[str, Any]:
    return json.loads((run / "meta.json").read_text())


def _row(name: str, run: Path, wall: float) -> dict[str, Any]:
    m, meta = _metrics(run), _meta(run)
    return {
        "name": name,
        "run": str(run),
        "test_accuracy": m["accuracy"],
        "ci95": m["accuracy_ci95"],
        "macro_f1": m["macro_f1"],
        "ece": m["ece"],
        "n": m["n"],
        "wall_seconds": wall,
        "train_seconds": meta.get("train_seconds"),
        "load": _load(),
    }


def section_probe(data: str, out: Path, cache: str) -> list[dict[str, Any]]:
    rows = []
    for solver in ("lbfgs", "sklearn"):
        t = time.perf_counter()
        run = train(
            TrainConfig(
                data=data,
                out=str(out / f"probe_{solver}"),
                model="efficientnet_lite0",
                mode="probe",
                probe_solver=solver,
                feature_cache=cache,
            ),
            force=True,
        )
        wall = time.perf_counter() - t
        r = _row(f"lite0 probe ({solver})", run, wall)
        p = _meta(run)["probe"]
        r.update(
            extract_seconds=p["extract_seconds"],
            fit_seconds=p["fit_seconds"],
            c=p["c"],
            cache=p["feature_cache"]["train"],
        )
        rows.append(r)
        print(json.dumps(r), flush=True)
    rows.append(plain_sklearn_reference(data, out, cache))
    print(json.dumps(rows[-1]), flush=True)
    return rows


def plain_sklearn_reference(data: str, out: Path, cache: str) -> dict[str, Any]:
    """``LogisticRegression()`` with default settings on the same (cached) Lite0 features, test split."""
    from sklearn.linear_model import LogisticRegression

    from birdlens.evaluate.metrics import wilson_interval
    from birdlens.models import create_model, get_model_info
    from birdlens.train.config import resolve
    from birdlens.train.context import RunContext
    from birdlens.train.data import prepare_data
    from birdlens.train.probe import probe_features

    cfg = TrainConfig(
        data=data,
        out=str(out / "unused"),
        model="efficientnet_lite0",
        mode="probe",
        feature_cache=cache,
        quiet=True,
    )
    rd = prepare_data(data, quiet=True)
    model = create_model(cfg.model, num_classes=len(rd.classes))
    info = get_model_info(model)
    cfg = resolve(cfg, info.data_config.input_size)
    ctx = RunContext(cfg=cfg, out=out, data=rd, model=model, info=info, data_config=info.data_config)
    t = time.perf_counter()
    xtr, ytr, _ = probe_features(ctx, "train")
    xte, yte, _ = probe_features(ctx, "test")
    feat_s = time.perf_counter() - t
    t = time.perf_counter()
    clf = LogisticRegression(max_iter=5000).fit(xtr, ytr)
    fit_s = time.perf_counter() - t
    k = int((clf.predict(xte) == yte).sum())
    return {
        "name": "plain sklearn LogisticRegression() on the same features",
        "test_accuracy": k / len(yte),
        "ci95": list(wilson_interval(k, len(yte))),
        "n": len(yte),
        "fit_seconds": fit_s,
        "feature_seconds_from_cache": feat_s,
        "load": _load(),
    }


def section_finetune(data: str, out: Path, cache: str, epochs: int) -> list[dict[str, Any]]:
    t = time.perf_counter()
    run = train(
        TrainConfig(
            data=data,
            out=str(out / "finetune_lite0"),
            model="efficientnet_lite0",
            mode="finetune",
            epochs=epochs,
            feature_cache=cache,
        ),
        force=True,
    )
    r = _row(f"lite0 finetune ({epochs} epochs, defaults: LP-FT, frozen BN)", run, time.perf_counter() - t)
    r["probe_init"] = _meta(run).get("probe_init")
    r["log"] = (run / "log.csv").read_text()
    print(json.dumps(r), flush=True)
    return [r]


def section_cnn(
    data: str,
    out: Path,
    epochs: int,
    seeds: list[int],
    image_cache: str,
    size: int = 64,
    augments: tuple[str, ...] = ("none", "keras-paper"),
) -> list[dict[str, Any]]:
    rows = []
    for augment in augments:
        for seed in seeds:
            t = time.perf_counter()
            run = train(
                TrainConfig(
                    data=data,
                    out=str(out / f"cnn_{augment}_s{seed}"),
                    model="simple_cnn",
                    mode="finetune",
                    augment=augment,
                    image_size=size,
                    epochs=epochs,
                    seed=seed,
                    batch_size=32,
                    patience=None,
                    warmup_epochs=0,
                    image_cache=image_cache,
                ),
                force=True,
            )
            r = _row(f"simple_cnn {size}px {epochs} ep {augment} seed {seed}", run, time.perf_counter() - t)
            r.update(
                augment=augment, seed=seed, image_size=size, epochs=epochs, valid=_meta(run).get("valid")
            )
            rows.append(r)
            print(json.dumps(r), flush=True)
    for augment in augments:
        accs = [r["test_accuracy"] for r in rows if r["augment"] == augment]
        print(
            f"simple_cnn {size}px {epochs} epochs {augment}: mean test accuracy {statistics.mean(accs):.3f} "
            f"over seeds {seeds}: {[round(a, 3) for a in accs]}"
        )
    return rows


def summarise_cnn(result_files: list[str]) -> dict[str, Any]:
    """Pool the ``cnn`` rows of several ``results.json`` (runs split over processes) and compare presets:
    mean test accuracy per preset over seeds with a 95% Student-t interval, and the per-seed paired
    difference ``keras-paper - none`` with its own interval (the study's claim holds if it excludes zero)."""
    from birdlens.evaluate.metrics import t_interval

    rows = [r for f in result_files for r in json.loads(Path(f).read_text()).get("cnn", [])]
    by: dict[str, dict[int, float]] = {}
    for r in rows:
        by.setdefault(r["augment"], {})[r["seed"]] = r["test_accuracy"]
    out: dict[str, Any] = {"runs": len(rows), "presets": {}}
    for aug, accs in sorted(by.items()):
        m, lo, hi = t_interval(list(accs.values()))
        out["presets"][aug] = {
            "seeds": sorted(accs),
            "test_accuracy": [accs[s] for s in sorted(accs)],
            "mean": m,
            "ci95": [lo, hi],
        }
        print(
            f"{aug:12s} seeds {sorted(accs)}: {[round(accs[s], 3) for s in sorted(accs)]} "
            f"mean {m:.3f} [{lo:.3f}, {hi:.3f}]"
        )
    if {"none", "keras-paper"} <= by.keys():
        seeds = sorted(by["none"].keys() & by["keras-paper"].keys())
        diffs = [by["keras-paper"][s] - by["none"][s] for s in seeds]
        m, lo, hi = t_interval(diffs)
        out["keras_minus_none"] = {"seeds": seeds, "diffs": diffs, "mean": m, "ci95": [lo, hi]}
        verdict = (
            "keras-paper beats none" if lo > 0 else "none beats keras-paper" if hi < 0 else "no evidence"
        )
        print(
            f"keras-paper - none, paired by seed {seeds}: {[round(d, 3) for d in diffs]} "
            f"mean {m:+.3f} [{lo:+.3f}, {hi:+.3f}] -> {verdict}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "birds"))
    ap.add_argument("--out", default="/tmp/birdlens_train_accuracy")
    ap.add_argument("--only", default="probe,finetune,cnn")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--cnn-epochs", type=int, default=120)
    ap.add_argument("--cnn-size", type=int, default=64, help="simple_cnn input size in px")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--augments",
        nargs="+",
        default=["none", "keras-paper"],
        help="simple_cnn augmentation presets to compare (run them in two processes to use 2 cores)",
    )
    ap.add_argument(
        "--image-cache", default=None, help="decoded-image cache folder (default: OUT/image_cache)"
    )
    ap.add_argument(
        "--summarise",
        nargs="+",
        metavar="RESULTS_JSON",
        help="only pool the simple_cnn rows of these results.json files and compare the presets",
    )
    args = ap.parse_args(argv)
    if args.summarise:
        summary = summarise_cnn(args.summarise)
        write_json(Path(args.out) / "cnn_summary.json", summary)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = str(out / "feature_cache")
    results: dict[str, Any] = {"start": _load(), "threads": torch.get_num_threads()}
    print(results["start"], flush=True)
    parts = args.only.split(",")
    if "probe" in parts:
        results["probe"] = section_probe(args.data, out, cache)
    if "finetune" in parts:
        results["finetune"] = section_finetune(args.data, out, cache, args.finetune_epochs)
    if "cnn" in parts:
        results["cnn"] = section_cnn(
            args.data,
            out,
            args.cnn_epochs,
            args.seeds,
            args.image_cache or str(out / "image_cache"),
            size=args.cnn_size,
            augments=tuple(args.augments),
        )
    results["end"] = _load()
    write_json(out / "results.json", results)
    print(results["end"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
