"""Rich progress bars for data scans, silent under ``BIRDLENS_QUIET=1`` (tests, CI) or ``--quiet``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def quiet() -> bool:
    """True when progress output is switched off by the environment."""
    return os.environ.get("BIRDLENS_QUIET", "").strip().lower() in ("1", "true", "yes")


def track(
    items: Iterable[T], total: int | None = None, description: str = "working", enabled: bool | None = None
) -> Iterator[T]:
    """Iterate ``items`` with a progress bar on stderr (transient), unless quiet or ``enabled=False``."""
    show = (not quiet()) if enabled is None else (enabled and not quiet())
    if not show or (total is not None and total < 2):
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
