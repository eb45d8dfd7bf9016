"""Model rows a method is about to evaluate, told to whoever is listening (the web app's progress bar).

A method without a budget parameter (Score-CAM, Ablation-CAM: one forward per channel of the CAM layer) only
learns how much work it has once it has seen the layer, so the shared batching engine
(:mod:`birdlens.explain.batching`) announces each call's rows here; a caller that wants them listens in a
:func:`announcing` block. A context variable, so concurrent explanations in other threads never mix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_SINK: ContextVar[Callable[[int], None] | None] = ContextVar("birdlens_expected_rows", default=None)


@contextlib.contextmanager
def announcing(sink: Callable[[int], None] | None) -> Iterator[None]:
    """Within the block, :func:`announce` calls ``sink(rows)`` (None: nobody listens)."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def announce(rows: int) -> None:
    """``rows`` more model rows are about to be evaluated (a no-op when nobody listens)."""
    sink = _SINK.get()
    if sink is not None and rows > 0:
        sink(int(rows))
