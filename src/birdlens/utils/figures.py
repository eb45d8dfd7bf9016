"""Figures are views of results already computed: one that fails is reported, never fatal.

Why: a figure can fail for reasons unrelated to the results (a font, a backend, an odd label), and a run
that computed its metrics for an hour must still write them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from birdlens.utils.console import warn

__all__ = ["figure_or_warning"]


def figure_or_warning(draw: Callable[[Path], object], path: str | os.PathLike[str]) -> Path | None:
    """``draw(path)``; on an error, one line on stderr naming the figure and the error, and ``None``."""
    path = Path(path)
    try:
        draw(path)
    except Exception as e:
        warn(f"figure {path} not written: {type(e).__name__}: {e}")
        return None
    return path
