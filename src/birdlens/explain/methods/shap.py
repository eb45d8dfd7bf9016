"""SHAP Owen values over the image partition with a blur masker, the algorithm of
``shap.Explainer(f, shap.maskers.Image("blur(k,k)", shape))`` (Partition explainer), on tensors.

What shap does (``shap/explainers/_partition.py::owen`` and ``shap/maskers/_image.py``), reproduced step for step:
the features are the ``H*W*C`` input values; the partition tree splits the widest of (rows, columns) in half
until a side is 1, then the channels; hidden features show ``cv2.blur(image, (k, k))``; starting from
(all hidden, all shown) a priority queue (key ``-|f(child) - f(parent)| * weight``, ties broken by
``np.random.randn()``) expands the node with the largest effect by evaluating its two children in the two
contexts, ``batch_size`` masks per expansion step, until ``max_evals`` evaluations are spent; what remains in the
queue keeps ``(f11 - f00) * weight`` on its node, and every node's value is spread evenly over its pixels.

Why our own: shap keeps a dense ``(2M - 1) x M`` sparse mask matrix (M = 150,528 for a 224 px image), builds
each masked image in numpy and copies it to the model (a large share of its time; measured:
docs/benchmarks.md#explainers). Here a mask is a tuple of boxes of the partition, painted into a boolean
tensor on the model's device and blended with one ``torch.where``, and the blur is an exact torch box filter.
With the same ``batch_size`` and ``seed`` as shap (whose tie-break draws come from numpy's global
RandomState), the evaluation order is the same, so the values agree to float rounding (tested). The masks of
one step go through the model in chunks of ``forward_chunk`` images (4 is faster than shap's 10 on a small
CPU, see ``perturb.FORWARD_CHUNK``); chunking never changes the order or the values.
"""

from __future__ import annotations

import heapq
from collections.abc import Generator
from typing import Any

import numpy as np
import torch
from torch import nn

from birdlens.explain.base import SEED, Explainer, Param, register
from birdlens.explain.batching import Job, Maker, alone_rows, chunk_bounds, pooled_values
from birdlens.explain.imaging import box_blur
from birdlens.explain.methods.perturb import PRECISION, SCORE, check_options

Box = tuple[int, int, int, int, int, int]  # rows [x0, x1), cols [y0, y1), channels [z0, z1)


def split(box: Box) -> tuple[Box, Box] | None:
    """The two children of a partition node (None for a single feature), as ``_jit_build_partition_tree``."""
    x0, x1, y0, y1, z0, z1 = box
    xw, yw, zw = x1 - x0, y1 - y0, z1 - z0
    if xw == 1 and yw == 1 and zw == 1:
        return None
    if xw >= yw and xw > 1:
        xm = x0 + xw // 2
        return (x0, xm, y0, y1, z0, z1), (xm, x1, y0, y1, z0, z1)
    if yw > 1:
        ym = y0 + yw // 2
        return (x0, x1, y0, ym, z0, z1), (x0, x1, ym, y1, z0, z1)
    zm = z0 + zw // 2
    return (x0, x1, y0, y1, z0, zm), (x0, x1, y0, y1, zm, z1)


def box_size(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2]) * (box[5] - box[4])


