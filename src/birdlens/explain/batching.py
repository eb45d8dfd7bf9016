"""Cross-image batching: model batches filled from the perturbations of several images.

Why: IG, LIME and SHAP evaluate the model many times per image; evaluating one image's perturbations at a time
leaves a GPU batch mostly empty whenever an image has fewer rows left than the batch holds. Here each image is a
*job* (how many rows it needs, a function that builds rows ``[lo, hi)``, its target class), and the rows of all
jobs are walked in order and cut into batches of ``chunk`` model evaluations, a batch spanning image boundaries.
Each row's output depends only on that row (the model is in eval mode: no batch statistics), with one exception
the CPU kernels make: a batch of *one* row is computed by other kernels (matrix-vector products) that round
differently. So a row that the per-image loop evaluated by itself (``Job.alone``) is evaluated by itself here
too, and any other row that would end up alone in a batch is evaluated next to a copy of itself. The kernels
also change between other batch sizes (Lite0 on this 2-core CPU: 2-15 rows agree at 64 px; at 224 px 2-3,
4-15 and 16+ rows are three groups), so the shared batches hold ``chunk`` rows, the batch size the per-image
loop uses too, and one image alone runs exactly the per-image loop's batches (today's values, bit for bit).
Several images get bit for bit the per-image values where their batch sizes fall in one such group (tested
with ``torch.equal``), else values equal to float32 rounding; SHAP's queue can then order two nearly tied
nodes the other way (numbers: docs/benchmarks.md, "Cross-image batching").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from birdlens.explain.base import Explainer, class_score, scores_of
from birdlens.explain.progress import announce
from birdlens.utils.device import autocast

#: builds rows ``[lo, hi)`` of one image's perturbations as a ``[hi - lo, C, H, W]`` tensor
Maker = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class Job:
    """One image's share of the model evaluations: ``rows`` rows built by ``make``, scored for ``target``."""

    rows: int
    make: Maker
    target: int
    #: rows the per-image loop evaluates in a batch of their own (kept alone so they round the same)
    alone: frozenset[int] = frozenset()
    #: the per-image loop's batch bounds when they are not cuts of ``chunk`` rows: a job alone keeps them
    bounds: tuple[int, ...] | None = None
    #: the contrast class: rows are scored ``logit[target] - logit[contrast]`` (None: not contrastive)
    contrast: int | None = None


def alone_rows(bounds: Sequence[int]) -> frozenset[int]:
    """The rows evaluated alone by a per-image loop whose batches are ``rows[bounds[k]:bounds[k + 1]]``."""
    return frozenset(lo for lo, hi in itertools.pairwise(bounds) if hi - lo == 1)


def chunk_bounds(rows: int, chunk: int) -> list[int]:
    """Batch bounds of a loop over ``rows`` rows in batches of ``chunk`` (the last one shorter)."""
    return [*range(0, rows, max(1, chunk)), rows]


def _batches(jobs: Sequence[Job], chunk: int) -> Iterator[tuple[list[tuple[int, int, int]], bool]]:
    """The rows of all jobs in order, cut into batches of ``chunk``: each a list of ``(job, lo, hi)`` pieces
    and whether it is a row the per-image loop evaluated alone."""
    chunk = max(1, int(chunk))
    if len(jobs) == 1 and jobs[0].bounds is not None:  # one image: exactly its per-image loop
        for lo, hi in itertools.pairwise(jobs[0].bounds):
            yield [(0, lo, hi)], hi - lo == 1
        return
    pieces: list[tuple[int, int, int]] = []
    filled = 0
    for j, job in enumerate(jobs):
        lo = 0
        while lo < job.rows:
            if lo in job.alone:
                yield [(j, lo, lo + 1)], True
                lo += 1
                continue
            hi = min([job.rows, lo + chunk - filled, *(r for r in job.alone if r > lo)])
            pieces.append((j, lo, hi))
            filled += hi - lo
            lo = hi
            if filled == chunk:
                yield pieces, False
                pieces, filled = [], 0
    if pieces:
        yield pieces, False


def _assemble(
    explainer: Explainer, jobs: Sequence[Job], pieces: list[tuple[int, int, int]], alone: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The batch, each row's target and each row's contrast (None when no job of the batch has one)."""
    batch = torch.cat([jobs[j].make(lo, hi) for j, lo, hi in pieces])

    def per_row(values: list[int]) -> torch.Tensor:
        rows = [
            torch.full((hi - lo,), v, dtype=torch.long) for (_, lo, hi), v in zip(pieces, values, strict=True)
        ]
        return torch.cat(rows).to(batch.device)

    targets = per_row([jobs[j].target for j, _, _ in pieces])
    contrasts = [jobs[j].contrast for j, _, _ in pieces]
    if any(c is not None for c in contrasts) and any(c is None for c in contrasts):
        raise ValueError("jobs of one batch must all be contrastive or none")
    cst = None if contrasts[0] is None else per_row([int(c) for c in contrasts])  # type: ignore[arg-type]
    if batch.shape[0] == 1 and not alone:  # next to a copy: rounds as in a batch of several rows
        batch, targets = batch.expand(2, *batch.shape[1:]), targets.expand(2)
        cst = None if cst is None else cst.expand(2)
    return explainer.to_memory_format(batch), targets, cst


def pooled_values(
    explainer: Explainer, jobs: Sequence[Job], chunk: int, score: str, precision: str
) -> list[torch.Tensor]:
    """Every job's target scores (float64 ``[rows]``, on the CPU), evaluated in shared batches of ``chunk``
    rows without gradients: what :func:`birdlens.explain.methods.perturb.target_values` gives per image."""
    out: list[list[torch.Tensor]] = [[] for _ in jobs]
    announce(sum(job.rows for job in jobs))
    for pieces, alone in _batches(jobs, chunk):
        batch, targets, cst = _assemble(explainer, jobs, pieces, alone)
        with torch.inference_mode(), autocast(precision, batch.device):
            logits = explainer.fast_logits(batch).float()
        # the model's own head for "prob" (a sigmoid for multi-label runs), as target_values does
        values = scores_of(explainer, logits, targets, cst, score)
        start = 0
        for j, lo, hi in pieces:
            out[j].append(values[start : start + hi - lo])
            start += hi - lo
    return [torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for v in out]


def pooled_gradients(
    explainer: Explainer,
    jobs: Sequence[Job],
    chunk: int,
    consume: Callable[[int, torch.Tensor], None],
) -> None:
    """Input gradients of each row's target logit, in shared batches of ``chunk`` rows; ``consume(job, grads)``
    gets every job's gradients ``[rows, C, H, W]`` in row order as soon as its last row is done (so at most
    the jobs spanning one batch are held)."""
    held: dict[int, list[torch.Tensor]] = {}
    announce(sum(job.rows for job in jobs))
    for pieces, alone in _batches(jobs, chunk):
        batch, targets, cst = _assemble(explainer, jobs, pieces, alone)
        pts = batch.requires_grad_(True)
        with torch.enable_grad():
            out = explainer.logits(pts)
            (g,) = torch.autograd.grad(class_score(out, targets, cst).sum(), pts)
        start = 0
        for j, lo, hi in pieces:
            held.setdefault(j, []).append(g[start : start + hi - lo])
            start += hi - lo
            if hi == jobs[j].rows:
                consume(j, torch.cat(held.pop(j)))
