"""Shared fixtures. Torch runs single-threaded in tests: this 2-core CPU is ~50x slower when oversubscribed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("BIRDLENS_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_BIRDS = Path(os.environ.get("BIRDLENS_SHARED_BIRDS", REPO.parent / "shared" / "data" / "birds"))


def _need_shared() -> Path:
    if SHARED_BIRDS.is_dir():
        return SHARED_BIRDS
    msg = f"real bird photos not found at {SHARED_BIRDS} (set BIRDLENS_SHARED_BIRDS to their folder)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; CI=true requires them", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_birds() -> Path:
    """``../shared/data/birds`` (20 species, train/valid/test). Skips when absent; fails under CI=true."""
    return _need_shared()
