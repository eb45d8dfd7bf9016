"""Deletion and insertion (Petsiuk, Das, Saenko: RISE, BMVC 2018), evaluated in large batches.

Pixels are ranked by the map (most important first, ties in raster order). Point ``k`` of a curve
(``k = 0..n_steps``) has the first ``min(k * step, H*W)`` ranked pixels changed, ``step = ceil(H*W / n_steps)``:

* **deletion** replaces them with a *substrate*, starting from the original image; a faithful map makes the
  explained class's softmax probability fall fast, so lower AUC is better;
* **insertion** starts from the substrate and puts the original pixels back; a faithful map makes the
  probability rise fast, so higher AUC is better.

AUC is the trapezoid over ``x = k / n_steps``: ``(sum - first/2 - last/2) / (n_points - 1)``.

Substrate defaults, as in the RISE code: **deletion uses zero in normalised space**, i.e. the per-channel mean
colour of the model's training data. It carries no edge or texture and no colour the model could read as
evidence (plain black is a strong, out-of-distribution signal: dark plumage, night). Blur would be the other
candidate, but blur keeps the coarse shape and colour of the bird, so deletion with blur stays high for every
map and separates methods less. **Insertion starts from a Gaussian blur** (kernel 11, sigma 5, RISE's
values): inserting into a grey canvas would reward any map that draws sharp edges anywhere, while the blurred
start holds the image statistics constant and only adds back detail. Both are configurable
(``"zero"``, ``"blur"``, ``"mean"`` = the image's own mean colour, or a tensor).

Speed: no Python loop over pixels or steps. Each image's pixel *rank* is computed once; the step at which pixel
``p`` changes is ``rank // step + 1``, so the mask of every (image, point) pair is one broadcast comparison,
and the perturbed batch is one ``torch.where`` written straight into a channels-last buffer. Pairs are evaluated
in chunks (``batch_size``, capped by ``max_chunk_bytes`` of input) under ``inference_mode``.

Shared ends: the two ends of both curves do not depend on the map (deletion starts from the image and ends at
the substrate; insertion starts from the blurred image and ends at the image), so per image they are three
evaluations, computed once (:func:`endpoint_probs`) and shared by both curves and, through ``endpoints=``, by
every map of the same images. A curve of ``n_steps`` costs ``n_steps - 1`` evaluations per image, not
``n_steps + 1``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from birdlens.explain import imaging
from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric
from birdlens.explain.metrics.ranking import pixel_rank
from birdlens.explain.outputs import OutputSelector, select_output
from birdlens.utils.device import autocast

Substrate = str | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
DEFAULT_STEPS = 224  # RISE: 224 steps of 224 pixels for a 224 x 224 input


def select_logits(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """The logits of a model output (tensor, tuple, dict...): the explainers' own output selector."""
    return select_output(out, output)


