#!/usr/bin/env bash
# One short GPU check of birdlens training: fine-tune EfficientNet-Lite0 (bundled ImageNet weights) for
# GPU_EPOCHS (3) epochs with AMP (fp16 autocast, precision=16-mixed) on the GPU, then a few steps on the CPU,
# and print both images/s side by side (the GPU's from its last epoch: the first pays for worker start-up,
# cuDNN's algorithm search and AMP's warm-up). Offline: uses the shared bird photos when present, else a synthetic
# 20-class folder of 224 px images (speed does not depend on what the pixels show).
# Then the explainers: images/s of IG-50, LIME-1000 and SHAP-500 on 16 photos, batched across images (model
# batches of EXPLAIN_BATCH=256 rows) vs one image per call (benchmarks/batch_speed.py), and `birdlens explain`
# on 1 process vs `--devices N` (all GPUs, sharded with Lightning Fabric), its files compared.
#
#   bash benchmarks/gpu_check.sh [DATA_DIR]          # needs a CUDA GPU; ~1-2 minutes
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_EPOCHS (default 3), CPU_STEPS (default 10), CPU_THREADS (default: all
# cores, at most 16), OUT (default a temp dir),
# GPU_CHECK_DRY=1 runs the "GPU" leg on the CPU for GPU_STEPS steps (default 2), and the explainer legs with
# tiny budgets on the CPU (2 processes), so that the script itself is tested where there is no GPU
# (tests/test_gpu_check.py); its numbers then mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA=${1:-../shared/data/birds}
OUT=${OUT:-$(mktemp -d /tmp/birdlens_gpu_check.XXXX)}
CPU_STEPS=${CPU_STEPS:-10}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" BIRDLENS_QUIET=1 BIRDLENS_CACHE="$OUT/cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"

"$PY" - "$DATA" "$OUT" "$CPU_STEPS" "${GPU_CHECK_DRY:-0}" "${GPU_STEPS:-2}" "${GPU_EPOCHS:-3}" <<'PYEOF'
import csv, os, sys, time
from pathlib import Path
import numpy as np
import torch
from PIL import Image

data, out, cpu_steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dry, dry_steps, gpu_epochs = sys.argv[4] == "1", int(sys.argv[5]), int(sys.argv[6])
if not torch.cuda.is_available() and not dry:
    sys.exit("no CUDA GPU visible to torch: run this on a GPU machine")
if not data.is_dir():  # synthetic stand-in: 20 classes x (42 train, 9 valid, 9 test), 224 px
    data = out / "synthetic"
    rng = np.random.default_rng(0)
    for split, n in (("train", 42), ("valid", 9), ("test", 9)):
        for c in range(20):
            d = data / split / f"SPECIES {c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 255, size=(224, 224, 3), dtype=np.uint8)
                img[:, :, c % 3] //= 2
                Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
gpu_name = "none (GPU_CHECK_DRY=1: the GPU leg runs on the CPU)" if dry else torch.cuda.get_device_name(0)
print(f"data: {data}; torch {torch.__version__}; GPU {gpu_name}")

from birdlens.train import TrainConfig, train  # noqa: E402


def run(name, epochs=1, **kw):
    t = time.perf_counter()
    # head_init=random: the loop's speed is what is measured, not the linear probe that LP-FT starts from
    cfg = TrainConfig(data=str(data), out=str(out / name), model="efficientnet_lite0", mode="finetune",
                      epochs=epochs, head_epochs=0, head_init="random", batch_size=16, augment="light", patience=None,
                      quiet=True, num_workers=4 if kw.get("accelerator") == "gpu" else 0, **kw)
    r = train(cfg, force=True, evaluate=False)
    with open(r / "log.csv") as f:
        rows = list(csv.DictReader(f))
    # the last epoch: the first one also pays for worker start-up, cuDNN's algorithm search and AMP's warm-up
    return ([float(x["images_per_s"]) for x in rows], float(rows[-1]["seconds"]), time.perf_counter() - t)


torch.set_num_threads(int(os.environ.get("CPU_THREADS", min(16, os.cpu_count() or 1))))
if dry:
    g_ips, g_s, g_wall = run("gpu", accelerator="cpu", precision="32-true", limit_train_batches=dry_steps,
                             limit_val_batches=1)
else:
    g_ips, g_s, g_wall = run("gpu", epochs=gpu_epochs, accelerator="gpu", devices=1, precision="16-mixed")
leg = f"{dry_steps} steps on the CPU (dry run)" if dry else f"{gpu_epochs} epochs, AMP fp16, last epoch"
print(f"GPU  fine-tune {leg}: {g_ips[-1]:8.1f} images/s (epoch {g_s:.1f} s incl. validation, wall {g_wall:.1f} s; "
      f"per epoch: {', '.join(f'{v:.1f}' for v in g_ips)})")
c_ips, c_s, _ = run("cpu", accelerator="cpu", precision="32-true", limit_train_batches=cpu_steps, limit_val_batches=0)
print(f"CPU  fine-tune {cpu_steps} steps, fp32:     {c_ips[-1]:8.1f} images/s ({torch.get_num_threads()} threads)")
print(f"GPU / CPU: {g_ips[-1] / c_ips[-1]:.1f}x")
PYEOF

# ---- explainers: cross-image batching vs one image per call, then the multi-process explain run
EXPLAIN_DATA=$DATA
[ -d "$EXPLAIN_DATA" ] || EXPLAIN_DATA=$OUT/synthetic
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
  echo "explainers (dry run on the CPU, tiny budgets):"
  "$PY" benchmarks/batch_speed.py --device cpu --n 2 --ig 2 --lime 8 --shap 8 --batch 8 --data "$EXPLAIN_DATA"
  DEVICES=2 BUDGET=(--n 2 --lime-samples 8 --shap-evals 8 --ig-steps 2)
else
  echo "explainers on the GPU (model batches of ${EXPLAIN_BATCH:-256} rows):"
  "$PY" benchmarks/batch_speed.py --device cuda --n 16 --batch "${EXPLAIN_BATCH:-256}" --data "$EXPLAIN_DATA"
  DEVICES=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  BUDGET=(--n 16)
fi
BL=("$PY" -m birdlens.cli)  # a command Fabric's ddp launcher can re-run for the other ranks (not `python -c`)
if "${BL[@]}" explain --help 2>/dev/null | grep -- "--devices" >/dev/null; then  # no -q: pipefail + SIGPIPE
  for d in 1 "$DEVICES"; do
    t0=$(date +%s.%N)
    "${BL[@]}" explain "$EXPLAIN_DATA/test" --run "$OUT/gpu" --methods lime,shap,ig "${BUDGET[@]}" \
      --out "$OUT/explain_$d" --devices "$d" --force --quiet >/dev/null
    t1=$(date +%s.%N)
    n=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['images']))" "$OUT/explain_$d/manifest.json")
    awk -v n="$n" -v s="$(awk "BEGIN{print $t1 - $t0}")" -v d="$d" \
      'BEGIN{printf "explain, %d process(es): %d images in %.1f s, %.2f images/s\n", d, n, s, n / s}'
  done
  # sharding keeps each image's batch: the maps and overlays of N processes are the 1-process files
  if diff -rq -x manifest.json "$OUT/explain_1" "$OUT/explain_$DEVICES" >/dev/null; then
    echo "explain, $DEVICES process(es) vs 1: maps, overlays and panels byte-identical"
  else
    echo "explain, $DEVICES process(es) vs 1: files DIFFER"
  fi
else
  echo "multi-process explain: skipped (this build's 'birdlens explain' has no --devices)"
fi
