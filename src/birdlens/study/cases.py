"""The report's cases: what the model confuses, why, and what it has seen that looks alike.

For each most-confused pair (true T, predicted P) of the evaluated split: the test image of T the model
gives P most confidently, with its plain Grad-CAM for P and the contrastive one for "P and not T" (the logit
difference, :func:`birdlens.explain.base.class_score`): the plain map shows what the model looks at, the
contrastive one what tips it towards the wrong species. For it and for the highest-loss images: the nearest
training images from the predicted class and the runner-up (:mod:`birdlens.explain.examples`). And each
class's prototype, its medoid in the model's feature space, for the data section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from birdlens.study.stages import StageContext

__all__ = ["cases_stage"]

#: test images of the true class scored per model call when looking for a pair's most confident mistake
_BATCH = 16
#: prototypes per figure row
_PER_ROW = 8


def cases_stage(ctx: StageContext) -> dict[str, Any]:
    """Pairs, top losses and prototypes of one evaluated model (figures in the stage folder)."""
    from birdlens.data.manifest import Manifest
    from birdlens.explain.examples import index_for_run
    from birdlens.runs import layout
    from birdlens.runs.trained import load_trained
    from birdlens.utils.device import resolve_device

    (evaluated,) = [k for k in ctx.inputs if k.startswith("evaluate:")]
    metrics, run = ctx.inputs[evaluated]["metrics"], Path(ctx.inputs[evaluated]["run"])
    trained = load_trained(run, device=resolve_device(ctx.config.get("device", "auto")))
    index = index_for_run(trained, run, quiet=ctx.quiet)
    split = Manifest.from_csv(run / layout.MANIFEST).split(ctx.config["split"])
    c = ctx.config
    pairs = []
    for i, pair in enumerate((metrics.get("most_confused") or [])[: c["pairs"]]):
        case = _pair_case(trained, index, split, pair, ctx.dir, i, c["k"])
        if case is not None:
            pairs.append(case)
    losses = [
        _loss_case(trained, index, rec, ctx.dir, i, c["k"])
        for i, rec in enumerate((metrics.get("top_losses") or [])[: c["losses"]])
    ]
    return {"pairs": pairs, "losses": losses, "prototypes": _prototypes(index, ctx.dir)}


def _pair_case(
    trained: Any, index: Any, split: Any, pair: dict[str, Any], out: Path, i: int, k: int
) -> dict[str, Any] | None:
    """The pair's most confident mistake: plain and contrastive Grad-CAM side by side, and its neighbours."""
    from birdlens.explain.base import explainer_for
    from birdlens.explain.examples import draw_examples, features_for, nearest_examples
    from birdlens.explain.run import load_for_model
    from birdlens.explain.viz import image_strips, overlay_for
    from birdlens.utils.figures import figure_or_warning

    classes = list(trained.classes)
    t, p = classes.index(pair["true"]), classes.index(pair["pred"])
    found = _most_confident_mistake(trained, [r.path for r in split if r.label == pair["true"]], p)
    if found is None:
        return None
    path, logits = found
    photo, x = load_for_model(path, trained)
    gradcam = explainer_for(trained, "gradcam")
    plain, contrast = gradcam.explain(x[None], p), gradcam.explain(x[None], p, contrast=t)
    cells = [
        (photo, "photo"),
        (overlay_for("gradcam", photo, plain.maps[0], plain.scores, 0), f"Grad-CAM: {pair['pred']}"),
        (
            overlay_for("gradcam", photo, contrast.maps[0], contrast.scores, 0),
            f"{pair['pred']} and not {pair['true']}",
        ),
    ]
    row = [(f"true {pair['true']}\npredicted {pair['pred']}", cells)]
    figure = figure_or_warning(lambda f: image_strips(row, f, cell_inches=2.2), out / f"pair_{i:02d}.png")
    examples = nearest_examples(index, features_for(trained, x[None])[0], logits, k)
    strip = figure_or_warning(lambda f: draw_examples(photo, examples, f), out / f"pair_{i:02d}_examples.png")
    return {
        **pair,
        "path": str(path),
        "logit_difference": float(contrast.scores["logit_difference"][0]),
        "figure": None if figure is None else str(figure),
        "examples": examples,
        "examples_figure": None if strip is None else str(strip),
    }


def _most_confident_mistake(trained: Any, paths: list[Path], pred: int) -> tuple[Path, torch.Tensor] | None:
    """Among ``paths`` (images of the true class), the one predicted ``pred`` with the highest probability for
    it, and its logits; None when the model predicts ``pred`` for none of them."""
    from birdlens.explain.run import load_for_model
    from birdlens.runs.trained import head_probabilities

    device = next(trained.model.parameters()).device
    best: tuple[float, Path, torch.Tensor] | None = None
    for s in range(0, len(paths), _BATCH):
        chunk = paths[s : s + _BATCH]
        x = torch.stack([load_for_model(p, trained)[1] for p in chunk])
        with torch.inference_mode():
            logits = trained.model(x.to(device)).float().cpu()
        probs = head_probabilities(logits, trained.multi_label)
        for j, path in enumerate(chunk):
            if int(probs[j].argmax()) == pred and (best is None or float(probs[j, pred]) > best[0]):
                best = (float(probs[j, pred]), path, logits[j])
    return None if best is None else (best[1], best[2])


def _loss_case(trained: Any, index: Any, rec: dict[str, Any], out: Path, i: int, k: int) -> dict[str, Any]:
    """A highest-loss image with its nearest training images (predicted class and runner-up)."""
    from birdlens.explain.examples import draw_examples, features_for, nearest_examples
    from birdlens.explain.run import load_for_model
    from birdlens.utils.figures import figure_or_warning

    photo, x = load_for_model(rec["path"], trained)
    device = next(trained.model.parameters()).device
    with torch.inference_mode():
        logits = trained.model(x[None].to(device)).float().cpu()[0]
    examples = nearest_examples(index, features_for(trained, x[None])[0], logits, k)
    strip = figure_or_warning(lambda f: draw_examples(photo, examples, f), out / f"loss_{i:02d}_examples.png")
    return {**rec, "examples": examples, "examples_figure": None if strip is None else str(strip)}


def _prototypes(index: Any, out: Path) -> dict[str, Any]:
    """Each class's medoid training image, drawn in rows of :data:`_PER_ROW`."""
    from birdlens.explain.examples import thumbnail
    from birdlens.explain.viz import image_strips
    from birdlens.utils.figures import figure_or_warning

    medoids = index.medoids()
    by_class = {index.classes[c]: index.paths[r] for c, r in sorted(medoids.items())}
    cells = [(thumbnail(p, 96), c) for c, p in by_class.items()]
    rows = [("", cells[s : s + _PER_ROW]) for s in range(0, len(cells), _PER_ROW)]
    figure = figure_or_warning(lambda f: image_strips(rows, f), out / "prototypes.png")
    return {"classes": by_class, "metric": index.metric, "figure": None if figure is None else str(figure)}
