"""Training speed: birdlens' fine-tune loop (Lightning) vs a minimal hand-written torch loop, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speed.py --data ../shared/data/birds

Both loops train the same model (bundled EfficientNet-Lite0, 20-class head, channels_last, AdamW) on the same
images (the train split, batch 16, decoded and transformed in the main process) for the same number of
steps; each is timed from its first batch to its last optimiser step, alternating twice so a change in the
machine's load hits both. Reported: images/s of each and their ratio (target >= 0.9), a bf16-autocast
variant of the hand loop (does CPU AMP pay here?), and a probe's wall time split into feature extraction and
head fitting (both solvers). Single-threaded torch; the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BIRDLENS_QUIET", "1")

import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.1f}/{b:.1f}/{c:.1f} on {os.cpu_count()} cores"


def hand_loop(
    data: str, model_name: str, steps: int, batch: int, seed: int, autocast: bool = False, device: str = "cpu"
) -> float:
    """The minimal loop a person would write: images/s over ``steps`` optimiser steps."""
    from torch.utils.data import DataLoader

    from birdlens.augment.presets import make_train_transform
    from birdlens.data.dataset import ImageDataset
    from birdlens.models import create_model, get_model_info
    from birdlens.train.data import prepare_data

    rd = prepare_data(data, seed=seed, quiet=True)
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=len(rd.classes)).to(device)
    dc = get_model_info(model).data_config
    ds = ImageDataset(
        rd.split("train"), transform=make_train_transform("none", dc), class_to_idx=rd.class_to_idx
    )
    loader = DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))
    model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16) if autocast else nullcontext()
    n = 0
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i == steps:
            break
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with amp:
            loss = F.cross_entropy(model(x), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def birdlens_loop(
    data: str,
    model_name: str,
    steps: int,
    batch: int,
    seed: int,
    out: Path,
    precision: str = "auto",
    accelerator: str = "cpu",
) -> float:
    """``birdlens.train`` fine-tune for ``steps`` batches, no validation; images/s from its ``log.csv``."""
    from birdlens.train import TrainConfig, train

    run = train(
        TrainConfig(
            data=data,
            out=str(out),
            model=model_name,
            mode="finetune",
            epochs=1,
            head_epochs=0,
            batch_size=batch,
            limit_train_batches=steps,
            limit_val_batches=0,
            patience=None,
            seed=seed,
            augment="none",
            precision=precision,
            accelerator=accelerator,
            quiet=True,
        ),
        force=True,
        evaluate=False,
    )
    with open(run / "log.csv") as f:
        row = next(csv.DictReader(f))
    return float(row["images_per_s"])


def probe_split(data: str, out: Path, per_class: int) -> list[dict[str, Any]]:
    from birdlens.train import TrainConfig, train

    rows = []
    cache = out / "features"
    for solver in ("lbfgs", "sklearn"):
        t = time.perf_counter()
        run = train(
            TrainConfig(
                data=data,
                out=str(out / f"probe_{solver}"),
                model="efficientnet_lite0",
                mode="probe",
                per_class=per_class,
                probe_solver=solver,
                feature_cache=str(cache),
                quiet=True,
            ),
            force=True,
            evaluate=False,
        )
        meta = json.loads((run / "meta.json").read_text())
        p = meta["probe"]
        rows.append(
            {
                "solver": solver,
                "wall_seconds": time.perf_counter() - t,
                "extract_seconds": p["extract_seconds"],
                "fit_seconds": p["fit_seconds"],
                "images": p["feature_cache"]["train"]["images"] + p["feature_cache"]["valid"]["images"],
                "cache_hits": p["feature_cache"]["train"]["cache_hits"],
                "load": _load(),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "birds"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--probe-per-class", type=int, default=20, help="images per species for the probe timing")
    ap.add_argument("--skip-probe", action="store_true")
    ap.add_argument(
        "--skip-bf16",
        action="store_true",
        help="bf16 autocast is emulated (very slow) on CPUs without AVX512-BF16/AMX",
    )
    args = ap.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="birdlens_speed_"))
    print(
        f"{args.model}, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} thread(s); {_load()}"
    )
    hand, ours, bf16 = [], [], []
    for r in range(args.repeats):
        hand.append(hand_loop(args.data, args.model, args.steps, args.batch, seed=r))
        ours.append(birdlens_loop(args.data, args.model, args.steps, args.batch, seed=r, out=out / f"ft{r}"))
        print(
            f"  repeat {r}: hand {hand[-1]:.1f} img/s, birdlens {ours[-1]:.1f} img/s "
            f"(ratio {ours[-1] / hand[-1]:.2f}); {_load()}",
            flush=True,
        )
        if not args.skip_bf16:
            bf16.append(hand_loop(args.data, args.model, args.steps, args.batch, seed=r, autocast=True))
            print(f"  repeat {r}: hand + bf16 autocast {bf16[-1]:.1f} img/s", flush=True)
    ratio = statistics.median(o / h for o, h in zip(ours, hand, strict=True))
    print(
        f"fine-tune loop: birdlens {statistics.median(ours):.1f} img/s vs hand-written "
        f"{statistics.median(hand):.1f} img/s -> ratio {ratio:.2f} (target >= 0.9)"
    )
    if bf16:
        print(
            f"bf16 autocast on CPU: {statistics.median(bf16):.1f} img/s "
            f"({statistics.median(b / h for b, h in zip(bf16, hand, strict=True)):.2f}x fp32)"
        )
    if not args.skip_probe:
        for row in probe_split(args.data, out, args.probe_per_class):
            print(
                f"probe ({row['solver']}): {row['images']} images, extraction {row['extract_seconds']:.1f} s "
                f"(cache hits {row['cache_hits']}), fitting {row['fit_seconds']:.2f} s, "
                f"wall {row['wall_seconds']:.1f} s; {row['load']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
