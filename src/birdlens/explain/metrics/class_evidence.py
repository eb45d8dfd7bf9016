"""Class-level evidence on the synthetic birds: for each class, how much the model relies on each part, next to
what each explainer says on the same images.

The model's reliance is measured, not read off a map: every test bird of the class is re-rendered without each
part in turn (the generator can) and the drop of the class's own softmax probability is recorded
(:func:`~birdlens.explain.metrics.parts.true_part_importance`, the FunnyBirds protocol); the class's value is
the mean drop over its birds. An explainer's view of the same class is the mean share of its on-bird positive
map mass on each part (:func:`~birdlens.explain.metrics.parts.part_masses`, normalised per image). Per class,
``agreement`` is Spearman's rho between the two over the parts the class has; a content-free random baseline
goes through the same pipeline, so a number can be read against chance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.explain.metrics.parts import (
    load_key_parts,
    part_areas,
    part_masses,
    render_part_removals,
    true_part_importance,
)
from birdlens.explain.metrics.ranking import spearman

SCHEMA = "birdlens.explain-class-evidence/1"
ExplainFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def map_part_shares(maps: torch.Tensor, part_masks: torch.Tensor, n_parts: int) -> np.ndarray:
    """``[B, P]``: each part's share of the map's on-bird positive mass (by area where there is none)."""
    mass = part_masses(maps, part_masks, n_parts).cpu()
    area = part_areas(part_masks, n_parts)
    total = mass.sum(1, keepdim=True)
    by_area = area / area.sum(1, keepdim=True).clamp_min(1)
    return torch.where(total > 0, mass / total.clamp_min(1e-300), by_area).numpy()


def per_class_means(values: np.ndarray, labels: np.ndarray, present: np.ndarray) -> dict[int, np.ndarray]:
    """class index -> mean of ``values`` ``[B, P]`` over its images; NaN for parts no image of it has."""
    out = {}
    for c in sorted(set(labels.tolist())):
        rows = labels == c
        mean = values[rows].mean(0)
        out[int(c)] = np.where(present[rows].any(0), mean, np.nan)
    return out


def _agreement(drop: np.ndarray, share: np.ndarray) -> float:
    keep = np.isfinite(drop) & np.isfinite(share)
    a, b = drop[keep], share[keep]
    if keep.sum() < 2 or np.all(a == a[0]):
        return float("nan")  # nothing the model relies on to rank against
    return 0.0 if np.all(b == b[0]) else float(spearman(b, a))


def class_evidence(
    model: torch.nn.Module,
    originals: torch.Tensor,
    removed: torch.Tensor,
    part_masks: torch.Tensor,
    labels: torch.Tensor,
    explain_fns: Mapping[str, ExplainFn],
    batch_size: int = 16,
) -> dict[str, Any]:
    """Per-class part reliance and per-explainer part shares from rendered removals.

    ``originals`` ``[B, 3, H, W]``, ``removed`` ``[B, P, 3, H, W]`` (normalised model inputs), ``part_masks``
    ``[B, H, W]`` in the input frame (``i + 1`` = part ``i``), ``labels`` ``[B]`` class indices: each image is
    scored and explained for its own class. Returns per-class arrays keyed by class index.
    """
    labels = torch.as_tensor(labels, dtype=torch.long).view(-1)
    n_parts = removed.shape[1]
    drop = true_part_importance(model, originals, removed, labels, batch_size).numpy()
    present = (part_areas(part_masks, n_parts) > 0).numpy()
    lab = labels.numpy()
    out: dict[str, Any] = {
        "n": {int(c): int((lab == c).sum()) for c in sorted(set(lab.tolist()))},
        "drop": per_class_means(drop, lab, present),
        "share": {},
        "agreement": {},
    }
    for name, fn in explain_fns.items():
        maps = torch.as_tensor(fn(model, originals, labels)).float()
        share = per_class_means(map_part_shares(maps, part_masks, n_parts), lab, present)
        out["share"][name] = share
        out["agreement"][name] = {c: _agreement(out["drop"][c], share[c]) for c in share}
    return out


def _records_of_synth(manifest: Any, n_per_class: int, seed: int, split: str | None, root: Path) -> list[Any]:
    from birdlens.explain.metrics.evaluate import select_records

    if not ((root / "specs.jsonl").is_file() and (root / "parts.json").is_file()):
        raise ValueError(
            f"class evidence needs a synthetic-bird dataset (specs.jsonl and parts.json in {root}); "
            "real photos cannot be re-rendered without a part"
        )
    n_classes = len({r.label for r in (manifest.split(split) if split else manifest)})
    return select_records(manifest, n_per_class * n_classes, seed, split)


def evaluate_class_evidence(
    trained: Any,
    manifest: Any,
    methods: Sequence[str],
    n_per_class: int = 4,
    out_dir: str | Path | None = None,
    seed: int = 0,
    *,
    split: str | None = "test",
    dataset_dir: str | Path | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 16,
    baselines: Sequence[str] = ("random",),
) -> dict[str, Any]:
    """Class-level evidence of ``trained`` on ``n_per_class`` seeded test birds per class, for ``methods`` and
    the content-free ``baselines``; with ``out_dir``, writes ``class_evidence.json`` and
    ``figures/class_evidence.png``. Raises ``ValueError`` (one line) on a dataset the generator did not make."""
    from birdlens.explain.metrics.evaluate import BASELINE_SUFFIX, baseline_explain_fn, method_explain_fn
    from birdlens.explain.metrics.regions import label_mask_to_input_frame
    from birdlens.models import eval_geometry

    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    root = Path(dataset_dir) if dataset_dir is not None else Path(manifest.root)
    records = _records_of_synth(manifest, n_per_class, seed, split, root)
    info = json.loads((root / "parts.json").read_text(encoding="utf-8"))
    parts = list(info["parts"])
    size = int(getattr(trained, "image_size", trained.data_config.input_size))
    transform, geometry = trained.transform(), eval_geometry(trained.data_config, size)

    def to_tensor(arr: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(
            transform(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))
        ).float()

    rendered = render_part_removals(
        root, [r.path for r in records], to_tensor, int(info.get("size", 224)), parts
    )
    masks = torch.stack(
        [label_mask_to_input_frame(m.numpy(), len(parts), geometry) for m in rendered["part_masks"]]
    )
    cls_idx = {c: i for i, c in enumerate(trained.classes)}
    labels = torch.tensor([cls_idx[r.label] for r in records])
    params = method_params or {}
    fns: dict[str, ExplainFn] = {
        m: method_explain_fn(m, trained, params.get(m, {}), seed=seed) for m in methods
    }
    fns.update({b + BASELINE_SUFFIX: baseline_explain_fn(b, seed) for b in baselines})
    raw = class_evidence(
        trained.model.eval(), rendered["originals"], rendered["removed"], masks, labels, fns, batch_size
    )
    key = load_key_parts(root / "parts.json", parts)
    result = _jsonable_result(raw, trained.classes, parts, key, seed, split)
    if out_dir is not None:
        _write(result, Path(out_dir))
    return result


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _mean(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _jsonable_result(
    raw: Mapping[str, Any],
    classes: Sequence[str],
    parts: Sequence[str],
    key: Mapping[str, Sequence[bool]],
    seed: int,
    split: str | None,
) -> dict[str, Any]:
    """Class names for indices, None for NaN, the key parts and each class's top part (model and maps)."""
    cls = [classes[c] for c in raw["n"]]

    def rows(per: Mapping[int, np.ndarray]) -> dict[str, list[float | None]]:
        return {classes[c]: [_num(v) for v in per[c]] for c in per}

    def top(v: Sequence[float | None]) -> str | None:
        """The part with the largest value; None where no part stands out (all equal)."""
        vals = [(x, p) for x, p in zip(v, parts, strict=True) if x is not None]
        if not vals or all(x == vals[0][0] for x, _ in vals):
            return None
        return max(vals)[1]

    drop = rows(raw["drop"])
    share = {m: rows(s) for m, s in raw["share"].items()}
    agreement = {m: {classes[c]: _num(v) for c, v in a.items()} for m, a in raw["agreement"].items()}
    return {
        "schema": SCHEMA,
        "seed": seed,
        "split": split,
        "parts": list(parts),
        "classes": cls,
        "n": {classes[c]: k for c, k in raw["n"].items()},
        "key_parts": {c: [p for p, k in zip(parts, key.get(c, []), strict=False) if k] for c in cls},
        "drop": drop,
        "share": share,
        "agreement": agreement,
        "mean_agreement": {m: _mean(a.values()) for m, a in agreement.items()},
        "top_part": {
            "model": {c: top(drop[c]) for c in cls},
            **{m: {c: top(s[c]) for c in cls} for m, s in share.items()},
        },
    }


