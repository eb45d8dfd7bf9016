"""Where ``explain-eval``'s time goes: model evaluations and wall seconds per phase (and per method).

A model evaluation is one input row through the forward of the evaluated model (a batch of 16 is 16
evaluations; IG's rows also run a backward pass). The count comes from a forward pre-hook on the model, so it
sees every caller (explainers, deletion/insertion, the sanity check's randomised copy, the part removals)
without any of them reporting. The hook is a plain function, which ``copy.deepcopy`` shares rather than copies:
a copy made while watching (the BatchNorm-folded scorer, the cascading-randomisation model) counts into the
same counter, and :meth:`EvaluationCounter.watching` skips a module that already carries it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Tally:
    """Evaluations and wall seconds spent in one phase (or one method's part of it)."""

    evaluations: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, "seconds": round(self.seconds, 3)}


class EvaluationCounter:
    """Counts model evaluations into the current ``(phase, method)``; nothing is counted outside a phase."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str | None], Tally] = {}
        self._current: tuple[str, str | None] | None = None
        self._since = 0.0

        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if self._current is not None and args and isinstance(args[0], torch.Tensor):
                self.tallies[self._current].evaluations += int(args[0].shape[0]) if args[0].ndim else 1

        self._hook = hook

    @contextlib.contextmanager
    def watching(self, *models: nn.Module) -> Iterator[EvaluationCounter]:
        """Count the forwards of ``models`` (and of copies made from them meanwhile) for the duration."""
        handles = []
        try:
            for m in models:
                if self._hook not in m._forward_pre_hooks.values():
                    handles.append(m.register_forward_pre_hook(self._hook))
            yield self
        finally:
            for h in handles:
                h.remove()

    def attach(self, model: nn.Module) -> None:
        """Count a model created after :meth:`watching` began (no-op when it already carries the hook);
        the hook stays on it, which is harmless: outside a phase it counts nothing."""
        if self._hook not in model._forward_pre_hooks.values():
            model.register_forward_pre_hook(self._hook)

    @contextlib.contextmanager
    def phase(self, name: str, method: str | None = None) -> Iterator[Tally]:
        """Attribute the evaluations and the wall time of the block to ``(name, method)``; a nested phase
        pauses the enclosing one (exclusive time), so the seconds of all tallies add up to the wall time."""
        key = (name, method)
        tally = self.tallies.setdefault(key, Tally())
        previous, now = self._current, time.perf_counter()
        if previous is not None:
            self.tallies[previous].seconds += now - self._since
        self._current, self._since = key, now
        try:
            yield tally
        finally:
            now = time.perf_counter()
            tally.seconds += now - self._since
            self._current, self._since = previous, now

    def evaluations(self, name: str, method: str | None = None) -> int:
        """Evaluations counted so far in one phase (all methods when ``method`` is None)."""
        return sum(t.evaluations for (p, m), t in self.tallies.items() if p == name and method in (None, m))

    def as_dict(self) -> dict[str, Any]:
        """``{phase: {"evaluations", "seconds", "methods": {method: {...}}}}`` in first-use order."""
        out: dict[str, Any] = {}
        for (phase, method), t in self.tallies.items():
            entry = out.setdefault(phase, {"evaluations": 0, "seconds": 0.0, "methods": {}})
            entry["evaluations"] += t.evaluations
            entry["seconds"] = round(entry["seconds"] + t.seconds, 3)
            if method is not None and t.evaluations:
                entry["methods"][method] = t.as_dict()
        return out


def summed_evaluations(tables: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Several :meth:`EvaluationCounter.as_dict` tables added up phase by phase and method by method (the
    blocks of a sharded run: what the whole sample cost, over every rank), in first-seen order."""
    out: dict[str, Any] = {}
    for table in tables:
        for phase, e in table.items():
            into = out.setdefault(phase, {"evaluations": 0, "seconds": 0.0, "methods": {}})
            into["evaluations"] += e["evaluations"]
            into["seconds"] = round(into["seconds"] + e["seconds"], 3)
            for method, m in e["methods"].items():
                mine = into["methods"].setdefault(method, {"evaluations": 0, "seconds": 0.0})
                mine["evaluations"] += m["evaluations"]
                mine["seconds"] = round(mine["seconds"] + m["seconds"], 3)
    return out


def format_evaluations(evaluations: dict[str, Any]) -> str:
    """The per-phase table ``explain-eval`` prints at the end: evaluations, share of all, seconds."""
    total = sum(e["evaluations"] for e in evaluations.values()) or 1
    lines = [f"{'phase':<22}{'evaluations':>12}{'share':>8}{'seconds':>10}"]
    for phase, e in evaluations.items():
        lines.append(
            f"{phase:<22}{e['evaluations']:>12,}{e['evaluations'] / total:>8.1%}{e['seconds']:>10.1f}"
        )
        for method, m in e["methods"].items():
            lines.append(f"  {method:<20}{m['evaluations']:>12,}{'':>8}{m['seconds']:>10.1f}")
    return "\n".join(lines)
