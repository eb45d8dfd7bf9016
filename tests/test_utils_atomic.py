"""Atomic writes give files the mode an ordinary open() would (issue 26, finding 6)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from birdlens.utils import atomic


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    with umask(mask):
        atomic.write_json(tmp_path / "results.json", {"a": 1})
        atomic.write_text(tmp_path / "report.html", "<html></html>")
        with atomic.atomic_path(tmp_path / "best.npy", suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.zeros(3))
        # what an ordinary tool would give, for comparison
        (tmp_path / "plain.txt").write_text("x")
    assert mode(tmp_path / "plain.txt") == expected
    for name in ("results.json", "report.html", "best.npy"):
        assert mode(tmp_path / name) == expected, name


def test_figures_and_cache_entries_follow_the_umask(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from birdlens.data.cache import ImageCache

    with umask(0o022):
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        with atomic.atomic_path(tmp_path / "fig.png", suffix=".png") as tmp:
            fig.savefig(tmp)
        plt.close(fig)
        cache = ImageCache(tmp_path / "cache")
        cache.put("ab" * 20, np.zeros((4, 4, 3), np.uint8))
    assert mode(tmp_path / "fig.png") == 0o644
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert entries
    assert all(mode(p) == 0o644 for p in entries), [(p.name, oct(mode(p))) for p in entries]


def test_current_umask_reads_without_changing_it() -> None:
    with umask(0o027):
        assert atomic.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # still what was set
        assert atomic.default_file_mode() == 0o640


def test_a_training_run_writes_ordinary_files(tmp_path: Path) -> None:
    """Checkpoints, metrics, figures, manifest, logs and the feature cache of a real (tiny) run."""
    from _trainutil import make_image_folder, tiny_probe_config
    from birdlens.train import train

    data = make_image_folder(tmp_path / "birds")
    cfg = tiny_probe_config(data, tmp_path)
    with umask(0o022):
        run = train(cfg)
    written = [p for root in (run, tmp_path / "features") for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"best.safetensors", "test.json", "manifest.csv", "reliability_test.png"} <= names
    assert any(p.is_relative_to(tmp_path / "features") for p in written)
    private = [(str(p.relative_to(tmp_path)), oct(mode(p))) for p in written if mode(p) != 0o644]
    assert private == []
