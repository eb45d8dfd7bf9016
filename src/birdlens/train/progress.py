"""Console output of training: rich progress bars and one-line notes, silent when quiet."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator


def is_quiet(flag: bool = False) -> bool:
    """``--quiet`` or ``BIRDLENS_QUIET=1`` (set by tests and CI)."""
    return flag or os.environ.get("BIRDLENS_QUIET", "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def progress(total: int, description: str, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a transient rich bar on stderr unless quiet."""
    if is_quiet(quiet) or total < 2:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def note(message: str, quiet: bool = False) -> None:
    """One line on stderr (rich markup allowed)."""
    if is_quiet(quiet):
        return
    from rich.console import Console

    Console(stderr=True).print(message)
