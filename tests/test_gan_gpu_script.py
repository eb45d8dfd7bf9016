"""``benchmarks/gan_gpu.sh`` runs on a lent GPU, whose minutes are rationed; its dry mode runs the same script end
to end on the CPU (tiny networks, a few seconds of training) so that a broken script is found here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gan_gpu_script_dry_run(tmp_path: Path) -> None:
    birds = tmp_path / "birds"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):  # 6 held-out images: more than gan_curve's k = 5
        for c in range(2):
            d = birds / split / f"BIRD {c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((40, 40, 3)) * 120 + 60 * c).astype(np.uint8)).save(
                    d / f"{i}.png"
                )
    out = tmp_path / "out"
    env = {
        **os.environ,
        "DRY": "1",
        "PY": sys.executable,
        "OUT": str(out),
        "WORK": str(tmp_path / "work"),
        "TRAIN_SECONDS": "45",
        "EVAL_SECONDS": "300",
        "SNAP": "2",
        "MAX_POINTS": "1",
        "RECIPE128_ITERS": "2",
        "SYNTH_PER_CLASS": "10",
        "CGAN_FLAGS": "--joint-d --lecam-weight 0.3",
        "SEEDS_BIRDS": "0 1",
        "DCGAN_ITERS": "4",
        "SPEED_STEPS": "1",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gan_gpu.sh"), str(birds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for ds in ("synth", "birds"):
        assert f"| {ds}-cgan | cgan | live |" in summary and f"| {ds}-dcgan | dcgan | live |" in summary
        assert (out / f"side_by_side_{ds}.png").stat().st_size > 0 and (out / f"curve_{ds}.png").is_file()
    # two seeds on the birds: each cgan against the dcgan of its own seed only, and a table across the seeds
    assert summary.count("| iteration | cgan (live) | dcgan | ratio |") == 3
    assert (
        "birds-cgan-s1 (live) vs birds-dcgan-s1:" in summary
        and "birds-cgan (live) vs birds-dcgan-s1" not in summary
    )
    assert (
        summary.count(
            "| iteration | cgan (live), mean | dcgan, mean | ratio of the means | per-seed ratios |"
        )
        == 1
    )
    assert "| birds-dcgan | 4 |" in summary and "| birds-dcgan-s1 | 4 |" in summary  # DCGAN_ITERS caps them
    # fidelity and diversity next to FD, and the held-out real photos as their yardstick (birds: 6 vs 12 images)
    assert summary.count("| FD-lite0 | KID-lite0 x1e3 | precision | recall | coverage |") == 2
    assert "Real reference: the held-out photos (test, 6) against the 12 training ones" in summary
    assert "| cgan 64px (recipe), --joint-d |" in summary  # SPEED_STEPS timed the step alone first
    assert "| birds-cgan128 | 2 |" in summary  # the 128 px recipe run finished its steps
    assert (out / "gan_gpu.tar.gz").stat().st_size > 0 and (out / "recipe128_iter_000002.png").is_file()
    assert len(list(out.iterdir())) <= 8  # what a device call brings back
    # CGAN_FLAGS reach the cgan runs (both sizes), not the dcgan ones, and the summary says they were used
    cfg = {
        run: json.loads((tmp_path / "work" / run / "config.json").read_text())["config"]
        for run in ("birds-cgan", "birds-cgan128", "birds-dcgan")
    }
    assert cfg["birds-cgan"]["joint_d"] and cfg["birds-cgan128"]["lecam_weight"] == 0.3
    assert not cfg["birds-dcgan"]["joint_d"] and cfg["birds-dcgan"]["lecam_weight"] == 0.0
    assert 'cgan_flags="--joint-d --lecam-weight 0.3"' in summary


def test_gan_gpu_script_refuses_an_unknown_dataset_before_any_work(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DRY": "1",
        "PY": sys.executable,
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "w"),
        "DATASETS": "birds fish",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gan_gpu.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "not 'fish'" in proc.stdout + proc.stderr
    assert not (tmp_path / "w").exists()  # nothing was set up


def test_curve_table_across_seeds_pairs_each_cgan_with_the_dcgan_of_its_seed() -> None:
    """Hand-computed: seed 0 cgan 100 vs dcgan 250 (0.4), seed 1 cgan 150 vs dcgan 250 (0.6); mean 125 / 250."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gan_curve import seed_summary
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    fd = {
        ("c0", "live"): {500: 100.0, 1000: 90.0},
        ("d0", "live"): {500: 250.0, 1000: 200.0},
        ("c1", "live"): {500: 150.0},
        ("d1", "live"): {500: 250.0, 1000: 220.0},
    }
    seeds = {"c0": 0, "d0": 0, "c1": 1, "d1": 1}
    lines = seed_summary([("c0", "d0"), ("c1", "d1")], fd, seeds)
    rows = [ln for ln in lines if ln.startswith("| 500") or ln.startswith("| 1000")]
    assert rows == [
        "| 500 | 125.0 | 250.0 | 0.500 | 0.400, 0.600 | met by some seeds |"
    ]  # 1000: seed 1 lacks it
    assert "Across seeds (0, 1;" in "\n".join(lines)
    # one pair, unknown seeds, or two cgan settings of one seed: no table (the per-pair tables say it)
    assert seed_summary([("c0", "d0")], fd, seeds) == []
    assert seed_summary([("c0", "d0"), ("c1", "d1")], fd, {**seeds, "c1": None}) == []
    assert seed_summary([("c0", "d0"), ("c1", "d0")], fd, {**seeds, "c1": 0}) == []


