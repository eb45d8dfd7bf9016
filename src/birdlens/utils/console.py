"""The console of every command: rich progress bars, one-line notes and warnings on stderr, quiet mode.

Why one module: quiet mode is read from the environment here and nowhere else, under one rule, so
``BIRDLENS_QUIET`` means the same to every stage; functions that show progress take ``quiet`` as a parameter.

Truth rule: ``BIRDLENS_QUIET`` switches progress off when set to anything but empty, ``0``, ``false``,
``no`` or ``off`` (case and surrounding spaces ignored).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = [
    "QUIET_ENV",
    "Bar",
    "Bars",
    "bars",
    "env_quiet",
    "is_quiet",
    "loop_progress",
    "note",
    "progress",
    "track",
    "warn",
]

T = TypeVar("T")
QUIET_ENV = "BIRDLENS_QUIET"
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_quiet() -> bool:
    """Whether ``BIRDLENS_QUIET`` asks for no progress output (the module docstring gives the rule)."""
    return os.environ.get(QUIET_ENV, "").strip().lower() not in _FALSE


def is_quiet(quiet: bool | None = None) -> bool:
    """``quiet`` when the caller decided (``True`` or ``False``), else the environment's choice.

    ``False`` from a caller still yields to ``BIRDLENS_QUIET``: a ``--quiet`` flag defaults to False, and the
    variable is how tests and CI silence every command at once.
    """
    return bool(quiet) or env_quiet()


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class Bar:
    """One task of a progress display: ``advance(n)`` and ``update(completed=, info=)``; no-op when quiet."""

    def __init__(self, bar: Any = None, task: Any = None) -> None:
        self._bar, self._task = bar, task

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def update(self, completed: int | None = None, info: str | None = None) -> None:
        if self._bar is None:
            return
        fields: dict[str, Any] = {} if info is None else {"info": info}
        self._bar.update(self._task, completed=completed, **fields)

    def __call__(self, n: int = 1) -> None:
        self.advance(n)


class Bars:
    """What :func:`bars` yields: one display that holds several tasks (bars) at once."""

    def __init__(self, progress: Any = None) -> None:
        self._progress = progress

    def task(self, description: str, total: int | None, start: int = 0) -> Bar:
        if self._progress is None:
            return Bar()
        return Bar(
            self._progress, self._progress.add_task(description, total=total, completed=start, info="")
        )


@contextlib.contextmanager
def bars(
    quiet: bool | None = None, transient: bool = True, elapsed: bool = False, info: bool = False
) -> Iterator[Bars]:
    """A rich progress display on stderr for several tasks, or nothing when quiet.

    ``transient`` removes it when done (a scan); ``elapsed`` adds the time so far and ``info`` a text
    field set by :meth:`Bar.update` (long loops that show their losses or the current item).
    """
    if is_quiet(quiet):
        yield Bars()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TimeElapsedColumn()] if elapsed else []
    columns += [TimeRemainingColumn()]
    columns += [TextColumn("{task.fields[info]}")] if info else []
    with Progress(*columns, console=_stderr(), transient=transient) as progress:
        yield Bars(progress)


@contextlib.contextmanager
def progress(
    total: int | None,
    description: str,
    quiet: bool | None = None,
    start: int = 0,
    transient: bool = True,
    elapsed: bool = False,
    info: bool = False,
) -> Iterator[Bar]:
    """One bar of ``total`` steps (see :func:`bars`); nothing for fewer than two steps."""
    if total is not None and total < 2:
        quiet = True
    with bars(quiet, transient=transient, elapsed=elapsed, info=info) as group:
        yield group.task(description, total, start=start)


def loop_progress(
    total: int, description: str, quiet: bool | None = None, start: int = 0
) -> contextlib.AbstractContextManager[Bar]:
    """A bar that stays on screen with the time so far and an info field: long loops that report numbers."""
    return progress(total, description, quiet, start=start, transient=False, elapsed=True, info=True)


def track(
    items: Iterable[T], total: int | None = None, description: str = "working", quiet: bool | None = None
) -> Iterator[T]:
    """Iterate ``items`` with a transient progress bar (see :func:`progress`)."""
    with progress(total, description, quiet) as bar:
        for item in items:
            yield item
            bar.advance()


def note(message: str, quiet: bool | None = None) -> None:
    """One line on stderr (rich markup allowed), silent when quiet."""
    if not is_quiet(quiet):
        _stderr().print(message)


def warn(message: str) -> None:
    """One unwrapped line on stderr, shown even when quiet: something the user must know was not done.

    The message is printed as it is (no rich markup), since it usually quotes paths and error texts.
    """
    _stderr().print(message, markup=False, highlight=False, soft_wrap=True)
