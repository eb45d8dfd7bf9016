"""Seconds per generator step of each GAN architecture, alone on the device, and where the time goes.

Why: timed while other runs share the GPU, the recipe's cgan step says little about what a user with one GPU
gets (measured: docs/benchmarks.md#gan-on-a-gpu). This times each setting alone on random images (speed does
not depend on the pixels), then profiles a few cgan steps (top ops by device time, and kernels per step).

    python benchmarks/gan_step_speed.py --device cuda            # ~2 min on one GPU
    python benchmarks/gan_step_speed.py --device cpu --tiny      # tests the script
    OMP_NUM_THREADS=1 python benchmarks/gan_step_speed.py --device cpu --layouts   # channels-last vs NCHW, ~3 min
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.data import ImageSet
from birdlens.augment.gan.train import GANState, init_state, memory_format, train_step


def random_images(cfg: GANConfig, device: str, n_classes: int) -> ImageSet:
    return ImageSet(
        torch.randint(0, 256, (840, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8).to(device),
        torch.arange(840).remainder(n_classes).to(device),
        [f"c{i}" for i in range(n_classes)],
    )


def seconds_per_step(state: GANState, data: ImageSet, steps: int) -> float:
    """Wall time of ``steps`` training steps / steps (the GPU's queue drained before and after)."""
    cuda = data.images.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        train_step(state, data)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def timed(cfg: GANConfig, device: str, n_classes: int, warmup: int, steps: int) -> tuple[float, object]:
    data = random_images(cfg, device, n_classes)
    state = init_state(cfg, data.classes, device)
    for _ in range(warmup):
        train_step(state, data)
    return seconds_per_step(state, data, steps), (state, data)


def kernel_count(state: object, data: ImageSet, n: int = 3) -> tuple[float, float]:
    """CUDA kernels launched per step, and the GPU's busy time per step (ms), over ``n`` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            train_step(state, data)  # type: ignore[arg-type]
        torch.cuda.synchronize()
    ev = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.count for e in ev) / n, sum(e.self_device_time_total for e in ev) / n / 1e3


def compare_layouts(device: str, tiny: bool, steps: int, rounds: int) -> None:
    """The CPU budget's settings in the trainer's memory layout vs plain NCHW, in alternating rounds.

    Both states start from the same seed, so they run the same steps; alternating spreads a change in the
    machine's load over both. The ratio is the median of the per-round ratios (NCHW time / trainer's time).
    """
    size, small = (32, {"g_width": 4, "d_width": 4, "batch_size": 4}) if tiny else (64, {})
    cfgs = [
        GANConfig(
            arch="cgan",
            image_size=size,
            **{"batch_size": 16, "g_width": 16, "d_width": 16, **small},
            ema_rampup=0.05,
        ),
        GANConfig(arch="dcgan", image_size=size, **{"batch_size": 16, "g_width": 32, "d_width": 32, **small}),
    ]
    settings = [(f"{c.arch} {c.image_size}px, width {c.g_width}, batch {c.batch_size}", c) for c in cfgs]
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s), {rounds} rounds of "
        f"{steps} steps; trainer's layout: {memory_format(device)}"
    )
    print(
        "| setting | trainer's layout s/step | NCHW s/step | NCHW / trainer's (median) |\n|---|---:|---:|---:|"
    )
    for name, cfg in settings:
        data = random_images(cfg, device, 20)
        fast, plain = init_state(cfg, data.classes, device), init_state(cfg, data.classes, device)
        plain.set_layout(torch.contiguous_format)
        times: dict[str, list[float]] = {"fast": [], "plain": []}
        for _ in range(2):  # warm-up: oneDNN picks its kernels on the first calls
            train_step(fast, data)
            train_step(plain, data)
        for _ in range(rounds):
            for key, st in (("fast", fast), ("plain", plain)):
                times[key].append(seconds_per_step(st, data, steps))
        ratio = statistics.median(p / f for f, p in zip(times["fast"], times["plain"], strict=True))
        fast_s, plain_s = (" / ".join(f"{x:.3f}" for x in times[k]) for k in ("fast", "plain"))
        print(f"| {name} | {fast_s} | {plain_s} | {ratio:.2f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small nets and few steps (script test on a CPU)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="time only the settings whose name holds one of these strings (e.g. recipe joint-d)",
    )
    ap.add_argument(
        "--layouts",
        action="store_true",
        help="only compare the trainer's memory layout with NCHW on the CPU budget's settings",
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds for --layouts")
    args = ap.parse_args()
    if args.layouts:
        compare_layouts(args.device, args.tiny, 2 if args.tiny else min(args.steps, 8), args.rounds)
        return
    tiny = {"g_width": 4, "d_width": 4, "batch_size": 4} if args.tiny else {}
    recipe = {"batch_size": 64, "g_width": 64, "d_width": 64, "ema_rampup": 0.05, **tiny}
    settings = [
        ("cgan 64px (recipe)", GANConfig(arch="cgan", image_size=32 if args.tiny else 64, **recipe)),
        (
            "cgan 64px (recipe), --joint-d",
            GANConfig(arch="cgan", image_size=32 if args.tiny else 64, joint_d=True, **recipe),
        ),
        (
            "cgan 64px, no DiffAugment",
            GANConfig(arch="cgan", image_size=32 if args.tiny else 64, diffaugment="", **recipe),
        ),
        ("cgan 128px (recipe)", GANConfig(arch="cgan", image_size=32 if args.tiny else 128, **recipe)),
        (
            "dcgan 64px, batch 64",
            GANConfig(arch="dcgan", image_size=32 if args.tiny else 64, **{"batch_size": 64, **tiny}),
        ),
    ]
    if args.only:
        settings = [(n, c) for n, c in settings if any(o in n for o in args.only)]
        if not settings:
            ap.error(f"no setting matches {args.only}")
    steps = 3 if args.tiny else args.steps
    print(
        f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
    )
    print("| setting | s/step | steps/s | kernels per step | GPU busy per step |\n|---|---:|---:|---:|---:|")
    keep, first = None, settings[0][0]
    for name, cfg in settings:
        sec, st = timed(cfg, args.device, 20, 2 if args.tiny else 10, steps)
        keep = keep or st
        k = "{:.0f} | {:.1f} ms".format(*kernel_count(*st)) if args.device == "cuda" else "- | -"
        print(f"| {name} | {sec:.4f} | {1 / sec:.1f} | {k} |", flush=True)
    from torch.profiler import ProfilerActivity, profile

    state, data = keep  # type: ignore[misc]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    n = 5
    with profile(activities=acts) as prof:
        for _ in range(n):
            train_step(state, data)
        if args.device == "cuda":
            torch.cuda.synchronize()
    ev = prof.key_averages()
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(f"\n{first}, {n} steps profiled; top ops by {sort}:")
    print(
        ev.table(sort_by=sort, row_limit=15, max_name_column_width=50)
    )  # kernels per step: in the table above


if __name__ == "__main__":
    main()