def test_gan_step_speed_compares_layouts_on_the_cpu() -> None:
    """``gan_step_speed.py --layouts`` backs the README's channels-last number; its tiny mode must keep running."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gan_step_speed.py"),
            "--device",
            "cpu",
            "--tiny",
            "--layouts",
            "--rounds",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| cgan", "| dcgan"))]
    assert [r.split(",")[0] for r in rows] == ["| cgan 32px", "| dcgan 32px"]
    for r in rows:  # two rounds per layout, and a ratio
        fast, plain, ratio = (c.strip() for c in r.split("|")[2:5])
        assert len(fast.split(" / ")) == len(plain.split(" / ")) == 2 and float(ratio.rstrip("x")) > 0


def test_gan_curve_refuses_to_mix_rows_of_another_dataset_or_noise_seed(tmp_path: Path) -> None:
    """Cached rows are keyed by file: measured against other real images they would be mixed in silently."""
    out = tmp_path / "curve"
    out.mkdir()
    (out / "curve.json").write_text(
        json.dumps({"data": str(tmp_path / "other"), "seed": 0, "rows": [{"file": "x"}]})
    )
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "gan_curve.py"),
        "--runs",
        str(tmp_path / "run"),
        "--out",
        str(out),
    ]
    for extra, says in (
        (["--data", str(tmp_path / "birds")], "measured against"),
        (["--data", str(tmp_path / "other"), "--seed", "1"], "noise seed 0"),
    ):
        proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 1 and says in proc.stderr and "another --out" in proc.stderr, proc.stderr[
            -2000:
        ]


def test_fd_calibration_degradations_keep_the_images_and_blur_more_with_sigma() -> None:
    """The README reads GAN FD-lite0 values against these transforms; each must do what its name says."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("fd_calibration", REPO / "benchmarks" / "fd_calibration.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = mod.degradations(seed=0)
    assert torch.equal(t["identity (sanity: 0)"](x), x)

    def roughness(y: torch.Tensor) -> float:  # mean absolute difference of neighbouring pixels
        return float((y[..., 1:] - y[..., :-1]).abs().mean())

    blurs = [t[f"blur sigma {s} px"](x) for s in ("0.5", "0.8", "1.2", "2")]
    rough = [roughness(b) for b in blurs]
    assert rough == sorted(rough, reverse=True) and rough[0] < roughness(x)
    for name, fn in t.items():
        y = fn(x)
        assert y.shape == x.shape and float(y.min()) >= -1 and float(y.max()) <= 1, name
    noisy = t["noise sd 0.2"](torch.zeros(1, 3, 64, 64))
    assert float(noisy.std()) == pytest.approx(0.2, rel=0.05)
