"""``birdlens explain`` on 1 process vs ``--devices N`` (Lightning Fabric, ddp; gloo on the CPU), back to back.

Builds a run folder with EfficientNet-Lite0 (random init: speed does not depend on the weights) for the 20
shared species, explains the same ``--n`` photos of the test split both ways with the CLI a user runs, and
prints the wall times, their ratio and whether the maps, overlays and panels are byte-identical.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shard_speed.py [--n 8] [--devices 2] [--device cpu]

Wall time includes each command's start (importing torch, loading the model): what a user waits for. On the
CPU the N processes share the cores, one torch thread each, so N processes are only faster when the cores are
free; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "birds"


def make_run(run: Path, classes: list[str]) -> None:
    import torch

    from birdlens.models import create_model
    from birdlens.models.registry import get_model_info
    from birdlens.runs.trained import save_weights
    from birdlens.utils.atomic import write_json

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=len(classes), pretrained=False)
    save_weights(model, run / "best.safetensors")
    info = get_model_info(model)
    meta = {"model": "efficientnet_lite0", "classes": classes, "data_config": info.data_config.to_dict()}
    write_json(run / "meta.json", {**meta, "image_size": 224, "cam_layer": info.cam_layer})


def same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "manifest.json")
    other = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "manifest.json")
    return files == other and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default="gradcam,ig,lime")
    ap.add_argument("--batch-images", type=int, default=4, help="4: 8 photos make 2 groups, one per process")
    ap.add_argument("--budget", nargs="*", default=["--ig-steps", "16", "--lime-samples", "100"])
    args = ap.parse_args()
    if not (args.data / "test").is_dir():
        sys.exit(f"no test split in {args.data}")
    tmp = Path(tempfile.mkdtemp(prefix="birdlens_shard_"))
    make_run(tmp / "run", sorted(p.name for p in (args.data / "test").iterdir() if p.is_dir()))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "BIRDLENS_QUIET": "1"}
    groups = -(-args.n // args.batch_images)
    print(
        f"load average before: {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores; {args.n} photos, {groups} groups"
    )
    walls = {}
    for d in (1, args.devices):
        cmd = [
            sys.executable,
            "-m",
            "birdlens.cli",
            "explain",
            str(args.data / "test"),
            "--run",
            str(tmp / "run"),
        ]
        cmd += [
            "--methods",
            args.methods,
            *args.budget,
            "--n",
            str(args.n),
            "--out",
            str(tmp / f"explain_{d}"),
        ]
        cmd += ["--devices", str(d), "--device", args.device, "--quiet"]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        walls[d] = time.perf_counter() - t0
    one, many = walls[1], walls[args.devices]
    same = same_files(tmp / "explain_1", tmp / f"explain_{args.devices}")
    print(f"1 process: {one:.1f} s; {args.devices} processes: {many:.1f} s; speed-up {one / many:.2f}x")
    print(f"maps, overlays and panels byte-identical: {same}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
