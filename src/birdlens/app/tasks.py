"""One worker thread owns the model; every request becomes a task in its queue.

Why a single worker rather than a lock around the model: the queue gives each waiting request a position
and each running one a progress fraction (what the page shows while LIME/SHAP compute), and it makes
"concurrent requests never mix" true by construction, since only one thread ever touches the model, its
hooks (Grad-CAM) or its gradients.

Cooperative stopping: a task's :class:`Watch` is ticked before every model forward (see
:func:`watching`); past the deadline or after a cancel the tick raises, so a budgeted request stops at
the next batch instead of holding the model until it finishes.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch import nn

T = TypeVar("T")


class TaskTimeout(Exception):
    """The task went past its per-request time budget."""


class TaskCancelled(Exception):
    """The client cancelled the task (or the server is shutting down)."""


class Watch:
    """Progress, deadline and cancellation of one task, shared between the worker and the API."""

    def __init__(self, total: int | None = None, timeout_s: float | None = None) -> None:
        self.total = total
        self.timeout_s = timeout_s
        self.seen = 0
        self.deadline: float | None = None
        self._cancel = threading.Event()

    def start(self) -> None:
        if self.timeout_s is not None:
            self.deadline = time.monotonic() + self.timeout_s

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def expect(self, n: int) -> None:
        """``n`` more images are coming (a method that learns its work as it goes: Score-CAM's channels)."""
        self.total = (self.total or 0) + n

    def tick(self, n: int = 1) -> None:
        """Called before each model forward of ``n`` images: raises when the task must stop."""
        if self._cancel.is_set():
            raise TaskCancelled("cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TaskTimeout(f"stopped after the {self.timeout_s:g} s budget; ask for fewer samples")
        self.seen += n

    @property
    def progress(self) -> float:
        if not self.total:
            return 0.0
        return min(0.99, self.seen / self.total)


@contextlib.contextmanager
def watching(model: nn.Module, watch: Watch) -> Iterator[nn.Module]:
    """``model`` with a :class:`Watch` tick before every forward while the block runs (perturbation methods).

    A forward pre-hook rather than a wrapper module, so the model's layer paths (a CAM layer such as
    ``features.2.act``) stay what the run names them; a copy of the model made meanwhile (the BatchNorm-folded
    one LIME, SHAP and the CAMs run) carries the hook and ticks the *same* watch, where progress, deadline and
    cancel live (deepcopy keeps a function, so the watch and its ``threading.Event`` are not copied)."""

    def tick(_module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        watch.tick(int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim == 4 else 1)

    handle = model.register_forward_pre_hook(tick)
    try:
        yield model
    finally:
        handle.remove()


@dataclass
class Task(Generic[T]):
    """A unit of model work with the state the API reports."""

    id: str
    kind: str
    watch: Watch
    seq: int
    state: str = "queued"
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    result: T | None = None
    error: BaseException | None = None
    future: Future[T] = field(default_factory=Future)

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    @property
    def queued_seconds(self) -> float:
        return (self.started or time.monotonic()) - self.created


class TaskQueue:
    """A single-worker executor that remembers recent tasks (for polling) and their order (for positions)."""

    def __init__(self, keep_seconds: float = 600.0, keep_max: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="birdlens-model")
        self._tasks: dict[str, Task[Any]] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.keep_seconds = keep_seconds
        self.keep_max = keep_max

    def submit(self, kind: str, fn: Callable[[Watch], T], watch: Watch | None = None) -> Task[T]:
        task: Task[T] = Task(id=uuid.uuid4().hex, kind=kind, watch=watch or Watch(), seq=next(self._seq))
        with self._lock:
            self._prune()
            self._tasks[task.id] = task

        def run() -> None:
            if task.watch.cancelled:
                self._finish(task, "cancelled", error=TaskCancelled("cancelled before it started"))
                return
            task.state = "running"
            task.started = time.monotonic()
            task.watch.start()
            try:
                result = fn(task.watch)
            except TaskCancelled as e:
                self._finish(task, "cancelled", error=e)
            except BaseException as e:
                self._finish(task, "error", error=e)
            else:
                self._finish(task, "done", result=result)

        self._pool.submit(run)
        return task

    @staticmethod
    def _finish(task: Task[Any], state: str, result: Any = None, error: BaseException | None = None) -> None:
        task.finished = time.monotonic()
        task.result = result
        task.error = error
        task.state = state
        if error is not None:
            task.future.set_exception(error)
        else:
            task.future.set_result(result)

    def get(self, task_id: str) -> Task[Any] | None:
        with self._lock:
            return self._tasks.get(task_id)

    def position(self, task: Task[Any]) -> int:
        """Tasks ahead of ``task`` that have not finished (0 when it is running or next)."""
        if task.state != "queued":
            return 0
        with self._lock:
            return sum(
                1 for t in self._tasks.values() if t.seq < task.seq and t.state in ("queued", "running")
            )

    def pending(self) -> int:
        with self._lock:
            return sum(1 for t in self._tasks.values() if t.state in ("queued", "running"))

    def _prune(self) -> None:
        now = time.monotonic()
        done = [t for t in self._tasks.values() if t.finished is not None]
        old = {t.id for t in done if now - t.finished > self.keep_seconds}  # type: ignore[operator]
        excess = len(self._tasks) - len(old) - self.keep_max
        if excess > 0:
            rest = sorted((t for t in done if t.id not in old), key=lambda t: t.seq)
            old.update(t.id for t in rest[:excess])
        for tid in old:
            del self._tasks[tid]

    def shutdown(self) -> None:
        with self._lock:
            for t in self._tasks.values():
                t.watch.cancel()
        self._pool.shutdown(wait=True, cancel_futures=False)
