"""``benchmarks/gpu_check.sh`` is run by hand on a GPU machine; its dry mode runs the same script end to end on the
CPU so that a broken script is found here, not on the first (rationed) GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_script_dry_run(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GPU_CHECK_DRY": "1",
        "GPU_STEPS": "1",
        "CPU_STEPS": "1",
        "CPU_THREADS": "1",
        "PYTHON": sys.executable,
        "OUT": str(tmp_path),
    }
    # a folder that does not exist: the script makes its synthetic 20-class stand-in
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path / "absent")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "GPU_CHECK_DRY=1" in out
    lines = {
        ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("GPU ", "CPU ")) and "images/s" in ln
    }
    for leg in ("GPU", "CPU"):
        ips = float(lines[leg].split(":")[1].split("images/s")[0])
        assert ips > 0, lines[leg]
    assert "GPU / CPU:" in out
    assert (tmp_path / "synthetic" / "train").is_dir()
    assert (tmp_path / "gpu" / "log.csv").is_file() and (tmp_path / "cpu" / "log.csv").is_file()
    # the explainer leg: images/s per method, one image per call and batched across images
    rows = {
        ln.split()[0].split("-")[0]: ln.split()
        for ln in out.splitlines()
        if ln.startswith(("ig-", "lime-", "shap-"))
    }
    assert sorted(rows) == ["ig", "lime", "shap"], out[-2000:]
    for cols in rows.values():
        assert (
            float(cols[4]) > 0 and float(cols[5]) > 0 and cols[6] in ("True", "False") and float(cols[7]) >= 0
        ), cols
    # the multi-process leg: 1 process, then 2 (gloo on the CPU), the same files
    for d in (1, 2):
        assert f"explain, {d} process(es): 2 images" in out, out[-2000:]
    assert "explain, 2 process(es) vs 1: maps, overlays and panels byte-identical" in out, out[-2000:]


def test_gpu_check_refuses_without_gpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():  # pragma: no cover - only on a GPU machine
        pytest.skip("a GPU is visible: the script runs instead of refusing")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    env.pop("GPU_CHECK_DRY", None)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path / "absent")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "no CUDA GPU visible" in proc.stderr
