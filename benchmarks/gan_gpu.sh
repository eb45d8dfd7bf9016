#!/usr/bin/env bash
# A short, time-boxed run of the GPU recipe (configs/gan-gpu.yaml) against the study's DCGAN on one CUDA GPU.
#
# Why: the issue's claim (FD-lite0 of the cgan at most half the dcgan's, same iterations and seed, 64 px) needs
# a budget the 2-core CPU cannot give, and a lent GPU is short-lived. So every run is bounded by wall time
# and the two architectures are compared at the iterations both reached (snapshots every SNAP steps).
#
#   bash benchmarks/gan_gpu.sh [BIRDS_DIR]          # about TRAIN_SECONDS + EVAL_SECONDS + 1 min
#
# All runs train at once (each is bound by kernel launches, and the GPU has room for several):
#   synth-cgan / birds-cgan     the recipe at 64 px (batch 64, width 64, n_dis 2, TTUR, DiffAugment, EMA)
#   synth-dcgan / birds-dcgan   the study's DCGAN at the recipe's batch size, its own defaults otherwise
#   birds-cgan128               the recipe as it is (128 px) for RECIPE128_ITERS steps: does it run, how fast
# on the synthetic birds (10 classes x 70 train images, generated here: per_class 100, split 0.7) and on BIRDS_DIR (default
# ../shared/data/birds), seed 0. Then benchmarks/gan_curve.py per dataset (live and EMA, at most MAX_POINTS
# common iterations), the last common sample grids side by side, and summary.md (steps reached, s/step, the
# D loss along the run). Everything small lands in OUT (8 files at most); gan_gpu.tar.gz holds the runs without
# their weights and grids.
#
# Environment: PY (default .venv/bin/python, else python3), OUT (default a temp dir), TRAIN_SECONDS (300),
# EVAL_SECONDS (150), SNAP (1000), MAX_POINTS (8), RECIPE128_ITERS (400; 0 skips that run), DEVICE (cuda),
# SYNTH_PER_CLASS (100), CGAN_FLAGS (extra 'gan train' flags for the cgan runs only, e.g. "--joint-d" or
# "--lecam-weight 0" for the cgan without its default LeCam), SEEDS_SYNTH / SEEDS_BIRDS ("0"; e.g. "0 1 2":
# one cgan and one dcgan per seed, named synth-cgan, synth-cgan-s1, ...; gan_curve.py then adds a table across
# the seeds), DCGAN_ITERS (no cap; the dcgan steps much faster than the cgan, so a cap leaves the GPU to the cgan
# runs once the dcgan has passed them),
# SPEED_STEPS (0; N > 0 first times N steps of the recipe and of --joint-d alone, benchmarks/gan_step_speed.py),
# DATASETS ("synth birds"; one of them leaves the GPU to fewer runs, which then step faster),
# DRY=1: tiny networks on the CPU for a few seconds, to test this script where there is no GPU (numbers
# then mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BIRDS=${1:-../shared/data/birds}
OUT=${OUT:-$(mktemp -d /tmp/birdlens_gan_gpu.XXXX)}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
EVAL_SECONDS=${EVAL_SECONDS:-150}
SNAP=${SNAP:-1000}
MAX_POINTS=${MAX_POINTS:-8}
RECIPE128_ITERS=${RECIPE128_ITERS:-400}
SEEDS_SYNTH=${SEEDS_SYNTH:-0}
SEEDS_BIRDS=${SEEDS_BIRDS:-0}
DCGAN_ITERS=${DCGAN_ITERS:-}
SPEED_STEPS=${SPEED_STEPS:-0}
DATASETS=${DATASETS:-synth birds}
for ds in $DATASETS; do [ "$ds" = synth ] || [ "$ds" = birds ] || { echo "DATASETS: synth and/or birds, not '$ds'"; exit 2; }; done
DEVICE=${DEVICE:-cuda}
SYNTH_PER_CLASS=${SYNTH_PER_CLASS:-100}
SIZE=64 THREADS=2 EVAL_THREADS=6
TINY=()
read -r -a CGAN_EXTRA <<< "${CGAN_FLAGS:-}"
if [ "${DRY:-0}" = 1 ]; then
  DEVICE=cpu SIZE=32 THREADS=1 EVAL_THREADS=1
  TINY=(--width 4 --batch-size 4)
fi
WORK=${WORK:-$(mktemp -d /tmp/birdlens_gan_gpu_runs.XXXX)}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" BIRDLENS_QUIET=1 BIRDLENS_CACHE="$WORK/cache"
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*"; }

# ---- fail fast: everything the runs need imports, the Lite0 weights load, the GPU is seen
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
"$PY" - "$DEVICE" <<'PYEOF' || { echo "setup check failed"; exit 3; }
import sys, torch, timm
from birdlens.cli import app  # noqa: F401  (the CLI and all its subcommands import)
from birdlens.augment.gan.features import Lite0Features
dev = sys.argv[1]
if dev == "cuda" and not torch.cuda.is_available():
    sys.exit("no CUDA GPU visible to torch")
