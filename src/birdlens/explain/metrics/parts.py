"""Ground-truth part importance on the synthetic birds (the FunnyBirds protocol, Hesse et al., ICCV 2023).

Photos never say how much the beak mattered; the synthetic birds do. For each test image the generator renders
the same bird with one part removed; the drop of the explained class's softmax probability is that part's
*true* importance for this model on this image. An explanation is then scored by

* ``part_rank_corr``: Spearman's rho between its per-part map mass and the true importances, over the parts
  visible in the image (absent parts — e.g. no crest — have an empty mask and a no-op removal; counting them
  would reward every map with free ties at zero);
* ``top_part_key``: whether the part holding the most map mass is one of the class's distinguishing parts
  (``key_parts`` in ``parts.json``: the field marks that separate it from its look-alikes);
* ``key_part_share``: the share of the map's on-bird positive mass that lies on those key parts.

Per-part mass is the **sum** of the positive map over the part's mask, not the mean per pixel: removing a part
removes all of its pixels, so the evidence a map assigns to a part is its total there, and the mean would let
a single hot pixel on the 20-pixel eye outrank a map that covers the whole wing. (FunnyBirds also sums.)
Ties (e.g. a map with no mass on the bird) are scored as a uniform random choice among the tied parts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.explain.metrics.base import Category, Direction, Metric, register_metric
from birdlens.explain.metrics.perturbation import eval_channels_last, model_device, select_logits
from birdlens.explain.metrics.ranking import spearman
from birdlens.explain.outputs import OutputSelector


def part_masses(maps: torch.Tensor, part_masks: torch.Tensor, n_parts: int) -> torch.Tensor:
    """``[B, n_parts]``: sum of the positive map over each part (mask value ``i + 1`` = part ``i``)."""
    b = maps.shape[0]
    pos = torch.nan_to_num(maps.detach().float(), nan=0.0).clamp_min(0).flatten(1)
    idx = torch.as_tensor(part_masks, device=pos.device).long().flatten(1).clamp(0, n_parts)
    out = torch.zeros(b, n_parts + 1, dtype=torch.float64, device=pos.device)
    out.scatter_add_(1, idx, pos.double())
    return out[:, 1:]


def part_areas(part_masks: torch.Tensor, n_parts: int) -> torch.Tensor:
    """``[B, n_parts]`` pixel count of each part."""
    idx = torch.as_tensor(part_masks).long().flatten(1).clamp(0, n_parts)
    out = torch.zeros(idx.shape[0], n_parts + 1, dtype=torch.float64)
    out.scatter_add_(1, idx.cpu(), torch.ones_like(idx, dtype=torch.float64).cpu())
    return out[:, 1:]


def class_probabilities(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 16,
    output: OutputSelector = None,
) -> torch.Tensor:
    """Softmax probability of ``targets`` for every image, evaluated in chunks (``[N]`` float64 on CPU)."""
    device = model_device(model)
    t = torch.as_tensor(targets, dtype=torch.long).view(-1)
    out = torch.empty(images.shape[0], dtype=torch.float64)
    with eval_channels_last(model), torch.inference_mode():  # weights re-laid outside inference mode
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            p = select_logits(model(x), output).float().softmax(-1)
            out[s : s + x.shape[0]] = p.gather(1, t[s : s + x.shape[0], None].to(device))[:, 0].double().cpu()
    return out


def true_part_importance(
    model: torch.nn.Module,
    originals: torch.Tensor,
    removed: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 16,
) -> torch.Tensor:
    """``[B, P]`` drop of the class probability when each part is removed.

    ``originals`` ``[B, 3, H, W]`` and ``removed`` ``[B, P, 3, H, W]`` (normalised): all ``B * (P + 1)``
    images go through the model in one chunked pass.
    """
    b, p = removed.shape[:2]
    allx = torch.cat([originals[:, None], removed], 1).flatten(0, 1)
    t = torch.as_tensor(targets, dtype=torch.long).view(-1).repeat_interleave(p + 1)
    probs = class_probabilities(model, allx, t, batch_size).view(b, p + 1)
    return probs[:, :1] - probs[:, 1:]


def load_key_parts(parts_json: str | Path, parts: Sequence[str]) -> dict[str, list[bool]]:
    """class name -> bool per part: is it one of the class's distinguishing (key) parts."""
    data = json.loads(Path(parts_json).read_text(encoding="utf-8"))
    rows = data["classes"] if isinstance(data, dict) and "classes" in data else data
    out: dict[str, list[bool]] = {}
    items = rows.items() if isinstance(rows, dict) else ((r["name"], r) for r in rows)
    for name, row in items:
        key = row.get("key_parts") or row.get("distinguishing") or row.get("any_parts") or []
        out[str(name)] = [p in key for p in parts]
    return out


