"""A rich progress bar that shows the losses, and is silent under ``BIRDLENS_QUIET=1`` or ``quiet=True``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def is_quiet(quiet: bool | None = None) -> bool:
    if quiet is not None:
        return quiet
    return os.environ.get("BIRDLENS_QUIET", "").strip().lower() in {"1", "true", "yes", "on"}


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def update(self, completed: int, text: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, info=text)


@contextmanager
def progress_bar(total: int, description: str, start: int = 0, quiet: bool | None = None) -> Iterator[_Bar]:
    if is_quiet(quiet):
        yield _Bar(None, None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*cols, transient=False) as p:
        task = p.add_task(description, total=total, completed=start, info="")
        yield _Bar(p, task)