Lite0Features(device=dev)
print(f"python {sys.version.split()[0]}; torch {torch.__version__}; timm {timm.__version__}; device {dev}"
      + (f" ({torch.cuda.get_device_name(0)})" if dev == "cuda" else ""))
PYEOF
[ -d "$BIRDS" ] || { echo "no bird photos at $BIRDS (pass the folder as the first argument)"; exit 3; }
"$PY" -c "from birdlens.data.synth import generate_dataset as g; m = g('$WORK/synth10', classes=10, per_class=$SYNTH_PER_CLASS, size=64, seed=0, quiet=True); print('synthetic birds:', len(m.split('train')), 'train images')"
GAN_TRAIN=("$PY" -c "from birdlens.cli import app; app()" gan train)  # an array: timeout runs it too
for a in cgan dcgan; do  # two steps of each on the device, so a broken run fails here and not after TRAIN_SECONDS
  "${GAN_TRAIN[@]}" --data "$WORK/synth10" --out "$WORK/smoke-$a" --arch $a \
    --image-size 32 --width 4 --batch-size 4 --iterations 2 --device "$DEVICE" --quiet >"$WORK/smoke-$a.log" 2>&1 \
    || { tail -n 30 "$WORK/smoke-$a.log"; echo "smoke run of $a failed"; exit 3; }
done
rm -rf "$WORK"/smoke-*
stamp "setup done"

# ---- the step alone on the device (before the runs share it): does --joint-d pay, how many kernels per step
if [ "$SPEED_STEPS" -gt 0 ]; then
  speed=(--device "$DEVICE" --steps "$SPEED_STEPS" --only "64px (recipe)")
  [ "${DRY:-0}" = 1 ] && speed+=(--tiny)
  OMP_NUM_THREADS=$THREADS "$PY" benchmarks/gan_step_speed.py "${speed[@]}" >"$WORK/speed.txt" 2>"$WORK/speed.err" \
    || echo "gan_step_speed.py failed (the runs go on)"
  sed -n "1,/^$/p" "$WORK/speed.txt"
  stamp "step speed timed"
fi

# ---- train, all at once, each for TRAIN_SECONDS at most
train() {  # NAME DATA SEED FLAGS...
  local name=$1 data=$2 seed=$3; shift 3
  OMP_NUM_THREADS=$THREADS timeout "$TRAIN_SECONDS" "${GAN_TRAIN[@]}" --data "$data" --out "$WORK/$name" \
    --seed "$seed" --device "$DEVICE" --threads "$THREADS" --quiet "$@" >"$WORK/$name.log" 2>&1 &
  pids+=($!)
}
pids=()
BIG=10000000
common=(--image-size "$SIZE" --iterations "$BIG" --batch-size 64 --snapshot-every "$SNAP" --sample-every "$SNAP"
        --checkpoint-every "$SNAP")
dc_cap=(); [ -n "$DCGAN_ITERS" ] && dc_cap=(--iterations "$DCGAN_ITERS")
for ds in $DATASETS; do
  data=$WORK/synth10 seeds=$SEEDS_SYNTH; [ $ds = birds ] && data=$BIRDS seeds=$SEEDS_BIRDS
  for seed in $seeds; do
    sfx=""; [ "$seed" != 0 ] && sfx="-s$seed"
    train "$ds-cgan$sfx" "$data" "$seed" --config configs/gan-gpu.yaml "${common[@]}" "${TINY[@]}" "${CGAN_EXTRA[@]}"
    train "$ds-dcgan$sfx" "$data" "$seed" --arch dcgan "${common[@]}" "${dc_cap[@]}" "${TINY[@]}"
  done
done
if [ "$RECIPE128_ITERS" -gt 0 ]; then
  r128=(--config configs/gan-gpu.yaml --iterations "$RECIPE128_ITERS" --sample-every "$RECIPE128_ITERS"
        --checkpoint-every "$RECIPE128_ITERS" "${CGAN_EXTRA[@]}")
  [ "${DRY:-0}" = 1 ] && r128+=(--image-size 32 "${TINY[@]}")
  train birds-cgan128 "$BIRDS" 0 "${r128[@]}"