def _present(part_masks: torch.Tensor, n_parts: int) -> torch.Tensor:
    return part_areas(part_masks, n_parts) > 0


def _tied_max_share(values: np.ndarray, present: np.ndarray, good: np.ndarray) -> float:
    if not present.any():
        return float("nan")
    v = np.where(present, values, -np.inf)
    top = present & (v == v.max())
    return float((top & good).sum() / top.sum())


@register_metric
class PartRankCorrelation(Metric):
    name = "part_rank_corr"
    direction = Direction.HIGHER
    category = Category.GROUND_TRUTH
    needs = frozenset({"part_masks", "part_importance"})
    description = "Spearman between per-part map mass and the true part importance (FunnyBirds)"

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        imp = torch.as_tensor(ctx["part_importance"]).double().cpu().numpy()
        n_parts = imp.shape[1]
        mass = part_masses(maps, ctx["part_masks"], n_parts).cpu().numpy()
        present = _present(ctx["part_masks"], n_parts).numpy()
        out = np.full(maps.shape[0], np.nan)
        for i in range(maps.shape[0]):
            keep = present[i]
            if keep.sum() < 2:
                continue
            a, t = mass[i, keep], imp[i, keep]
            if np.all(t == t[0]):
                continue  # the model ignores every part: nothing to rank against
            # a map with equal mass on every visible part carries no ranking: rho 0, not undefined
            out[i] = 0.0 if np.all(a == a[0]) else spearman(a, t)
        return out


@register_metric
class TopPartIsKey(Metric):
    name = "top_part_key"
    direction = Direction.HIGHER
    category = Category.GROUND_TRUTH
    needs = frozenset({"part_masks", "key_parts"})
    description = "Is the part with the most map mass one of the class's distinguishing parts"

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        key = np.asarray(torch.as_tensor(ctx["key_parts"]).bool().cpu())
        mass = part_masses(maps, ctx["part_masks"], key.shape[1]).cpu().numpy()
        present = _present(ctx["part_masks"], key.shape[1]).numpy()
        return np.array([_tied_max_share(mass[i], present[i], key[i]) for i in range(maps.shape[0])])


@register_metric
class KeyPartShare(Metric):
    name = "key_part_share"
    direction = Direction.HIGHER
    category = Category.GROUND_TRUTH
    needs = frozenset({"part_masks", "key_parts"})
    description = "Share of the on-bird positive map mass that lies on the class's distinguishing parts"

    def compute(self, model, images, maps, targets, **ctx):  # type: ignore[no-untyped-def]
        key = torch.as_tensor(ctx["key_parts"]).bool().cpu()
        masks = ctx["part_masks"]
        mass = part_masses(maps, masks, key.shape[1]).cpu()
        area = part_areas(masks, key.shape[1])
        total = mass.sum(1)
        share = (mass * key).sum(1) / total.clamp_min(1e-300)
        chance = (area * key).sum(1) / area.sum(1).clamp_min(1)  # no mass on the bird: uniform over it
        return torch.where(total > 0, share, chance).numpy()


def render_part_removals(
    dataset_dir: str | Path,
    image_paths: Sequence[str | Path],
    to_tensor: Callable[[np.ndarray], torch.Tensor],
    size: int,
    parts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Render every bird whole and with each part removed; returns normalised tensors and masks.

    ``to_tensor`` turns an ``H x W x 3`` uint8 array into the model's normalised ``[3, H, W]`` input.
    Returns ``{"originals": [B,3,H,W], "removed": [B,P,3,H,W], "part_masks": [B,H,W] uint8, "parts": [...]}``.
    """
    from birdlens.data.synth import PARTS, load_spec, render_bird

    parts = tuple(parts or PARTS)
    originals, removed, masks = [], [], []
    for path in image_paths:
        spec = load_spec(dataset_dir, path)
        img, mask = render_bird(spec, size)
        originals.append(to_tensor(img))
        masks.append(torch.from_numpy(np.asarray(mask, dtype=np.uint8)))
        removed.append(torch.stack([to_tensor(render_bird(spec, size, remove=p)[0]) for p in parts]))
    return {
        "originals": torch.stack(originals),
        "removed": torch.stack(removed),
        "part_masks": torch.stack(masks),
        "parts": list(parts),
    }
