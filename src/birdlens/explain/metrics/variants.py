"""Ground truth from re-rendered variants of the synthetic birds (after FunnyBirds, Hesse et al., ICCV 2023).

The generator can draw the *same* bird on another background and two birds of different classes side by
side; both give questions with a known answer:

* ``background_independence``: the bird is re-rendered on a new background. Where the model does not care
  (its class probability moves by at most ``tol``), a faithful map should not care either: it should stay
  where it was, and on the bird. The score is the map mass that does both: with ``a`` and ``b`` the two
  positive maps normalised to sum 1, ``sum over bird pixels of min(a, b)``. 1: identical maps, all on the
  bird; 0: no common mass on the bird. Images where the model itself moves by more than ``tol`` are NaN
  (FunnyBirds' background-independence test also looks only at background the model ignores).
* ``target_sensitivity``: two birds, of classes A and B, in one image. The map for A should lie on bird A
  and the map for B on bird B. With ``s(m)`` the share of a map's on-bird positive mass that lies on bird A,
  the score is ``s(map_A) - s(map_B)``: 1 when each map is entirely on its own bird, 0 for a map that ignores
  the target (every content-free baseline), negative when the maps swap birds.

A map with no positive mass counts as uniform (a constant map marks no place). Both metrics explain their
variants through ``explain_fn`` in one batched call per metric and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric
from birdlens.explain.metrics.parts import class_probabilities

#: The most the class probability may move when the background is replaced for an image to be scored.
DEFAULT_TOL = 0.1
_SYNTH = "a synthetic-bird dataset (specs.jsonl and parts.json beside the images)"


def normalised_positive(maps: torch.Tensor) -> torch.Tensor:
    """``[B, H*W]`` float64: the positive part of each map, summing to 1 (uniform where nothing is positive)."""
    pos = torch.nan_to_num(maps.detach().double(), nan=0.0).clamp_min(0).flatten(1).cpu()
    total = pos.sum(1, keepdim=True)
    uniform = torch.full_like(pos, 1.0 / pos.shape[1])
    return torch.where(total > 0, pos / total.clamp_min(1e-300), uniform)


def common_mass_on_bird(a: torch.Tensor, b: torch.Tensor, bird: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``sum over bird pixels of min(a, b)`` for maps ``a``, ``b`` ``[B, H, W]`` and a bool mask."""
    na, nb = normalised_positive(a), normalised_positive(b)
    on = torch.as_tensor(bird).bool().flatten(1).cpu()
    return (torch.minimum(na, nb) * on).sum(1)