fi
stamp "training: ${#pids[@]} runs for at most $TRAIN_SECONDS s"
wait "${pids[@]}"  # not a bare wait: that would also wait for the tee above
stamp "training stopped"
for f in "$WORK"/*.log; do echo "--- $(basename "$f"): $(tail -c 400 "$f" | tr '\r' '\n' | tail -n 2)"; done

# ---- summary of each run (from its checkpoint's history) and the snapshots to measure
"$PY" - "$WORK" "$MAX_POINTS" "$DATASETS" <<'PYEOF'
import json, sys
from pathlib import Path
from birdlens.augment.gan.checkpoint import load_meta
work, max_points = Path(sys.argv[1]), int(sys.argv[2])
lines = ["| run | steps (last checkpoint) | s/step (mean of the last 100) | D loss, first -> last 100 steps |",
         "|---|---:|---:|---|"]
for run in sorted(p for p in work.iterdir() if (p / "checkpoint.safetensors").exists()):
    meta = load_meta(run / "checkpoint.safetensors")  # the header: no weights read
    h = meta.get("history", [])
    sec = sum(r["sec_per_it"] for r in h[-10:]) / max(1, len(h[-10:]))
    d = [r["loss_d"] for r in h]
    lines.append(f"| {run.name} | {meta['iteration']} | {sec:.3f} | {d[0]:.3f} -> {sum(d[-10:]) / max(1, len(d[-10:])):.3f} |"
                 if d else f"| {run.name} | {meta['iteration']} | - | - |")
    (run / "history.json").write_text(json.dumps(h))
(work / "summary_runs.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
for ds in sys.argv[3].split():  # measure at most max_points iterations every run reached, evenly spread, the last kept
    runs = [p for p in work.glob(f"{ds}-*gan*") if p.is_dir() and p.name != "birds-cgan128"]
    its = [{int(p.stem.split("_")[1]) for p in (run / "snapshots").glob("iter_*.safetensors")} for run in runs]
    common = sorted(set.intersection(*its)) if its else []
    (work / f"runs-{ds}.txt").write_text(" ".join(str(r) for r in sorted(runs)) + "\n")
    keep = set(common[::-1][:: max(1, -(-len(common) // max_points))])
    (work / f"keep-{ds}.txt").write_text(" ".join(map(str, sorted(keep))) + "\n")  # gan_curve.py --iterations
    print(f"{ds}: common snapshot iterations {common}; measuring {sorted(keep)}")
PYEOF
stamp "summary written"

# ---- FD-lite0 / KID-lite0 along the runs, both datasets at once
cpids=()
for ds in $DATASETS; do
  data=$WORK/synth10; [ $ds = birds ] && data=$BIRDS
  OMP_NUM_THREADS=$EVAL_THREADS timeout "$EVAL_SECONDS" "$PY" benchmarks/gan_curve.py --data "$data" --device "$DEVICE" \
    --runs $(cat "$WORK/runs-$ds.txt") --out "$WORK/curve-$ds" --iterations $(cat "$WORK/keep-$ds.txt") \
    >"$WORK/curve-$ds.log" 2>&1 &
  cpids+=($!)
done
wait "${cpids[@]}"
stamp "curves measured"
for ds in $DATASETS; do
  echo "=== $ds"; cat "$WORK/curve-$ds/curve.md" 2>/dev/null || tail -n 20 "$WORK/curve-$ds.log"
done

# ---- sample grids side by side at the last iteration both runs reached
"$PY" - "$WORK" "$OUT" "$DATASETS" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from gan_compare import side_by_side
work, out = Path(sys.argv[1]), Path(sys.argv[2])
for ds in sys.argv[3].split():
    grids = {a: {p.name: p for p in (work / f"{ds}-{a}" / "samples").glob("iter_*.png")} for a in ("dcgan", "cgan")}
    common = sorted(set(grids["dcgan"]) & set(grids["cgan"]))
    if common:
        it = int(common[-1].split("_")[1].split(".")[0])
        side_by_side([grids["dcgan"][common[-1]], grids["cgan"][common[-1]]],
                     [f"dcgan, {ds}, step {it}", f"cgan (EMA), {ds}, step {it}"], out / f"side_by_side_{ds}.png")
        print(f"{ds}: side by side at step {it}")
PYEOF
{
  echo "# benchmarks/gan_gpu.sh"; echo; "$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
  echo; echo "TRAIN_SECONDS=$TRAIN_SECONDS SNAP=$SNAP size=$SIZE device=$DEVICE dry=${DRY:-0} cgan_flags=\"${CGAN_FLAGS:-}\"" \
    "seeds_synth=\"$SEEDS_SYNTH\" seeds_birds=\"$SEEDS_BIRDS\" dcgan_iters=${DCGAN_ITERS:-none}"; echo
  [ -f "$WORK/speed.txt" ] && { echo "## the step alone (gan_step_speed.py)"; echo; sed -n "1,/^$/p" "$WORK/speed.txt"; }
  cat "$WORK/summary_runs.md"
  for ds in $DATASETS; do echo; echo "## $ds"; cat "$WORK/curve-$ds/curve.md" 2>/dev/null || echo "(no curve)"; done
} >"$OUT/summary.md"
for ds in $DATASETS; do cp "$WORK/curve-$ds/curve.png" "$OUT/curve_$ds.png" 2>/dev/null; done
last128=$(ls "$WORK"/birds-cgan128/samples/*.png 2>/dev/null | tail -n 1)
[ -n "$last128" ] && cp "$last128" "$OUT/recipe128_$(basename "$last128")"
# the runs without weights or sample grids (the grids that matter are side by side above)
(cd "$WORK" && tar czf "$OUT/gan_gpu.tar.gz" --exclude='*.safetensors' --exclude=synth10 --exclude=cache \
  --exclude='*/samples' ./*)
stamp "done: $OUT"
ls -la "$OUT"
