"""Explain a set of images with a trained model: maps (.npy), overlays and panel (PNG), ``manifest.json``.

``explain_images`` is what ``birdlens explain`` and the study runner call. Every file is written atomically;
the manifest records versions, seeds, each method's full params (the chosen CAM layer included) and seconds.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from birdlens.explain.base import Explanation, check_contrastive, explainer_for
from birdlens.explain.examples import FeatureIndex, draw_examples, features_for, nearest_examples
from birdlens.explain.outputs import select_output
from birdlens.explain.shard import PartStore, Processes, Rank, run_sharded
from birdlens.explain.targets import (
    RUNNER_UP,
    check_target_options,
    class_slug,
    file_slug,
    resolve_contrast,
    runner_up,
    top_k_classes,
)
from birdlens.explain.viz import PanelRow, overlay_for, panel, save_png
from birdlens.runs.trained import head_probabilities
from birdlens.utils import console
from birdlens.utils.atomic import atomic_path, write_json
from birdlens.utils.figures import figure_or_warning

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_METHODS = ("gradcam", "lime", "shap", "ig")
PANEL_ROWS = 8  # rows per panel page: taller figures stop being readable


def collect_images(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded recursively to their image files (sorted)."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} is neither an image file nor a folder")
    if not out:
        raise FileNotFoundError(f"no images found in {[str(s) for s in sources]}")
    return out


def _load_uint8(item: Any) -> np.ndarray:
    if isinstance(item, np.ndarray):
        arr = item
    elif isinstance(item, torch.Tensor):
        arr = item.detach().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] == 3:
            arr = arr.transpose(1, 2, 0)
    else:
        from PIL import Image

        with Image.open(item) as im:
            arr = np.asarray(im.convert("RGB"))
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"images must be RGB uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


def _prepare(arr: np.ndarray, data_config: Any, image_size: int | None) -> tuple[np.ndarray, torch.Tensor]:
    """The photo as the model sees it (resize + centre crop, uint8) and the normalised tensor."""
    from birdlens.models import eval_geometry

    chw = eval_geometry(data_config, image_size)(torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1))
    photo = torch.as_tensor(chw).to(torch.uint8)
    mean = torch.tensor(data_config.mean).view(3, 1, 1)
    std = torch.tensor(data_config.std).view(3, 1, 1)
    x = (photo.float() / 255 - mean) / std
    return photo.permute(1, 2, 0).numpy(), x


def load_for_model(item: Any, trained: Any) -> tuple[np.ndarray, torch.Tensor]:
    """An image (path, uint8 array or tensor) as ``trained`` sees it: the resized, cropped uint8 photo
    ``[H, W, 3]`` and the normalised tensor ``[3, H, W]``, exactly as ``explain_images`` prepares it."""
    return _prepare(_load_uint8(item), trained.data_config, getattr(trained, "image_size", None))


def _true_label(item: Any, given: Any, classes: Sequence[str]) -> str | None:
    if given is not None:
        return classes[int(given)] if isinstance(given, (int, np.integer)) else str(given)
    if isinstance(item, (str, os.PathLike)):
        parent = Path(item).parent.name
        for c in classes:
            if c.lower() == parent.lower():
                return c
    return None


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, dict):
            out[k] = _jsonable(v)
        elif isinstance(v, (list, tuple)):
            out[k] = list(v)
        else:
            out[k] = repr(v)
    return out


def explain_images(
    trained: Any,
    images: Sequence[Any],
    methods: Sequence[str] = DEFAULT_METHODS,
    out_dir: str | os.PathLike[str] = "explain",
    labels: Sequence[Any] | None = None,
    seed: int = 0,
    n: int | None = None,
    method_params: dict[str, dict[str, Any]] | None = None,
    quiet: bool | None = None,
    force: bool = False,
    target: int | str | None = None,
    top_k: int | None = None,
    batch_images: int = 8,
    processes: Processes | None = None,
    resume: bool = False,
    contrast: int | str | None = None,
    examples: FeatureIndex | None = None,
    k_examples: int = 5,
) -> dict[str, Any]:
    """Explain ``images`` (paths, folders or uint8 ``[H, W, 3]`` arrays) with ``trained`` (a
    ``TrainedModel``: ``model``, ``classes``, ``data_config``, ``model_name``, ``cam_layer``).

    Writes ``<method>/<name>.npy`` (raw map) and ``<method>/<name>.png`` (overlay) as in the run-directory
    layout ``explain/<model>/<method>/*.npy|png``, ``panel.png`` (``panel_<k>.png``
    beyond 8 images) and ``manifest.json`` into ``out_dir``; returns the manifest. ``n``: explain a seeded
    sample of ``n`` images; ``labels``: true labels (class index or name) aligned with ``images``, else taken
    from a path's parent folder when it names a class; ``method_params``: per-method parameters, checked
    against each method's declared ranges (:class:`birdlens.explain.base.InvalidParameterError`).

    ``target``: explain this class (a name or an index) in every image instead of the predicted one (same
    layout; each record's ``target_class`` names it); ``top_k``: explain each image's ``top_k`` most likely
    classes, written as ``<method>/<name>__<class>.npy|png``, listed in the record's ``targets`` (rank, class,
    logit, probability, maps), one panel row per (image, class). A bad class or ``top_k`` raises
    :class:`birdlens.explain.targets.TargetError` before anything is written.

    ``contrast``: a class (name or index) or ``"runner-up"``: every map explains "why the explained class and
    not this one" (score ``logit[A] - logit[B]``, :func:`birdlens.explain.base.class_score`); each entry's
    ``contrast_class`` names B. Where B is the explained class itself the entry is the plain map, its
    ``contrast_class`` null (an unknown class is a ``TargetError`` before anything is written).

    ``examples``: a training-set feature index (:func:`birdlens.explain.examples.index_for_run`): each record
    gets its ``k_examples`` nearest training images from the predicted class and from the runner-up, with
    distances (``examples``), drawn in ``examples/<name>.png`` (``examples_strip``).

    ``batch_images``: images per call of the cross-image batched methods (``Explainer.batched``: their model
    batches hold rows of several images; each image's map is the one it gets alone, bit for bit or to float32
    rounding where the batch sizes change the kernels: :mod:`birdlens.explain.batching`).

    ``processes`` (:func:`birdlens.explain.shard.check_processes`): shard the ``batch_images`` groups over
    several processes with Lightning Fabric, each image in the group it has in one process, so the merged
    outputs equal a one-process run; ``resume``: keep the complete per-image parts of an interrupted run
    (``OUT/.parts``) and explain only the groups with an image missing (:mod:`birdlens.explain.shard`).
    """
    out = Path(out_dir)
    if (out / "manifest.json").exists() and not force:
        raise FileExistsError(f"{out} already holds explanations (manifest.json); pass force=True / --force")
    fixed_target = check_target_options(target, top_k, list(trained.classes))  # before anything is written
    wanted = None if contrast is None else resolve_contrast(contrast, list(trained.classes))
    if wanted is not None:  # before anything is written, not at the first image
        check_contrastive(methods)
    items, item_labels = _expand_items(images, labels, n, seed)
    trained.model.eval()
    extra = method_params or {}
    if resume or (processes is not None and processes.sharded):
        job = _Job(
            trained, items, item_labels, list(methods), out, seed, extra, fixed_target, top_k,
            contrast=wanted, examples=examples, k_examples=k_examples,
        )  # fmt: skip
        return _explain_in_parts(job, max(1, batch_images), processes or Processes(), resume, quiet)
    explainers = {m: explainer_for(trained, m, seed=seed, **extra.get(m, {})) for m in methods}
    state = _RunState(methods, fixed_target, top_k, wanted)
    state.examples, state.k_examples = examples, k_examples
    t0 = time.perf_counter()
    with console.bars(quiet, transient=False, elapsed=True, info=True) as group:
        bar = group.task("explain", total=len(items))
        size, step = getattr(trained, "image_size", None), max(1, batch_images)
        for g0 in range(0, len(items), step):
            keys = range(g0, min(len(items), g0 + step))
            loaded = {k: _prepare(_load_uint8(items[k]), trained.data_config, size) for k in keys}
            asked = {k: _asked(trained, loaded[k][1], state) for k in keys}
            done = _explain_group(explainers, loaded, asked, bar)
            for k in keys:
                _explain_one(
                    trained,
                    explainers,
                    out,
                    k,
                    items[k],
                    item_labels[k],
                    state,
                    bar,
                    loaded[k],
                    asked[k],
                    done[k],
                )
                bar.advance()
    panels = _write_panels(state.rows, out, methods)
    manifest = _manifest(trained, seed, state, panels, time.perf_counter() - t0)
    write_json(out / "manifest.json", manifest)
    return manifest


def _expand_items(
    images: Sequence[Any], labels: Sequence[Any] | None, n: int | None, seed: int
) -> tuple[list[Any], list[Any]]:
    """Folders expanded to their images (labels from the folder names later), then the seeded sample of ``n``."""
    items: list[Any] = []
    item_labels: list[Any] = []
    for i, it in enumerate(images):
        given = labels[i] if labels is not None else None
        if isinstance(it, (str, os.PathLike)) and Path(it).is_dir():
            for f in collect_images([it]):
                items.append(f)
                item_labels.append(None)
        else:
            items.append(it)
            item_labels.append(given)
    if n is not None and n < len(items):
        keep = sorted(random.Random(seed).sample(range(len(items)), n))
        items = [items[k] for k in keep]
        item_labels = [item_labels[k] for k in keep]
    return items, item_labels


class _RunState:
    """What the loop over images collects for the manifest and the panel."""

    def __init__(
        self,
        methods: Sequence[str],
        target: int | None = None,
        top_k: int | None = None,
        contrast: int | str | None = None,
    ) -> None:
        self.methods = list(methods)
        self.target, self.top_k = target, top_k  # the class asked for every image, or the top-k per image
        self.contrast = contrast  # the contrast class (or RUNNER_UP) for every map, if any
        self.examples: FeatureIndex | None = None  # the index nearest examples are searched in, if any
        self.k_examples = 5
        self.seconds: dict[str, list[float]] = {m: [] for m in methods}
        self.params: dict[str, dict[str, Any]] = {}
        self.records: list[dict[str, Any]] = []
        self.rows: list[PanelRow] = []
        self.used_names: set[str] = set()
        self.names: dict[int, str] = {}

    def unique_name(self, item: Any, k: int) -> str:
        if k in self.names:  # fixed up front when images are explained in parts, possibly on other ranks
            return self.names[k]
        is_path = isinstance(item, (str, os.PathLike))
        name = file_slug(
            f"{Path(item).parent.name}_{Path(item).stem}" if is_path else f"image_{k:04d}", "image"
        )
        while name in self.used_names:
            name += "_"
        self.used_names.add(name)
        return name


class _Asked(NamedTuple):
    """What the model makes of one image, and the classes to explain in it (None: the predicted one)."""

    logits: torch.Tensor
    probs: torch.Tensor
    targets: list[int | None]
    #: the contrast class of each target (None: the plain map)
    contrasts: list[int | None]


def _asked(trained: Any, x: torch.Tensor, state: _RunState) -> _Asked:
    """The model's logits and probabilities for one image (on the CPU), and the classes to explain in it.

    The image goes to the model's device (``--device cuda``): the photos are prepared on the CPU."""
    device = next(trained.model.parameters()).device
    with torch.inference_mode():
        logits = select_output(trained.model(x[None].to(device)), None).float().cpu()
    probs = head_probabilities(logits, bool(getattr(trained, "multi_label", False)))[0]
    targets = top_k_classes(logits[0], state.top_k) if state.top_k else [state.target]
    return _Asked(logits, probs, list(targets), [_contrast_for(logits[0], t, state) for t in targets])


def _contrast_for(logits: torch.Tensor, target: int | None, state: _RunState) -> int | None:
    """The contrast class for explaining ``target`` (None: the predicted class) in an image with ``logits``:
    the fixed one or the runner-up; None when there is no contrast or it is the explained class itself."""
    if state.contrast is None:
        return None
    explained = int(logits.argmax()) if target is None else target
    if state.contrast == RUNNER_UP:
        return int(runner_up(logits[None], torch.tensor([explained]))[0])
    return None if state.contrast == explained else int(state.contrast)


def _explain_group(
    explainers: dict[str, Any],
    loaded: dict[int, tuple[np.ndarray, torch.Tensor]],
    asked: dict[int, _Asked],
    bar: Any,
) -> dict[int, dict[int, dict[str, Explanation]]]:
    """The cross-image batched methods on a group of images, one call per method and per rank of the classes
    asked (the k-th likeliest class of every image together), split back per image: ``[image][rank][method]``."""
    done: dict[int, dict[int, dict[str, Explanation]]] = {k: {} for k in loaded}
    batched = {m: e for m, e in explainers.items() if type(e).batched}
    for rank in range(max((len(a.targets) for a in asked.values()), default=0)):
        keys = [k for k in loaded if rank < len(asked[k].targets)]
        contrastive = [k for k in keys if asked[k].contrasts[rank] is not None]
        keys = contrastive or keys  # one call is all plain or all contrastive; the rest go one by one
        if len(keys) < 2 or not batched:
            continue
        x = torch.stack([loaded[k][1] for k in keys])
        wanted = [asked[k].targets[rank] for k in keys]
        target = None if all(t is None for t in wanted) else torch.tensor(wanted)
        cst = torch.tensor([asked[k].contrasts[rank] for k in keys]) if contrastive else None
        for m, explainer in batched.items():
            bar.update(info=f"{len(keys)} images · {m}")
            exp = explainer.explain(x, target, contrast=cst)
            for i, k in enumerate(keys):
                done[k].setdefault(rank, {})[m] = exp.select(i)
    return done


def _explain_one(
    trained: Any,
    explainers: dict[str, Any],
    out: Path,
    k: int,
    item: Any,
    given_label: Any,
    state: _RunState,
    bar: Any,
    loaded: tuple[np.ndarray, torch.Tensor],
    asked: _Asked,
    done: dict[int, dict[str, Explanation]],
) -> None:
    """Every method on one image for each class asked (the predicted one by default; ``done``: the methods
    already run in a batch, by rank): maps and overlays written, its record and panel rows kept in ``state``."""
    is_path = isinstance(item, (str, os.PathLike))
    name = state.unique_name(item, k)
    photo, x = loaded
    logits, probs = asked.logits, asked.probs
    classes = list(trained.classes)
    pred = int(probs.argmax())
    true = _true_label(item, given_label, classes)
    rec: dict[str, Any] = {"source": str(item) if is_path else f"array[{k}]", "name": name}
    rec.update(predicted=classes[pred], probability=float(probs[pred]), true=true)
    entries = []
    for rank, tgt in enumerate(asked.targets, start=1):
        suffix = f"__{class_slug(classes, tgt)}" if state.top_k else ""
        ran = done.get(rank - 1, {})
        cst = asked.contrasts[rank - 1]
        entry, overlays = _explain_target(
            explainers, out, name + suffix, photo, x, (tgt, cst), state, bar, ran
        )
        entry["target_class"] = None if entry["target"] is None else classes[entry["target"]]
        if state.contrast is not None:
            entry["contrast_class"] = None if cst is None else classes[cst]
        if state.top_k:
            entry.update(rank=rank, logit=float(logits[0, tgt]), probability=float(probs[tgt]))
        entries.append(entry)
        asked_one = state.top_k or state.target is not None
        explained = f"{classes[tgt]} ({float(probs[tgt]):.0%})" if asked_one and tgt is not None else None
        state.rows.append(
            PanelRow(
                image=photo,
                overlays=overlays,
                predicted=rec["predicted"] or "?",
                probability=rec["probability"],
                true=true,
                explained=explained,
                contrast=None if cst is None else classes[cst],
            )
        )
    if state.top_k:
        rec["targets"] = entries
    else:
        rec.update(entries[0])
    if state.examples is not None:
        _add_examples(trained, out, name, photo, x, logits, state, rec)
    state.records.append(rec)


def _add_examples(
    trained: Any,
    out: Path,
    name: str,
    photo: np.ndarray,
    x: torch.Tensor,
    logits: torch.Tensor,
    state: _RunState,
    rec: dict[str, Any],
) -> None:
    """The image's nearest training examples (predicted class and runner-up) into ``rec``, and their strip."""
    assert state.examples is not None
    feats = features_for(trained, x[None])[0]
    rec["examples"] = nearest_examples(state.examples, feats, logits[0], state.k_examples)
    strip = f"examples/{name}.png"
    draw = functools.partial(draw_examples, photo, rec["examples"])
    rec["examples_strip"] = strip if figure_or_warning(draw, out / strip) is not None else None


def _explain_target(
    explainers: dict[str, Any],
    out: Path,
    name: str,
    photo: np.ndarray,
    x: torch.Tensor,
    asked: tuple[int | None, int | None],
    state: _RunState,
    bar: Any,
    done: dict[str, Explanation],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every method for one class of one image (``asked``: the target, None for the predicted class, and the
    contrast class or None), files named ``name``; ``done``: the methods already run for it in a batch."""
    target, contrast = asked
    entry: dict[str, Any] = {"maps": {}, "overlays": {}}
    overlays: dict[str, np.ndarray] = {}
    exp: Explanation | None = None
    for m, explainer in explainers.items():
        bar.update(info=f"{name} · {m}")
        exp = done[m] if m in done else explainer.explain(x[None], target, contrast=contrast)
        state.seconds[m].append(exp.seconds)
        state.params.setdefault(m, _jsonable({k: v for k, v in exp.params.items() if k != "contrast"}))
        map_path = out / m / f"{name}.npy"
        with atomic_path(map_path, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, exp.numpy()[0])
        ov = overlay_for(m, photo, exp.maps[0], exp.scores, 0)
        save_png(out / m / f"{name}.png", ov)
        overlays[m] = ov
        entry["maps"][m] = str(map_path.relative_to(out))
        entry["overlays"][m] = f"{m}/{name}.png"
        if "completeness_error" in exp.scores:
            entry[f"{m}_completeness_error"] = float(exp.scores["completeness_error"][0])
        if "weights" in exp.scores:
            entry[f"{m}_weights"] = exp.scores["weights"][0].tolist()
    entry["target"] = int(exp.target[0]) if exp is not None else target
    return entry, overlays


def _contrast_name(contrast: int | str, classes: Sequence[str]) -> str:
    return contrast if isinstance(contrast, str) else classes[contrast]


def _write_panels(rows: Sequence[PanelRow], out: Path, methods: Sequence[str]) -> list[str]:
    panels = []
    for p in range(0, len(rows), PANEL_ROWS):
        fname = "panel.png" if len(rows) <= PANEL_ROWS else f"panel_{p // PANEL_ROWS + 1:02d}.png"
        draw = functools.partial(panel, rows[p : p + PANEL_ROWS], methods=list(methods))
        if figure_or_warning(draw, out / fname) is not None:
            panels.append(fname)
    return panels


def _manifest(trained: Any, seed: int, state: _RunState, panels: list[str], seconds: float) -> dict[str, Any]:
    from birdlens.utils.env import environment_info

    manifest = {
        "environment": environment_info(seed),
        "seed": seed,
        "model": {
            "name": getattr(trained, "model_name", None),
            "cam_layer": getattr(trained, "cam_layer", None),
            "classes": list(trained.classes),
            "data_config": _jsonable(getattr(trained.data_config, "__dict__", {}) or {}),
        },
        "methods": {
            m: {
                "params": state.params.get(m, {}),
                "seconds_total": float(sum(s)),
                "seconds_per_image": float(np.mean(s)) if s else None,
            }
            for m, s in state.seconds.items()
        },
        **({"target": state.target} if state.target is not None else {}),
        **({"top_k": state.top_k} if state.top_k else {}),
        **(
            {"contrast": _contrast_name(state.contrast, trained.classes)}
            if state.contrast is not None
            else {}
        ),
        "images": state.records,
        "panels": panels,
        "seconds": seconds,
    }
    try:
        from importlib import metadata

        manifest["environment"]["packages"]["scikit-image"] = metadata.version("scikit-image")
    except Exception:
        pass
    return manifest


# ------------------------------------------------------------------------------- in parts (sharded / resumable)
class _Job:
    """What every rank of an explain run in parts needs: the same inputs in every process."""

    def __init__(
        self,
        trained: Any,
        items: list[Any],
        labels: list[Any],
        methods: list[str],
        out: Path,
        seed: int,
        params: dict[str, dict[str, Any]],
        target: int | None,
        top_k: int | None,
        *,
        contrast: int | str | None = None,
        examples: FeatureIndex | None = None,
        k_examples: int = 5,
    ) -> None:
        self.trained, self.items, self.labels, self.methods = trained, items, labels, methods
        self.out, self.seed, self.params, self.target, self.top_k = out, seed, params, target, top_k
        self.contrast = contrast  # as _RunState's: a class index, RUNNER_UP or None
        self.examples, self.k_examples = examples, k_examples
        names = _RunState(methods)
        self.names = {k: names.unique_name(it, k) for k, it in enumerate(items)}  # as one process names them

    def state(self) -> _RunState:
        state = _RunState(self.methods, self.target, self.top_k, self.contrast)
        state.names = self.names
        state.examples, state.k_examples = self.examples, self.k_examples
        return state

    def key(self, batch_images: int) -> dict[str, Any]:
        """The options a part depends on: a resume with other ones is refused."""
        return {
            "kind": "explain",
            "images": [
                str(it) if isinstance(it, (str, os.PathLike)) else f"array[{k}]"
                for k, it in enumerate(self.items)
            ],
            "labels": [None if x is None else str(x) for x in self.labels],
            "methods": self.methods,
            "params": _jsonable(self.params),
            "seed": self.seed,
            "target": self.target,
            "top_k": self.top_k,
            "contrast": self.contrast,
            "examples": self.k_examples if self.examples is not None else None,
            "batch_images": batch_images,
            "model": getattr(self.trained, "model_name", None),
            "cam_layer": getattr(self.trained, "cam_layer", None),
        }


def _part_name(k: int) -> str:
    return f"image_{k:05d}"


def _entries_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The explained classes of a record: its ``targets`` (top-k) or the record itself."""
    return list(record["targets"]) if "targets" in record else [record]


def _part_complete(store: PartStore, out: Path, k: int) -> bool:
    """Whether image ``k``'s part exists and every map and overlay it names is on disk."""
    part = store.load(_part_name(k))
    if part is None:
        return False
    files = [
        f for e in _entries_of(part["record"]) for kind in ("maps", "overlays") for f in e[kind].values()
    ]
    return all((out / f).is_file() for f in files)


def _explain_in_parts(
    job: _Job, batch_images: int, procs: Processes, resume: bool, quiet: bool | None
) -> dict[str, Any]:
    """Explain whole ``batch_images`` groups on each rank (one part file per image), merge on rank 0."""
    groups = [
        range(g0, min(len(job.items), g0 + batch_images)) for g0 in range(0, len(job.items), batch_images)
    ]
    store = PartStore(job.out, job.key(batch_images))
    t0 = time.perf_counter()

    def work(me: Rank) -> None:
        if me.device is not None:
            job.trained.model.to(me.device)
        explainers = {
            m: explainer_for(job.trained, m, seed=job.seed, **job.params.get(m, {})) for m in job.methods
        }
        mine = [
            g
            for g in me.units(len(groups), "A smaller --batch-images gives more groups.")
            if not (resume and all(_part_complete(store, job.out, k) for k in groups[g]))
        ]
        with console.bars(quiet or not me.main, transient=False, elapsed=True, info=True) as bars:
            bar = bars.task("explain", total=sum(len(groups[g]) for g in mine))
            for g in mine:
                _explain_group_parts(job, explainers, groups[g], store, bar)

    def merge() -> dict[str, Any]:
        manifest = _merge_parts(job, store, time.perf_counter() - t0)
        store.remove()
        return manifest

    def reload() -> dict[str, Any]:
        import json

        return json.loads((job.out / "manifest.json").read_text(encoding="utf-8"))

    return run_sharded(procs, store, resume, work, merge, reload)


def _explain_group_parts(
    job: _Job, explainers: dict[str, Any], keys: range, store: PartStore, bar: Any
) -> None:
    """One group as the one-process loop explains it; each image's record, seconds, params and panel rows
    written as its part once its maps and overlays are on disk."""
    trained, state = job.trained, job.state()
    size = getattr(trained, "image_size", None)
    loaded = {k: _prepare(_load_uint8(job.items[k]), trained.data_config, size) for k in keys}
    asked = {k: _asked(trained, loaded[k][1], state) for k in keys}
    done = _explain_group(explainers, loaded, asked, bar)
    for k in keys:
        rows, seconds = len(state.rows), {m: len(s) for m, s in state.seconds.items()}
        item, label = job.items[k], job.labels[k]
        _explain_one(trained, explainers, job.out, k, item, label, state, bar, loaded[k], asked[k], done[k])
        part = {
            "record": state.records[-1],
            "seconds": {m: s[seconds[m] :] for m, s in state.seconds.items()},
            "params": state.params,
            "rows": [
                {
                    "predicted": r.predicted,
                    "probability": r.probability,
                    "true": r.true,
                    "explained": r.explained,
                    "contrast": r.contrast,
                }
                for r in state.rows[rows:]
            ],
        }
        store.save(_part_name(k), part)
        bar.advance()


def _merge_parts(job: _Job, store: PartStore, seconds: float) -> dict[str, Any]:
    """Rank 0: the parts in image order into the panel and the manifest, as one process writes them."""
    from PIL import Image

    trained, state = job.trained, job.state()
    size = getattr(trained, "image_size", None)
    for k, item in enumerate(job.items):
        part = store.load(_part_name(k))
        if part is None:
            raise RuntimeError(f"no part for image {k} ({item}) in {store.dir}")
        state.records.append(part["record"])
        for m, s in part["seconds"].items():
            state.seconds[m].extend(s)
        for m, p in part["params"].items():
            state.params.setdefault(m, p)
        photo = _prepare(_load_uint8(item), trained.data_config, size)[0]
        for row, entry in zip(part["rows"], _entries_of(part["record"]), strict=True):
            overlays = {}
            for m, f in entry["overlays"].items():
                with Image.open(job.out / f) as im:
                    overlays[m] = np.asarray(im.convert("RGB"))
            state.rows.append(PanelRow(image=photo, overlays=overlays, **row))
    panels = _write_panels(state.rows, job.out, job.methods)
    manifest = _manifest(trained, job.seed, state, panels, seconds)
    write_json(job.out / "manifest.json", manifest)
    return manifest