def _write(result: dict[str, Any], out: Path) -> None:
    from birdlens.utils.atomic import write_json
    from birdlens.utils.figures import figure_or_warning

    fig = figure_or_warning(lambda p: plot_class_evidence(result, p), out / "figures" / "class_evidence.png")
    result["figure"] = fig.relative_to(out).as_posix() if fig is not None else None
    write_json(out / "class_evidence.json", result)


def plot_class_evidence(result: Mapping[str, Any], path: str | Path) -> Path:
    """Classes x parts heatmaps: the model's measured reliance (probability drop), then each source's share of
    map mass; the class's key parts are outlined, parts it lacks are blank."""
    from matplotlib.patches import Rectangle

    from birdlens.explain.metrics.figures import _plt, _save
    from birdlens.utils.plaintext import plain

    plt = _plt()
    classes, parts = result["classes"], result["parts"]
    panels = [("model: drop in class probability\nwhen the part is removed", result["drop"])]
    panels += [(f"{m}: share of map mass", s) for m, s in result["share"].items()]
    w = 0.42 * len(parts) + 1.0
    fig, axes = plt.subplots(
        1, len(panels), figsize=(w * len(panels) + 2.5, 0.32 * len(classes) + 2.2), squeeze=False
    )
    for k, (ax, (title, rows)) in enumerate(zip(axes[0], panels, strict=True)):
        grid = np.array([[np.nan if v is None else v for v in rows[c]] for c in classes], dtype=float)
        im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=min(0.0, float(np.nanmin(grid, initial=0))))
        for i, c in enumerate(classes):
            for p in result["key_parts"].get(c, []):
                j = parts.index(p)
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.4))
        ax.set_xticks(range(len(parts)), parts, rotation=60, fontsize=7)
        ax.set_yticks(range(len(classes)), [plain(c)[:34] if k == 0 else "" for c in classes], fontsize=6)
        ax.set_title(plain(title), fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    fig.suptitle("Class-level evidence (white boxes: the class's key parts)", fontsize=9, y=1.03)
    return _save(fig, Path(path))
