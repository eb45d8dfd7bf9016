"""FD-lite0 along long GAN runs: every snapshot of every run, live and EMA generators, and the cgan/dcgan ratio.

Why: one FD number at one budget hid that the cgan's EMA copy sampled worse than its live weights early on,
and a short CPU budget says little about where the curves go. Train with snapshots (or resume in chunks and
copy the checkpoint), then measure them all against the same real images with one feature extractor:

    birdlens gan train --data D --out runs/c --arch cgan  --width 16 --batch-size 16 --iterations 20000 \
        --snapshot-every 1500
    birdlens gan train --data D --out runs/d --arch dcgan --width 32 --batch-size 16 --iterations 20000 \
        --snapshot-every 1500
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan_curve.py --data D --runs runs/c runs/d --out runs/curve

A snapshot is any ``*.safetensors`` under ``RUN/snapshots`` (plus ``RUN/checkpoint.safetensors``). Results
are cached per file in ``OUT/curve.json``, so re-running after more training measures only the new ones.
Writes ``curve.json``, ``curve.md`` (table + ratio at every iteration both runs reached) and ``curve.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from birdlens.augment.gan.checkpoint import load_meta
from birdlens.augment.gan.data import load_images, resolve_manifest, select, to_unit
from birdlens.augment.gan.evaluate import sample_images
from birdlens.augment.gan.features import Lite0Features, extract
from birdlens.augment.gan.metrics import (
    frechet_distance,
    kernel_distance,
    prdc_keys,
    precision_recall_density_coverage,
)
from birdlens.augment.gan.train import CHECKPOINT, LoadedGenerator, load_generator
from birdlens.data.manifest import Manifest
from birdlens.utils.atomic import atomic_path, write_json, write_text

PRDC_K = 5  # nearest neighbours for precision, recall and coverage (Naeem et al. 2020 use 5)


def snapshots(run: Path) -> list[Path]:
    files = sorted((run / "snapshots").glob("*.safetensors"))
    if (run / CHECKPOINT).exists():
        files.append(run / CHECKPOINT)
    return files


def measure(
    g: LoadedGenerator, real: np.ndarray, labels: torch.Tensor, feats: Lite0Features, seed: int
) -> dict:
    assert g.cfg.z_dim is not None
    f_fake = extract(feats, sample_images(g.G, labels, g.cfg.z_dim, seed))
    kid, kid_sd, m = kernel_distance(real, f_fake, 100, 100, seed)
    prdc = precision_recall_density_coverage(real, f_fake, PRDC_K)
    return {
        "arch": g.cfg.arch,
        "iteration": g.iteration,
        "weights": g.weights,
        "FD-lite0": frechet_distance(real, f_fake),
        "KID-lite0": kid,
        "KID-lite0_std": kid_sd,
        "kid_subset_size": m,
        "n_real": len(real),
        "n_fake": len(f_fake),
        "seed": g.cfg.seed,
        **prdc_keys(prdc, "lite0"),
    }


def real_reference(
    m: Manifest, split: str, classes: list[str], size: int, feats: Lite0Features, real_f: np.ndarray
) -> dict | None:
    """The held-out real photos (valid, test) against the training ones: what new photos of the species score.

    The yardstick for the rows: a generator near it makes images as close to the training set as unseen real
    photos are (one far below its FD would be copying the training images).

    None when the data have no held-out split or too few images there for the k-NN measures.
    """
    held = [s for s in ("valid", "test") if s in m.splits and s != split]
    if not held:
        return None
    f = np.concatenate(
        [extract(feats, to_unit(load_images(select(m, s, classes), size, classes).images)) for s in held]
    )
    if len(f) <= PRDC_K:
        return None
    prdc = precision_recall_density_coverage(real_f, f, PRDC_K)
    return {
        "splits": held,
        "n_real": len(real_f),
        "n_held_out": len(f),
        "FD-lite0": frechet_distance(real_f, f),
        **prdc_keys(prdc, "lite0"),
    }


def _seed_from_file(path: str) -> int | None:
    try:
        return int(load_meta(path)["config"]["seed"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def seed_summary(
    pairs: list[tuple[str, str]], fd: dict[tuple[str, str], dict[int, float]], seed_of: dict[str, int | None]
) -> list[str]:
    """Across seeds: at each iteration every same-seed pair reached, the mean FD of each arm and the ratio of the
    means, with the per-seed ratios beside it. Why: one seed per arm was noise-dominated (on the CPU two seeds of
    the same cgan differed by 66 FD-lite0 at 1,500 steps), so a verdict needs the spread of the ratio as well.
    Only when two or more seeds were paired; a cgan setting (run name) compared to the dcgan of its own seed."""
    seeds = [seed_of[c] for c, _ in pairs]
    if len(pairs) < 2 or None in seeds or len(set(seeds)) < len(seeds):
        return []  # one pair, seeds unknown, or several cgan settings per seed: the per-pair tables say it
    by_seed = dict(zip(seeds, pairs, strict=True))
    out = [
        "",
        f"Across seeds ({', '.join(str(s) for s in sorted(by_seed))}; each cgan run against the dcgan of "
        "its seed):",
        "",
    ]
    for w in ("live", "ema"):
        per = [(fd.get((c, w), {}), fd.get((d, "live"), {})) for c, d in by_seed.values()]
        common = sorted(set.intersection(*[set(cg) & set(dc) for cg, dc in per]))
        if not common:
            continue
        out += [
            f"| iteration | cgan ({w}), mean | dcgan, mean | ratio of the means | per-seed ratios | "
            "target <= 0.5 |",
            "|---:|---:|---:|---:|---|---|",
        ]
        for it in common:
            c = float(np.mean([cg[it] for cg, _ in per]))
            d = float(np.mean([dc[it] for _, dc in per]))
            each = [cg[it] / dc[it] for cg, dc in per]
            verdict = "met" if max(each) <= 0.5 else "met by some seeds" if min(each) <= 0.5 else "not met"
            out.append(
                f"| {it} | {c:.1f} | {d:.1f} | {c / d:.3f} | {', '.join(f'{e:.3f}' for e in each)} | {verdict} |"
            )
        out.append("")
    return out


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    keys = sorted({(r["run"], r["weights"]) for r in rows})
    for run, w in keys:
        pts = sorted((r["iteration"], r["FD-lite0"]) for r in rows if r["run"] == run and r["weights"] == w)
        ax.plot(
            *zip(*pts, strict=True),
            marker="o",
            ls="-" if w == "live" else "--",
            label=f"{Path(run).name} ({w})",
        )
    ax.set_xlabel("generator iterations")
    ax.set_ylabel("FD-lite0 (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the real images the runs were trained on (train split)")
    ap.add_argument("--runs", nargs="+", required=True, help="run folders")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (generators and the Lite0 extractor)")
    ap.add_argument(
        "--iterations",
        type=int,
        nargs="*",
        default=None,
        help="measure only snapshots at these iterations (e.g. the ones every run reached)",
    )
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    cache_path = out / "curve.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"rows": []}
    if cache["rows"] and (
        Path(cache.get("data", args.data)).resolve() != Path(args.data).resolve()
        or cache.get("seed", args.seed) != args.seed
    ):
        sys.exit(
            f"error: {cache_path} holds rows measured against {cache.get('data')} with noise seed "
            f"{cache.get('seed')}; measure --data {args.data} --seed {args.seed} into another --out"
        )
    # rows cached before coverage was measured are measured again (FD comes out the same, up to float rounding)
    done = {(r["file"], r["weights"], r["mtime"]) for r in cache["rows"] if "coverage-lite0" in r}
    feats, real_f, real = None, None, None
    real_of: tuple[str, list[str], int] | None = None  # split, classes and size of the real set loaded
    rows = list(cache["rows"])
    for run in map(Path, args.runs):
        for f in snapshots(run):
            if args.iterations is not None and int(load_meta(f).get("iteration", 0)) not in args.iterations:
                continue  # decided from the header: a skipped checkpoint is never loaded
            g = load_generator(f, args.device)
            for weights in ("live", "ema") if g.weights == "ema" else ("live",):
                key = (str(f), weights, f.stat().st_mtime)
                # another file of the run already measured at this iteration: the checkpoint repeats the last snapshot
                seen = any(
                    (x["run"], x["weights"], x["iteration"]) == (str(run), weights, g.iteration)
                    and x["file"] != str(f)
                    for x in rows
                )
                if key in done or seen:
                    continue
                if feats is None:
                    feats = Lite0Features(batch_size=16 if args.device == "cpu" else 100, device=args.device)
                    manifest = resolve_manifest(args.data)  # once: it scans the dataset folder
                    real = load_images(select(manifest, g.cfg.split, g.classes), g.cfg.image_size, g.classes)
                    real_of = (g.cfg.split, g.classes, g.cfg.image_size)
                    real_f = extract(feats, to_unit(real.images))
                    if "reference" not in cache:
                        cache["reference"] = real_reference(
                            manifest, g.cfg.split, g.classes, g.cfg.image_size, feats, real_f
                        )
                assert real is not None and real_f is not None
                if (g.cfg.split, g.classes, g.cfg.image_size) != real_of:  # one real set per invocation
                    sys.exit(
                        f"error: {f} was trained on (split, classes, size) {(g.cfg.split, g.classes, g.cfg.image_size)}"
                        f", not the {real_of} of the runs before it; measure it with its own --out"
                    )
                t0 = time.perf_counter()
                r = measure(
                    g if g.weights == weights else load_generator(f, args.device, weights),
                    real_f,
                    real.labels,
                    feats,
                    args.seed,
                )
                r.update(
                    run=str(run),
                    file=str(f),
                    mtime=f.stat().st_mtime,
                    seconds=round(time.perf_counter() - t0, 1),
                )
                rows = [x for x in rows if (x["file"], x["weights"]) != (str(f), weights)] + [r]
                print(
                    f"{run.name:>20} {r['iteration']:>6} {weights:>4}  FD-lite0 {r['FD-lite0']:.1f}",
                    flush=True,
                )
                write_json(
                    cache_path,
                    {"data": args.data, "seed": args.seed, "rows": rows, "reference": cache.get("reference")},
                )
    # one row per (run, weights, iteration): the checkpoint duplicates the last snapshot
    wanted = {str(Path(r)) for r in args.runs}  # as the rows spell them ("runs/c/" is "runs/c")
    uniq = {(r["run"], r["weights"], r["iteration"]): r for r in rows if r["run"] in wanted}
    rows = sorted(uniq.values(), key=lambda r: (r["run"], r["weights"], r["iteration"]))
    lines = [
        f"# FD-lite0 along the runs ({args.data})",
        "",
        "Every number: generated images matched per class to the real training images, Lite0 features, "
        f"noise seed {args.seed}. KID-lite0 x1e3 (mean ± std over 100 subsets of 100). Precision, recall and "
        f"coverage (k = {PRDC_K} nearest neighbours, Lite0 features; 1 is ideal): fidelity, and diversity, which "
        "FD mixes into one number; '-' where a row was measured before they were.",
        "",
        "| run | arch | weights | iteration | FD-lite0 | KID-lite0 x1e3 | precision | recall | coverage |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    ref = cache.get("reference")
    if ref:  # the yardstick, before the rows
        lines[4:4] = [
            f"Real reference: the held-out photos ({' + '.join(ref['splits'])}, {ref['n_held_out']}) against the "
            f"{ref['n_real']} training ones score FD-lite0 {ref['FD-lite0']:.1f}, precision "
            f"{ref['precision-lite0']:.2f}, recall {ref['recall-lite0']:.2f}, coverage "
            f"{ref['coverage-lite0']:.2f}: what unseen real photos score (FD depends on the sample sizes).",
            "",
        ]
    for r in rows:
        knn = " | ".join(
            f"{r[f'{m}-lite0']:.2f}" if f"{m}-lite0" in r else "-"
            for m in ("precision", "recall", "coverage")
        )
        lines.append(
            f"| {Path(r['run']).name} | {r['arch']} | {r['weights']} | {r['iteration']} | {r['FD-lite0']:.1f} "
            f"| {1e3 * r['KID-lite0']:.0f} ± {1e3 * r['KID-lite0_std']:.0f} | {knn} |"
        )
    # per run, not per architecture: several cgan settings may be compared against one dcgan
    fd: dict[tuple[str, str], dict[int, float]] = {}
    arch_of: dict[str, str] = {}
    seed_of: dict[str, int | None] = {}
    for r in rows:
        fd.setdefault((r["run"], r["weights"]), {})[r["iteration"]] = r["FD-lite0"]
        arch_of[r["run"]] = r["arch"]
        if seed_of.get(r["run"]) is None:  # older rows did not record it: read once per run, from the header
            seed_of[r["run"]] = r["seed"] if "seed" in r else _seed_from_file(r["file"])
    dcgans = [run for run, a in arch_of.items() if a == "dcgan"]
    cgans = [run for run, a in arch_of.items() if a == "cgan"]
    # the claim compares runs of the same seed: with seeds known, only those pairs (no cross-seed tables)
    pairs = [
        (c, d)
        for c in cgans
        for d in dcgans
        if seed_of[c] is None or seed_of[d] is None or seed_of[c] == seed_of[d]
    ]
    lines += seed_summary(pairs, fd, seed_of)
    for cgan_run, dc_run in pairs:
        dc = fd.get((dc_run, "live"), {})
        for w in (
            "live",
            "ema",
        ):  # both, not the better of the two: picking by the test metric would flatter the cgan
            cg = fd.get((cgan_run, w), {})
            common = sorted(set(cg) & set(dc))
            if not common:
                continue
            lines += [
                "",
                f"{Path(cgan_run).name} ({w}) vs {Path(dc_run).name}:",
                "",
                f"| iteration | cgan ({w}) | dcgan | ratio | target <= 0.5 |",
                "|---:|---:|---:|---:|---|",
            ]
            for it in common:
                c, d = cg[it], dc[it]
                lines.append(
                    f"| {it} | {c:.1f} | {d:.1f} | {c / d:.3f} | {'met' if c <= 0.5 * d else 'not met'} |"
                )
    write_text(out / "curve.md", "\n".join(lines) + "\n")
    plot(rows, out / "curve.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