def first_bird_share(maps: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """``[B]``: the share of the on-bird positive mass on bird 1 (``which`` is 0 background, 1, 2 the birds);
    a map with nothing on either bird counts as uniform over them (the share of bird 1's area)."""
    pos = torch.nan_to_num(maps.detach().double(), nan=0.0).clamp_min(0).flatten(1).cpu()
    w = torch.as_tensor(which).long().flatten(1).cpu()
    one, two = (pos * (w == 1)).sum(1), (pos * (w == 2)).sum(1)
    area1, area2 = (w == 1).sum(1).double(), (w == 2).sum(1).double()
    total = one + two
    return torch.where(total > 0, one / total.clamp_min(1e-300), area1 / (area1 + area2).clamp_min(1))


@register_metric
class BackgroundIndependence(Metric):
    name = "background_independence"
    direction = Direction.HIGHER
    category = Category.GROUND_TRUTH
    needs = frozenset({"explain_fn", "part_masks", "background_images"})
    needs_source = _SYNTH
    description = "Map mass that stays put and on the bird when the background is replaced (FunnyBirds)"

    def __init__(self, tol: float = DEFAULT_TOL) -> None:
        if not 0 <= tol <= 1:
            raise ValueError(f"tol must be a probability change in [0, 1], got {tol}")
        self.tol = tol

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        bg = torch.as_tensor(ctx["background_images"])
        if bg.ndim != 5 or bg.shape[0] != maps.shape[0]:
            raise ValueError(f"background_images must be [B, K, 3, H, W], got {tuple(bg.shape)}")
        b, k = bg.shape[:2]
        t = torch.as_tensor(targets, dtype=torch.long).view(-1)
        t_rep = t.repeat_interleave(k)
        flat = bg.flatten(0, 1)
        bg_maps = torch.as_tensor(ctx["explain_fn"](model, flat, t_rep)).float()
        p0 = class_probabilities(model, images, t)
        pk = class_probabilities(model, flat, t_rep).view(b, k)
        moved = (pk - p0[:, None]).abs() > self.tol
        bird = torch.as_tensor(ctx["part_masks"]) > 0
        score = common_mass_on_bird(maps.repeat_interleave(k, 0), bg_maps, bird.repeat_interleave(k, 0))
        score = score.view(b, k).masked_fill(moved, float("nan")).numpy()
        out = np.full(b, np.nan)
        keep = ~moved.all(1).numpy()
        out[keep] = np.nanmean(score[keep], axis=1)
        return out


@register_metric
class TargetSensitivity(Metric):
    name = "target_sensitivity"
    direction = Direction.HIGHER
    category = Category.GROUND_TRUTH
    needs = frozenset({"explain_fn", "pair_images", "pair_masks", "pair_targets"})
    needs_source = _SYNTH
    description = "Explaining each class of a two-bird image lights up its own bird (FunnyBirds)"

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        pair = torch.as_tensor(ctx["pair_images"])
        which = torch.as_tensor(ctx["pair_masks"])
        pt = torch.as_tensor(ctx["pair_targets"], dtype=torch.long)
        if pair.shape[0] != maps.shape[0] or pt.shape != (maps.shape[0], 2):
            raise ValueError(
                f"pair_images [B, 3, H, W] and pair_targets [B, 2] must match the batch of {maps.shape[0]}"
            )
        both = torch.as_tensor(
            ctx["explain_fn"](model, torch.cat([pair, pair]), torch.cat([pt[:, 0], pt[:, 1]]))
        )
        m1, m2 = both[: pair.shape[0]], both[pair.shape[0] :]
        return (first_bird_share(m1, which) - first_bird_share(m2, which)).numpy()


def pair_partners(labels: Sequence[Any], seed: int = 0) -> list[int]:
    """For each image, the index of an image of a *different* class in the same sample (seeded), or -1."""
    lab = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x7A12])
    out = []
    for c in lab:
        others = np.flatnonzero(lab != c)
        out.append(int(others[rng.integers(len(others))]) if len(others) else -1)
    return out


def render_variants(
    dataset_dir: str | Path,
    image_paths: Sequence[str | Path],
    labels: Sequence[int],
    to_tensor: Callable[[np.ndarray], torch.Tensor],
    to_frame: Callable[[np.ndarray, int], torch.Tensor],
    size: int,
    n_backgrounds: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """The context both metrics read, for a sample of stored birds.

    ``to_tensor``: ``H x W x 3`` uint8 -> the model's normalised ``[3, H, W]``; ``to_frame(labels, n)``: an
    integer mask with labels ``1..n`` -> the input frame. Image ``i`` is paired with a bird of another class
    from the sample (:func:`pair_partners`), on the left for even ``i`` and on the right for odd ``i`` (so no
    side is favoured). Returns ``background_images`` ``[B, K, 3, H, W]``, ``pair_images``, ``pair_masks``
    (1 left bird, 2 right bird) and ``pair_targets`` ``[B, 2]`` (left class, right class); without a
    partner (one class in the sample) the pair keys are ``None`` and ``target_sensitivity`` is skipped.
    """
    from birdlens.data.synth import load_spec
    from birdlens.data.synth.variants import render_on_background, render_pair

    if n_backgrounds < 1:
        raise ValueError(f"n_backgrounds must be >= 1, got {n_backgrounds}")
    specs = [load_spec(dataset_dir, p) for p in image_paths]
    bgs = torch.stack(
        [
            torch.stack([to_tensor(render_on_background(s, size, k)[0]) for k in range(1, n_backgrounds + 1)])
            for s in specs
        ]
    )
    out: dict[str, Any] = {
        "background_images": bgs,
        "pair_images": None,
        "pair_masks": None,
        "pair_targets": None,
    }
    partners = pair_partners(labels, seed)
    if any(j < 0 for j in partners):
        return out
    imgs, masks, targets = [], [], []
    for i, j in enumerate(partners):
        left, right = (i, j) if i % 2 == 0 else (j, i)
        img, which = render_pair(specs[left], specs[right], size)
        imgs.append(to_tensor(img))
        masks.append(to_frame(which, 2))
        targets.append([int(labels[left]), int(labels[right])])
    out.update(
        pair_images=torch.stack(imgs), pair_masks=torch.stack(masks), pair_targets=torch.tensor(targets)
    )
    return out