def gaussian_blur(images: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The ``"blur"`` substrate: :func:`birdlens.explain.imaging.gaussian_blur` with an 11-tap kernel."""
    return imaging.gaussian_blur(images, sigma, radius=kernel_size // 2)


def make_substrate(images: torch.Tensor, substrate: Substrate) -> torch.Tensor:
    """The image that removed pixels turn into (deletion) or that insertion starts from."""
    if isinstance(substrate, torch.Tensor):
        return substrate.to(images).expand_as(images)
    if callable(substrate):
        return substrate(images)
    if substrate == "zero":
        return torch.zeros_like(images)
    if substrate == "blur":
        return gaussian_blur(images)
    if substrate == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    raise ValueError(f"unknown substrate {substrate!r}: use 'zero', 'blur', 'mean' or a tensor")


def _is_channels_last(model: torch.nn.Module) -> bool:
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


@contextlib.contextmanager
def eval_channels_last(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode + channels_last weights for the duration; restores the caller's mode and memory format."""
    was_training, was_cl = model.training, _is_channels_last(model)
    model.eval()
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        yield model
    finally:
        if not was_cl:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class Curves:
    """Probability curves ``[B, n_steps + 1]`` over the fraction of pixels changed, and their AUCs."""

    fractions: np.ndarray
    probs: np.ndarray
    auc: np.ndarray
    mode: str


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under curves sampled at ``n`` equally spaced points on [0, 1] (last axis)."""
    c = np.asarray(curves, dtype=np.float64)
    n = c.shape[-1]
    if n < 2:
        raise ValueError("a curve needs at least two points")
    return (c.sum(-1) - c[..., 0] / 2 - c[..., -1] / 2) / (n - 1)


def chunk_size_for(batch_size: int, sample_shape: tuple[int, ...], max_chunk_bytes: int) -> int:
    per = 4 * math.prod(sample_shape)
    return max(1, min(batch_size, max_chunk_bytes // per))


@dataclass
class Endpoints:
    """Target probabilities ``[B]`` of the inputs every map shares: the image, the fully deleted image (the
    deletion substrate) and insertion's start (the insertion substrate)."""

    original: torch.Tensor
    deleted: torch.Tensor
    start: torch.Tensor


def endpoint_probs(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    deletion_substrate: Substrate = "zero",
    insertion_substrate: Substrate = "blur",
    batch_size: int = 16,
    output: OutputSelector = None,
    precision: str = "fp32",
) -> Endpoints:
    """The three map-independent points of the deletion and insertion curves, for ``endpoints=`` of
    :func:`perturbation_curves` (evaluated as those curves evaluate, in chunks under the same autocast)."""
    device = model_device(model)
    x = images.to(device, torch.float32)
    t = torch.as_tensor(targets, dtype=torch.long, device=device).view(-1)
    rows = torch.cat(
        [x, make_substrate(x, deletion_substrate), make_substrate(x, insertion_substrate)]
    ).contiguous(memory_format=torch.channels_last)
    tt = t.repeat(3)
    probs = torch.empty(rows.shape[0], dtype=torch.float32, device=device)
    with torch.inference_mode(), eval_channels_last(model):
        for s in range(0, rows.shape[0], batch_size):
            with autocast(precision, device):
                logits = select_logits(model(rows[s : s + batch_size]), output).float()
            probs[s : s + batch_size] = logits.softmax(-1).gather(1, tt[s : s + batch_size, None])[:, 0]
    b = x.shape[0]
    return Endpoints(probs[:b], probs[b : 2 * b], probs[2 * b :])


def perturbation_curves(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    modes: tuple[str, ...] = ("deletion", "insertion"),
    n_steps: int = DEFAULT_STEPS,
    deletion_substrate: Substrate = "zero",
    insertion_substrate: Substrate = "blur",
    batch_size: int = 16,
    max_chunk_bytes: int = 256 * 2**20,
    output: OutputSelector = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
    endpoints: Endpoints | None = None,
) -> dict[str, Curves]:
    """Deletion and/or insertion curves of every image, all points of all images in large batches.

    ``images`` are normalised ``[B, 3, H, W]``; ``maps`` ``[B, H, W]`` at the same resolution;
    ``targets`` the explained class per image. ``progress(n)`` is called with the number of model
    evaluations done after each chunk. ``precision``: autocast of the forwards (fp32: none).
    ``endpoints``: the map-independent ends (:func:`endpoint_probs` of the same images, targets, substrates
    and precision), to share between the maps of several methods; computed here when not given.
    """
    b, c, h, w = images.shape
    if maps.shape != (b, h, w):
        raise ValueError(f"maps {tuple(maps.shape)} must be [B, H, W] = {(b, h, w)}")
    hw = h * w
    n_steps = max(1, min(int(n_steps), hw))
    step = math.ceil(hw / n_steps)
    n_points = n_steps + 1
    device = model_device(model)
    targets = torch.as_tensor(targets, dtype=torch.long, device=device).view(-1)
    if endpoints is None:
        endpoints = endpoint_probs(
            model,
            images,
            targets,
            deletion_substrate=deletion_substrate,
            insertion_substrate=insertion_substrate,
            batch_size=batch_size,
            output=output,
            precision=precision,
        )

    # step at which each pixel changes (1-based): pixel changed at point k iff change_at <= k
    change_at = (pixel_rank(maps.to(device)) // step + 1).to(torch.int32)  # [B, HW]
    # channels-last views: [B, H*W, C]; a where() over them is already channels_last memory
    x_nhwc = images.to(device, torch.float32).permute(0, 2, 3, 1).reshape(b, hw, c).contiguous()
    chunk = chunk_size_for(batch_size, (c, h, w), max_chunk_bytes)
    inner = n_steps - 1  # points 1 .. n_steps - 1 depend on the map; the ends come from ``endpoints``
    total = b * inner
    out: dict[str, Curves] = {}
    with torch.inference_mode(), eval_channels_last(model):
        for mode in modes:
            if mode == "deletion":
                sub = make_substrate(images.to(device, torch.float32), deletion_substrate)
            elif mode == "insertion":
                sub = make_substrate(images.to(device, torch.float32), insertion_substrate)
            else:
                raise ValueError(f"unknown mode {mode!r}")
            sub_nhwc = sub.permute(0, 2, 3, 1).reshape(b, hw, c).contiguous()
            # deletion: changed pixels take the substrate; insertion: changed pixels take the original
            changed_src, kept_src = (sub_nhwc, x_nhwc) if mode == "deletion" else (x_nhwc, sub_nhwc)
            probs = torch.empty(total, dtype=torch.float32, device=device)
            for start in range(0, total, chunk):
                pair = torch.arange(start, min(start + chunk, total), device=device)
                img, k = pair // inner, (pair % inner + 1).to(torch.int32)
                mask = (change_at[img] <= k[:, None]).unsqueeze(-1)  # [N, HW, 1]
                x = torch.where(mask, changed_src[img], kept_src[img])
                x = x.view(-1, h, w, c).permute(0, 3, 1, 2)  # NCHW shape, channels_last strides
                with autocast(precision, device):
                    logits = select_logits(model(x), output).float()
                probs[start : start + pair.numel()] = logits.softmax(-1).gather(1, targets[img, None])[:, 0]
                if progress is not None:
                    progress(pair.numel())
            first, last = (
                (endpoints.original, endpoints.deleted)
                if mode == "deletion"
                else (endpoints.start, endpoints.original)
            )
            full = torch.cat([first.to(device)[:, None], probs.view(b, inner), last.to(device)[:, None]], 1)
            p = full.cpu().numpy().astype(np.float64)
            out[mode] = Curves(
                fractions=np.minimum(np.arange(n_points) * step, hw) / hw,
                probs=p,
                auc=auc(p),
                mode=mode,
            )
    return out


class _PerturbationMetric(Metric):
    category = Category.FAITHFULNESS
    mode: ClassVar[str]

    def __init__(
        self,
        n_steps: int = DEFAULT_STEPS,
        substrate: Substrate | None = None,
        batch_size: int = 16,
        max_chunk_bytes: int = 256 * 2**20,
    ) -> None:
        self.n_steps = n_steps
        self.substrate = (
            substrate if substrate is not None else ("zero" if self.mode == "deletion" else "blur")
        )
        self.batch_size = batch_size
        self.max_chunk_bytes = max_chunk_bytes

    def curves(
        self, model: torch.nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor
    ) -> Curves:
        key = "deletion_substrate" if self.mode == "deletion" else "insertion_substrate"
        return perturbation_curves(
            model,
            images,
            maps,
            targets,
            modes=(self.mode,),
            n_steps=self.n_steps,
            batch_size=self.batch_size,
            max_chunk_bytes=self.max_chunk_bytes,
            **{key: self.substrate},
        )[self.mode]

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        if model is None:
            raise ValueError(f"{self.name} needs the model")
        return self.curves(model, images, maps, targets).auc


@register_metric
class Deletion(_PerturbationMetric):
    name = "deletion"
    mode = "deletion"
    direction = Direction.LOWER
    description = "AUC of the class probability while removing pixels most-important-first (RISE)"


@register_metric
class Insertion(_PerturbationMetric):
    name = "insertion"
    mode = "insertion"
    direction = Direction.HIGHER
    description = "AUC of the class probability while inserting pixels into a blurred image (RISE)"