@register("shap", "partition_shap", "owen")
class PartitionShap(Explainer):
    """Signed Owen values summed over colour channels; ``scores`` has ``base_value`` (all blurred),
    ``full_value`` (the image) and ``evals``."""

    title = "SHAP"
    panel_order = 60
    stochastic = True
    signed = True
    heavy = True
    batched = True
    budget_param = "max_evals"
    # batch_size (two masked images per expansion) and forward_chunk bound the memory of one step
    tunable = (
        Param("max_evals", int, 500, lo=3, hi=100000, doc="model evaluations per image"),
        Param("blur_kernel", int, 128, lo=1, hi=1024, doc="box-blur size (px) of hidden pixels"),
        Param("batch_size", int, 10, lo=1, hi=64, doc="partition nodes expanded per step (as shap)"),
        Param("forward_chunk", int, 4, lo=1, hi=64, doc="masked images per model call"),
        SEED,
        SCORE,
        PRECISION,
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        max_evals: int = 500,
        blur_kernel: int = 128,
        batch_size: int = 10,
        forward_chunk: int = 4,
        seed: int = 0,
        score: str = "prob",
        precision: str = "fp32",
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        check_options(score, precision)
        if max_evals < 3:
            raise ValueError("max_evals must be at least 3")
        self.max_evals = int(max_evals)
        self.blur_kernel = int(blur_kernel)
        self.batch_size = int(batch_size)
        self.forward_chunk = int(forward_chunk)
        self.seed = int(seed)
        self.score = score
        self.precision = precision
        self.params.update(
            max_evals=self.max_evals,
            blur_kernel=self.blur_kernel,
            masker=f"blur({self.blur_kernel},{self.blur_kernel})",
            batch_size=self.batch_size,
            forward_chunk=self.forward_chunk,
            seed=self.seed,
            score=score,
            precision=precision,
        )

    def _masked(self, xi: torch.Tensor, blurred: torch.Tensor, masks: list[tuple[Box, ...]]) -> Maker:
        """Rows ``[lo, hi)`` of ``masks`` as masked images: the boxes painted into a boolean tensor, one where."""
        c, h, w = xi.shape[1:]

        def make(lo: int, hi: int) -> torch.Tensor:
            keep = torch.zeros(hi - lo, c, h, w, dtype=torch.bool, device=xi.device)
            for j, boxes in enumerate(masks[lo:hi]):
                for x0, x1, y0, y1, z0, z1 in boxes:
                    keep[j, z0:z1, x0:x1, y0:y1] = True
            return torch.where(keep, xi, blurred)

        return make

    def owen(self, xi: torch.Tensor, target: int) -> tuple[torch.Tensor, float, float, int]:
        """Owen values of one image ``[1, C, H, W]``: (map ``[H, W]``, f(all hidden), f(image), evals)."""
        return self._run([xi], [target])[0]

    def _run(
        self, images: list[torch.Tensor], targets: list[int]
    ) -> list[tuple[torch.Tensor, float, float, int]]:
        """Owen values of several images in lockstep: each step's masks of every image share the model
        batches (cross-image batching); each image's own sequence of masks and draws is unchanged."""
        blurred = [box_blur(xi, self.blur_kernel) for xi in images]
        runs = [self._owen_steps(xi.shape[1:]) for xi in images]
        results: list[Any] = [None] * len(images)
        asks: dict[int, list[tuple[Box, ...]]] = {i: next(r) for i, r in enumerate(runs)}
        while asks:
            order = sorted(asks)
            jobs = [
                Job(
                    len(asks[i]),
                    self._masked(images[i], blurred[i], asks[i]),
                    targets[i],
                    alone_rows(chunk_bounds(len(asks[i]), self.forward_chunk)),
                    contrast=self.contrast_of(i),
                )
                for i in order
            ]
            values = pooled_values(self, jobs, self.forward_chunk, self.score, self.precision)
            asks = {}
            for i, v in zip(order, values, strict=True):
                try:
                    asks[i] = runs[i].send(v.tolist())
                except StopIteration as done:
                    results[i] = done.value
        return results

    def _owen_steps(
        self, shape: torch.Size
    ) -> Generator[list[tuple[Box, ...]], list[float], tuple[torch.Tensor, float, float, int]]:
        """shap's Owen loop for one image as a generator: yields each step's masks, is sent their values."""
        c, h, w = shape
        rs = np.random.RandomState(self.seed)
        root: Box = (0, h, 0, w, 0, c)
        (f00,) = yield [()]
        (f11,) = yield [(root,)]
        max_evals = self.max_evals - 2
        dvalues: dict[Box, float] = {}
        q: list[Any] = [(0.0, 0.0, 0, ((), f00, f11, root, 1.0))]
        counter = 1  # never reached in comparisons (the random draws are distinct); keeps heapq total
        eval_count = 0
        while q:
            if eval_count >= max_evals:
                for *_, (_, a, b, node, wt) in q:
                    dvalues[node] = dvalues.get(node, 0.0) + (b - a) * wt
                break
            batch_args, batch_masks = [], []
            while q and len(batch_masks) < self.batch_size and eval_count + len(batch_masks) < max_evals:
                m00, a, b, node, wt = heapq.heappop(q)[-1]
                kids = split(node)
                if kids is None:
                    dvalues[node] = dvalues.get(node, 0.0) + (b - a) * wt
                    continue
                left, right = kids
                m10, m01 = (*m00, left), (*m00, right)
                batch_args.append((m00, m10, m01, a, b, left, right, wt))
                batch_masks += [m10, m01]
            if not batch_args:
                continue
            fout = yield batch_masks
            eval_count += len(batch_masks)
            for i, (m00, m10, m01, a, b, left, right, wt) in enumerate(batch_args):
                f10, f01 = fout[2 * i], fout[2 * i + 1]
                nw = wt / 2
                for key, args in (
                    (-abs(f10 - a) * nw, (m00, a, f10, left, nw)),
                    (-abs(f01 - a) * nw, (m00, a, f01, right, nw)),
                    (-abs(b - f01) * nw, (m01, f01, b, left, nw)),
                    (-abs(b - f10) * nw, (m10, f10, b, right, nw)),
                ):
                    heapq.heappush(q, (key, rs.randn(), counter, args))
                    counter += 1
        # spread each node's value evenly over its features (shap's lower_credit), then sum the channels
        acc = torch.zeros(c, h, w, dtype=torch.float64)
        for (x0, x1, y0, y1, z0, z1), v in dvalues.items():
            acc[z0:z1, x0:x1, y0:y1] += v / box_size((x0, x1, y0, y1, z0, z1))
        return acc.sum(0), f00, f11, eval_count + 2

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        logits, target = self.predict(x, target)
        runs = self._run([x[i : i + 1] for i in range(x.shape[0])], [int(t) for t in target])
        maps = [m.float() for m, *_ in runs]
        base, full, evals = ([r[k] for r in runs] for k in (1, 2, 3))
        scores = self.target_scores(logits, target)
        scores.update(base_value=torch.tensor(base), full_value=torch.tensor(full), evals=torch.tensor(evals))
        return torch.stack(maps).to(x.device), target, scores, {}
