"""``evaluate_explanations``: explain a seeded sample of images with each method and score every applicable
metric; what ``birdlens explain-eval`` and the study runner call.

What applies depends on the data, never on a flag:

* always: deletion/insertion (faithfulness), the sanity check, and stability for seeded stochastic methods;
* localisation: for images with a mask (the synthetic birds: the bird silhouette) or a box (the manifest's
  box, or ``boxes=`` a CUB ``bounding_boxes.txt`` / ``path,x,y,w,h`` CSV);
* ground-truth part importance, background independence and target sensitivity: for a synthetic-bird
  dataset (``specs.jsonl`` + ``parts.json`` beside it; the generator re-renders each bird).
* the metrics named in ``metrics`` (:mod:`birdlens.explain.metrics.selection`: ROAD, infidelity,
  sensitivity, Lipschitz, random logit, sparseness, complexity; the free ones by default).

Every method is explained for the **same target per image**: the model's predicted class by default
(``target="pred"``, as RISE: the question is why the model decided what it decided), or the true label
(``target="label"``). Two content-free baselines, ``random (baseline)`` and ``centre (baseline)``, go through
the same pipeline so every number can be read against chance.
"""

from __future__ import annotations

import functools
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from birdlens.explain.metrics import budgets
from birdlens.explain.metrics.base import get_metric, metric_info
from birdlens.explain.metrics.baselines import BASELINES, centre_maps, random_maps
from birdlens.explain.metrics.evaluation_count import EvaluationCounter
from birdlens.explain.metrics.localisation import energy_share, pointing_game
from birdlens.explain.metrics.parts import load_key_parts, true_part_importance
from birdlens.explain.metrics.perturbation import (
    Endpoints,
    endpoint_probs,
    perturbation_curves,
)
from birdlens.explain.metrics.regions import (
    box_image,
    label_mask_to_input_frame,
    match_box,
    read_boxes,
    to_input_frame,
)
from birdlens.explain.metrics.sanity import FAIL_THRESHOLD, cascading_randomisation, sanity_verdict
from birdlens.explain.metrics.selection import DEFAULT_METRICS, build_selected, check_needs, score_selected
from birdlens.explain.metrics.stability import seed_stability
from birdlens.explain.metrics.summary import best_vs_runner_up, rank_methods, summarise
from birdlens.explain.shard import Processes
from birdlens.utils.console import bars

SCHEMA = "birdlens.explain-eval/1"
BASELINE_SUFFIX = " (baseline)"
ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EvalSettings:
    """Knobs of one evaluation (all recorded in ``results.json``)."""

    # deletion/insertion resolution of both curves (RISE: DEFAULT_STEPS = 224); None: each curve's default,
    # budgets.DELETION_STEPS / INSERTION_STEPS
    n_steps: int | None = None
    batch_size: int = 16  # model evaluations per forward in deletion/insertion
    explain_batch: int = 8  # images per explainer call
    target: str = "pred"  # "pred" or "label"
    sanity_n: int = budgets.SANITY_N  # images in the sanity check
    sanity_points: int | None = budgets.SANITY_POINTS  # explained cascade points (None: every stage)
    stability_n: int = budgets.STABILITY_N  # images in the stability check
    stability_seeds: tuple[int, ...] = budgets.STABILITY_SEEDS
    stability_fraction: float = 0.1
    baselines: tuple[str, ...] = BASELINES
    n_resamples: int = 2000
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: bool = True
    fold_bn: bool = True  # no-grad scoring passes use a BatchNorm-folded copy (birdlens.models.fold)
    precision: str = "fp32"  # autocast of the deletion/insertion forwards (birdlens.utils.device)
    n_backgrounds: int = 1  # replacement backgrounds per image in background_independence
    variants_n: int = 8  # images scored by background_independence and target_sensitivity (they re-explain)
    # the selectable metrics to score (birdlens.explain.metrics.selection), their options, e.g.
    # {"road_morf": {"noise": 0}}, and the images for those that re-explain (sensitivity, Lipschitz, random logit)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics_n: int = 8


# ------------------------------------------------------------------------------------------- the sample
def select_records(manifest: Any, n: int, seed: int = 0, split: str | None = "test") -> list[Any]:
    """A seeded, class-balanced sample: shuffle each class, then take classes round-robin until ``n``."""
    recs = list(manifest.split(split).records if split else manifest.records)
    if not recs:
        raise ValueError(f"no images in split {split!r}")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Any]] = {}
    for r in recs:
        by_class.setdefault(r.label, []).append(r)
    queues = []
    for label in sorted(by_class):
        items = by_class[label]
        queues.append([items[i] for i in rng.permutation(len(items))])
    out: list[Any] = []
    depth = 0
    while len(out) < min(n, len(recs)):
        for q in queues:
            if depth < len(q) and len(out) < n:
                out.append(q[depth])
        depth += 1
    return out


def _load_images(
    records: Sequence[Any], transform: Callable[[Any], torch.Tensor]
) -> tuple[torch.Tensor, list]:
    from birdlens.data.images import load_rgb

    tensors, sizes = [], []
    for r in records:
        img = load_rgb(r.path)
        sizes.append(img.size)
        tensors.append(torch.as_tensor(transform(img)).float())
    return torch.stack(tensors), sizes


def _regions(
    records: Sequence[Any],
    sizes: Sequence[tuple[int, int]],
    geometry: Callable[..., Any],
    boxes: Mapping[str, Any] | None,
    root: Path | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, str | None]:
    """Object regions ``[n, H, W]`` (all False where an image has none), which images have one, the source."""
    from PIL import Image

    out, kinds = [], set()
    for r, size in zip(records, sizes, strict=True):
        reg = None
        if getattr(r, "mask", None) is not None and Path(r.mask).is_file():
            with Image.open(r.mask) as m:
                reg = to_input_frame(np.asarray(m.convert("L")) > 0, geometry)
            kinds.add("mask")
        else:
            box = getattr(r, "box", None)
            if box is None and boxes is not None:
                box = match_box(boxes, r.path, root)
            if box is not None:
                reg = to_input_frame(box_image(box, size), geometry)
                kinds.add("box")
        out.append(reg)
    if all(x is None for x in out):
        return None, None, None
    shape = next(x for x in out if x is not None).shape
    stacked = torch.stack([x if x is not None else torch.zeros(shape, dtype=torch.bool) for x in out])
    has = torch.tensor([x is not None for x in out])
    return stacked, has, "+".join(sorted(kinds))


# ------------------------------------------------------------------------------------------- explainers
def method_explain_fn(
    method: str,
    trained: Any,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    batch: int = 8,
) -> ExplainFn:
    """``(model, images, targets) -> maps`` for a registered explanation method (built by
    :func:`birdlens.explain.base.explainer_for`, so ``params`` are checked against the method's ranges)."""
    from birdlens.explain.base import explainer_for

    overrides = dict(params or {})

    def fn(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        explainer = explainer_for(trained, method, model=model, seed=seed, **overrides)
        maps = [
            explainer.explain(images[s : s + batch], target=targets[s : s + batch]).maps
            for s in range(0, images.shape[0], batch)
        ]
        return torch.cat(maps).float()

    return fn


def _digest(image: torch.Tensor) -> int:
    return zlib.crc32(image.detach().cpu().contiguous().numpy().tobytes())


def baseline_explain_fn(name: str, seed: int = 0) -> ExplainFn:
    """A content-free baseline as an explain function (seeded per image content: batch-size invariant)."""

    def fn(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        if name == "centre":
            return centre_maps((b, h, w))
        if name == "random":
            return torch.cat([random_maps((1, h, w), seed, _digest(images[i]) % 2**31) for i in range(b)])
        raise ValueError(f"unknown baseline {name!r}")

    return fn


# ------------------------------------------------------------------------------------------- main entry
def evaluate_explanations(
    trained: Any,
    manifest: Any,
    methods: Sequence[str],
    n: int = 50,
    out_dir: str | Path | None = None,
    seed: int = 0,
    *,
    split: str | None = "test",
    boxes: str | Path | Mapping[str, Any] | None = None,
    dataset_dir: str | Path | None = None,
    settings: EvalSettings | None = None,
    quiet: bool | None = None,
    print_table: bool = False,
    processes: Processes | None = None,
    resume: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Score ``methods`` (plus the baselines) on ``n`` images of ``split``; returns the results dict and, with
    ``out_dir``, writes ``results.json``, ``per_image.json`` and ``figures/*.png`` there.

    ``trained``: a :class:`birdlens.runs.trained.TrainedModel` (model, classes, data_config, model_name,
    cam_layer). ``manifest``: the dataset's Manifest. ``overrides`` set :class:`EvalSettings` fields.
    ``processes`` / ``resume``: score whole image blocks on several processes, or resumably, then merge
    (:mod:`birdlens.explain.metrics.sharded`: the results equal a one-process run).
    """
    from birdlens.runs.trained import refuse_multi_label

    refuse_multi_label(trained, "explain-eval")
    cfg = _settings(settings, overrides)
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    methods = _known_methods(methods, cfg.method_params)
    if resume or (processes is not None and processes.sharded):
        from birdlens.explain.metrics.sharded import Job, evaluate_in_parts

        job = Job(trained, manifest, methods, n, seed, split, boxes, dataset_dir, cfg, t_start)
        return evaluate_in_parts(job, out_dir, processes or Processes(), resume, quiet, print_table)
    counter = EvaluationCounter()
    with counter.watching(trained.model):
        sample, truth = sample_and_truth(trained, manifest, n, seed, split, dataset_dir, boxes, cfg, counter)
        entries = _entries(methods, trained, cfg, seed)
        scored = _Scored(sanity_n=min(cfg.sanity_n, sample.n), counter=counter)
        with bars(quiet) as prog:
            for name, fn, seeded in entries:
                _score_method(name, fn, seeded, sample, truth, cfg, seed, prog, scored)
    results = _results(trained, sample, truth, cfg, seed, split, scored)
    results["evaluations"] = counter.as_dict()
    results["seconds_total"] = time.perf_counter() - t_start
    if out_dir is not None:
        _write(results, scored.per_image, Path(out_dir), cfg.figures)
    if print_table:
        from birdlens.explain.metrics.table import print_results

        print_results(results)
    return results


def sample_and_truth(
    trained: Any,
    manifest: Any,
    n: int,
    seed: int,
    split: str | None,
    dataset_dir: Any,
    boxes: Any,
    cfg: EvalSettings,
    counter: EvaluationCounter,
) -> tuple[_Sample, _Truth]:
    """The sample and its ground truth, counted in the phases ``sample`` and ``parts`` of ``counter`` (which
    must be watching the model), and the selected metrics' needs checked against that truth: every rank of a
    sharded run prepares the same this way."""
    with counter.phase("sample"):
        sample = _load_sample(trained, manifest, n, seed, split, dataset_dir, cfg)
    counter.attach(sample.scorer)
    with counter.phase("parts"):
        truth = _ground_truth(sample, trained, boxes, cfg)
    check_needs(cfg.metrics, _available_context(truth))
    return sample, truth


def _settings(settings: EvalSettings | None, overrides: Mapping[str, Any]) -> EvalSettings:
    cfg = settings or EvalSettings()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise TypeError(f"unknown setting {k!r}")
        setattr(cfg, k, v)
    if cfg.target not in ("pred", "label"):
        raise ValueError("target must be 'pred' or 'label'")
    cfg.metrics = tuple(m.strip() for m in cfg.metrics if m.strip())
    build_selected(cfg.metrics, cfg.metric_params)  # bad names or options fail here, before any image loads
    if isinstance(cfg.metrics_n, bool) or not isinstance(cfg.metrics_n, int) or cfg.metrics_n < 0:
        raise ValueError(f"metrics_n must be an integer >= 0, got {cfg.metrics_n!r}")
    return cfg


def _known_methods(methods: Sequence[str], method_params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The names given, stripped; an unknown or refused method, or a parameter outside its declared range,
    raises before any work (not as one method's error in the results)."""
    from birdlens.explain.base import method_class, validate_params

    names = [m.strip() for m in methods if m.strip()]
    for m in names:
        method_class(m)
    for m, params in method_params.items():
        validate_params(m, dict(params))
    return names


@dataclass
class _Sample:
    """The evaluated images and what the model makes of them."""

    model: nn.Module
    records: list[Any]
    root: Path | None
    size: int
    transform: Callable[[Any], torch.Tensor]
    geometry: Callable[..., Any]
    images: torch.Tensor
    orig_sizes: list
    labels: torch.Tensor
    scorer: nn.Module
    probs: torch.Tensor
    preds: torch.Tensor
    targets: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


def _load_sample(
    trained: Any,
    manifest: Any,
    n: int,
    seed: int,
    split: str | None,
    dataset_dir: str | Path | None,
    cfg: EvalSettings,
) -> _Sample:
    from birdlens.models import eval_geometry

    model = trained.model.eval()
    records = select_records(manifest, n, seed, split)
    root = Path(dataset_dir) if dataset_dir is not None else (Path(manifest.root) if manifest.root else None)
    size = int(getattr(trained, "image_size", trained.data_config.input_size))
    transform = trained.transform()
    geometry = eval_geometry(trained.data_config, size)
    images, orig_sizes = _load_images(records, transform)
    cls_idx = {c: i for i, c in enumerate(trained.classes)}
    missing = sorted({r.label for r in records} - set(cls_idx))
    if missing:
        raise ValueError(f"labels {missing[:5]} are not classes of the model ({len(cls_idx)} classes)")
    labels = torch.tensor([cls_idx[r.label] for r in records])
    # the thousands of no-grad scoring passes run on a verified BatchNorm-folded copy (same outputs, faster)
    scorer = _scoring_model(model, images) if cfg.fold_bn else model
    probs = _all_probs(scorer, images, cfg.batch_size)
    preds = probs.argmax(1)
    targets = preds if cfg.target == "pred" else labels
    return _Sample(
        model,
        records,
        root,
        size,
        transform,
        geometry,
        images,
        orig_sizes,
        labels,
        scorer,
        probs,
        preds,
        targets,
    )


@dataclass
class _Truth:
    """Ground truth the dataset offers: object regions and, for synthetic birds, the part context."""

    regions: torch.Tensor | None
    has_region: torch.Tensor | None
    region_source: str | None
    part_ctx: dict[str, Any] | None
    render_gap: float | None


def _ground_truth(sample: _Sample, trained: Any, boxes: Any, cfg: EvalSettings) -> _Truth:
    box_map = read_boxes(boxes) if isinstance(boxes, (str, Path)) else boxes
    regions, has_region, source = _regions(
        sample.records, sample.orig_sizes, sample.geometry, box_map, sample.root
    )
    root = sample.root
    part_ctx = (
        _part_context(
            sample.scorer,
            sample.records,
            root,
            sample.targets,
            sample.transform,
            sample.geometry,
            trained.classes,
            cfg,
        )
        if root is not None and (root / "specs.jsonl").is_file()
        else None
    )
    render_gap = None
    if part_ctx is not None:
        # the re-rendered whole bird must be the image the model saw on disk, or the "drop" would be measured
        # from the wrong starting point
        render_gap = float((part_ctx.pop("originals") - sample.images).abs().max())
        if render_gap > RENDER_TOLERANCE:  # the disk images are not the generator's birds (a planted cue, an
            part_ctx = None  # edit): part and variant truth would be measured from other images, so none
        else:
            part_ctx.update(_variant_context(sample, root, cfg))  # type: ignore[arg-type]
    return _Truth(regions, has_region, source, part_ctx, render_gap)


Entry = tuple[str, ExplainFn, Callable[[int], ExplainFn] | None]

#: largest |re-rendered bird - image on disk| (normalised input units) for the synthetic part ground truth to
#: apply; clean synthetic datasets re-render to < 1e-5
RENDER_TOLERANCE = 1e-3


def _entries(methods: Sequence[str], trained: Any, cfg: EvalSettings, seed: int) -> list[Entry]:
    """``(name, explain fn, seeded fn factory or None)`` per method and baseline; stochastic methods (a class
    fact) get the seeded factory the stability metric needs."""
    from birdlens.explain.base import method_class

    entries: list[Entry] = []
    for m in methods:
        params = cfg.method_params.get(m, {})
        seeded = (
            (lambda s, m=m, p=params: method_explain_fn(m, trained, p, seed=s, batch=cfg.explain_batch))
            if method_class(m).stochastic
            else None
        )
        entries.append(
            (
                m,
                method_explain_fn(m, trained, params, seed=seed if seeded else None, batch=cfg.explain_batch),
                seeded,
            )
        )
    for bl in cfg.baselines:
        seeded = (lambda s, bl=bl: baseline_explain_fn(bl, s)) if bl == "random" else None
        entries.append((bl + BASELINE_SUFFIX, baseline_explain_fn(bl, seed), seeded))
    return entries


@dataclass
class _Scored:
    """What scoring every method collects."""

    sanity_n: int
    counter: EvaluationCounter = field(default_factory=EvaluationCounter)
    per_image: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    probs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # per-image curves, for merging
    endpoints: Endpoints | None = None  # the curves' map-independent ends, shared by every method

    def __post_init__(self) -> None:
        self.sanity = {"threshold": FAIL_THRESHOLD, "n": self.sanity_n, "methods": {}, "verdicts": {}}


def _score_method(
    name: str,
    fn: ExplainFn,
    seeded: Callable[[int], ExplainFn] | None,
    sample: _Sample,
    truth: _Truth,
    cfg: EvalSettings,
    seed: int,
    prog: Any,
    scored: _Scored,
) -> None:
    """Explain the sample with one method and score every applicable metric into ``scored``."""
    phase = functools.partial(scored.counter.phase, method=name)
    t0 = time.perf_counter()
    adv = prog.task(f"explain {name}", 1)
    try:
        with phase("explain"):
            maps = fn(sample.model, sample.images, sample.targets)
    except Exception as e:  # one broken method must not sink the others; the report says why
        scored.errors[name] = f"{type(e).__name__}: {e}"
        return
    adv(1)
    scored.seconds[name] = (time.perf_counter() - t0) / sample.n
    with phase("deletion/insertion"):
        vals = _faithfulness(name, maps, sample, cfg, prog, scored)
    vals.update(_localisation(maps, sample, truth))
    if truth.part_ctx is not None:
        with phase("parts"):
            for metric in ("part_rank_corr", "top_part_key", "key_part_share"):
                vals[metric] = get_metric(metric)(
                    sample.model, sample.images, maps, sample.targets, **truth.part_ctx
                )
        with phase("variants"):
            vals.update(_variant_metrics(fn, maps, sample, truth.part_ctx))
    with phase("sanity"):
        vals.update(_sanity(name, fn, maps, sample, cfg, seed, prog, scored))
    with phase("stability"):
        vals.update(_stability(name, seeded, maps, sample, cfg, seed, prog))
    with phase("selected metrics"):
        vals.update(_selected(name, fn, maps, sample, cfg, prog))
    scored.per_image[name] = {key: np.asarray(v, dtype=float).tolist() for key, v in vals.items()}


def _faithfulness(
    name: str, maps: torch.Tensor, sample: _Sample, cfg: EvalSettings, prog: Any, scored: _Scored
) -> dict[str, np.ndarray]:
    """Deletion and insertion AUCs per image (the mean curves go to ``scored.curves``); the curves' ends,
    which no map changes, are evaluated once for all methods."""
    h, w = sample.images.shape[2:]
    if scored.endpoints is None:
        with scored.counter.phase("deletion/insertion"):
            scored.endpoints = endpoint_probs(
                sample.scorer,
                sample.images,
                sample.targets,
                batch_size=cfg.batch_size,
                precision=cfg.precision,
            )
    cur = {}
    for mode in ("deletion", "insertion"):
        steps = curve_steps(cfg, mode)
        n_pairs = sample.n * (max(1, min(steps, h * w)) - 1)
        cur.update(
            perturbation_curves(
                sample.scorer,
                sample.images,
                maps,
                sample.targets,
                modes=(mode,),
                n_steps=steps,
                batch_size=cfg.batch_size,
                progress=prog.task(f"{mode} {name}", n_pairs),
                precision=cfg.precision,
                endpoints=scored.endpoints,
            )
        )
    vals: dict[str, np.ndarray] = {}
    scored.curves[name] = {}
    for mode, c in cur.items():
        vals[mode] = c.auc
        scored.probs.setdefault(name, {})[mode] = c.probs
        scored.curves[name][mode] = {
            "fractions": c.fractions.tolist(),
            "mean": c.probs.mean(0).tolist(),
            "auc": float(c.auc.mean()),
        }
    return vals


def curve_steps(cfg: EvalSettings, mode: str) -> int:
    """Steps of one curve: ``n_steps`` for both when given, else the curve's measured default."""
    if cfg.n_steps is not None:
        return int(cfg.n_steps)
    return budgets.DELETION_STEPS if mode == "deletion" else budgets.INSERTION_STEPS


def _localisation(maps: torch.Tensor, sample: _Sample, truth: _Truth) -> dict[str, np.ndarray]:
    """Pointing game and energy inside the object, for the images that have a region (NaN elsewhere)."""
    if truth.regions is None or truth.has_region is None:
        return {}
    has, regions = truth.has_region, truth.regions
    pg = np.full(sample.n, np.nan)
    en = np.full(sample.n, np.nan)
    pg[has.numpy()] = pointing_game(maps[has], regions[has]).numpy()
    en[has.numpy()] = energy_share(maps[has], regions[has]).numpy()
    return {"pointing_game": pg, "energy_inside": en}


def _sanity(
    name: str,
    fn: ExplainFn,
    maps: torch.Tensor,
    sample: _Sample,
    cfg: EvalSettings,
    seed: int,
    prog: Any,
    scored: _Scored,
) -> dict[str, np.ndarray]:
    """The cascading-randomisation check on the first ``sanity_n`` images."""
    k = min(cfg.sanity_n, sample.n)
    if k <= 0:
        return {}
    adv = prog.task(f"sanity check {name}", 1)
    res = cascading_randomisation(
        sample.model, fn, sample.images[:k], sample.targets[:k], maps[:k], seed=seed, points=cfg.sanity_points
    )
    adv(1)
    scored.sanity["methods"][name] = {
        "stages": res["stages"],
        "corr": res["corr"].tolist(),
        "mean_abs": np.nanmean(np.abs(res["corr"]), axis=1).tolist(),
    }
    return {"sanity_rank_corr": np.concatenate([res["final"], np.full(sample.n - k, np.nan)])}


def _stability(
    name: str,
    seeded: Callable[[int], ExplainFn] | None,
    maps: torch.Tensor,
    sample: _Sample,
    cfg: EvalSettings,
    seed: int,
    prog: Any,
) -> dict[str, np.ndarray]:
    """Agreement of the top pixels across seeds, for stochastic methods. The run with the evaluation's own
    seed is the one already explained (``maps``, from the same seeded function), so it is not run again."""
    if seeded is None or cfg.stability_n <= 0:
        return {}
    k = min(cfg.stability_n, sample.n)
    adv = prog.task(f"stability {name}", len(cfg.stability_seeds))
    runs = []
    for s in cfg.stability_seeds:
        if s == seed:
            runs.append(maps[:k])
        else:
            runs.append(seeded(s)(sample.model, sample.images[:k], sample.targets[:k]))
        adv(1)
    return {
        "stability": np.concatenate(
            [seed_stability(runs, cfg.stability_fraction), np.full(sample.n - k, np.nan)]
        )
    }


def _available_context(truth: _Truth) -> set[str]:
    """The metric context keys this dataset and flow provide (checked against what named metrics need)."""
    keys = {"explain_fn", "explain_seeded"}
    if truth.regions is not None:
        keys.add("regions")
    if truth.part_ctx is not None:
        keys.update(truth.part_ctx)
    return keys


def _selected(
    name: str, fn: ExplainFn, maps: torch.Tensor, sample: _Sample, cfg: EvalSettings, prog: Any
) -> dict[str, np.ndarray]:
    """The metrics named in ``cfg.metrics`` (built again: each method gets the same seeded draws)."""
    return score_selected(
        build_selected(cfg.metrics, cfg.metric_params),
        model=sample.model,
        scorer=sample.scorer,
        images=sample.images,
        maps=maps,
        targets=sample.targets,
        explain_fn=fn,
        explain_n=cfg.metrics_n,
        progress=lambda metric: prog.task(f"{metric} {name}", 1),
    )


def _results(
    trained: Any,
    sample: _Sample,
    truth: _Truth,
    cfg: EvalSettings,
    seed: int,
    split: str | None,
    scored: _Scored,
) -> dict[str, Any]:
    """The results dict (``results.json``): summaries with intervals, rankings, curves and the sanity verdicts."""
    per_image, sanity = scored.per_image, scored.sanity
    summary = summarise(per_image, n_resamples=cfg.n_resamples, seed=seed)
    for name in summary:
        st = summary[name].get("sanity_rank_corr")
        sanity["verdicts"][name] = sanity_verdict(st["mean"] if st else None)
    ranking = rank_methods(summary)
    used = sorted({k for per in per_image.values() for k in per})
    return {
        "schema": SCHEMA,
        "model": {
            "name": trained.model_name,
            "classes": len(trained.classes),
            "cam_layer": trained.cam_layer,
            "image_size": sample.size,
        },
        "data": {
            "root": str(sample.root) if sample.root else None,
            "split": split,
            "n": sample.n,
            "images": [str(r.path) for r in sample.records],
            "regions": truth.region_source,
            "synthetic_parts": truth.part_ctx is not None,
            "render_vs_disk_max_abs": truth.render_gap,
        },
        "seed": seed,
        "settings": {
            **_jsonable(asdict(cfg)),
            "curve_steps": {mode: curve_steps(cfg, mode) for mode in ("deletion", "insertion")},
        },
        "sample": {
            "accuracy": float((sample.preds == sample.labels).float().mean()),
            "mean_target_prob": float(sample.probs.gather(1, sample.targets[:, None]).mean()),
            "target": cfg.target,
        },
        "metrics": {m: metric_info(m) for m in used},
        "methods": summary,
        "ranking": ranking,
        "top_resolved": best_vs_runner_up(per_image, ranking, seed=seed),
        "curves": scored.curves,
        "sanity": sanity,
        "seconds_per_image": scored.seconds,
        "errors": scored.errors,
        "seconds_total": None,
        "figures": [],
    }


def _scoring_model(model: nn.Module, images: torch.Tensor) -> nn.Module:
    from birdlens.explain.metrics.perturbation import model_device
    from birdlens.models.fold import fold_batchnorm

    return fold_batchnorm(model, images[:2].to(model_device(model))).model


def _all_probs(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    from birdlens.explain.metrics.perturbation import eval_channels_last, model_device, select_logits

    out = []
    dev = model_device(model)
    with torch.inference_mode(), eval_channels_last(model):
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(dev).contiguous(memory_format=torch.channels_last)
            out.append(select_logits(model(x)).float().softmax(-1).cpu())
    return torch.cat(out)


def _part_context(
    model: nn.Module,
    records: Sequence[Any],
    root: Path,
    targets: torch.Tensor,
    transform: Callable[[Any], torch.Tensor],
    geometry: Callable[..., Any],
    classes: Sequence[str],
    cfg: EvalSettings,
) -> dict[str, Any] | None:
    """Part masks (input frame), true part importances and key parts for a synthetic-bird sample."""
    import json

    from PIL import Image

    from birdlens.explain.metrics.parts import render_part_removals

    info = json.loads((root / "parts.json").read_text(encoding="utf-8"))
    parts = list(info["parts"])
    render_size = int(info.get("size", 224))

    def to_tensor(arr: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(
            transform(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))
        ).float()

    rendered = render_part_removals(root, [r.path for r in records], to_tensor, render_size, parts)
    importance = true_part_importance(
        model, rendered["originals"], rendered["removed"], targets, cfg.batch_size
    )
    masks = []
    for r, raw in zip(records, rendered["part_masks"], strict=True):
        lab = raw.numpy()
        if getattr(r, "mask", None) is not None and Path(r.mask).is_file():
            with Image.open(r.mask) as m:
                lab = np.asarray(m)
        masks.append(label_mask_to_input_frame(lab, len(parts), geometry))
    key = load_key_parts(root / "parts.json", parts)
    key_rows = [key.get(classes[int(t)], [False] * len(parts)) for t in targets]
    return {
        "originals": rendered["originals"],
        "part_masks": torch.stack(masks),
        "part_importance": importance,
        "key_parts": torch.tensor(key_rows, dtype=torch.bool),
        "parts": parts,
    }


def _variant_context(sample: _Sample, root: Path, cfg: EvalSettings) -> dict[str, Any]:
    """Each sampled bird on a replacement background and paired with a bird of another class (the context
    of ``background_independence`` and ``target_sensitivity``)."""
    import json

    from birdlens.explain.metrics.regions import label_mask_to_input_frame
    from birdlens.explain.metrics.variants import render_variants

    size = int(json.loads((root / "parts.json").read_text(encoding="utf-8")).get("size", 224))

    def to_tensor(arr: np.ndarray) -> torch.Tensor:
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return torch.as_tensor(sample.transform(img)).float()

    def to_frame(labels: np.ndarray, n: int) -> torch.Tensor:
        return label_mask_to_input_frame(labels, n, sample.geometry)

    k = min(cfg.variants_n, sample.n)
    if k <= 0:
        return {}
    paths = [r.path for r in sample.records[:k]]
    labels = sample.labels[:k].tolist()
    return render_variants(root, paths, labels, to_tensor, to_frame, size, cfg.n_backgrounds)


def _variant_metrics(
    fn: ExplainFn, maps: torch.Tensor, sample: _Sample, ctx: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Background independence and target sensitivity on the first images of the sample (as many as were
    rendered, ``variants_n``; NaN for the rest): they explain re-rendered variants with ``fn``."""
    bg = ctx.get("background_images")
    if bg is None:
        return {}
    k = bg.shape[0]  # 0 in a shard's block past the rendered images: the block's values are all NaN
    sub = {**ctx, "part_masks": ctx["part_masks"][:k]}
    out = {}
    for name in ("background_independence", "target_sensitivity"):
        metric = get_metric(name)
        if all(sub.get(key) is not None for key in metric.needs - {"explain_fn"}):
            vals = metric(sample.model, sample.images[:k], maps[:k], sample.targets[:k], explain_fn=fn, **sub)
            out[name] = np.concatenate([vals, np.full(sample.n - k, np.nan)])
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return "tensor"
    return str(obj)


def _write(results: dict[str, Any], per_image: Mapping[str, Any], out: Path, figures: bool) -> None:
    from birdlens.utils.atomic import write_json
    from birdlens.utils.figures import figure_or_warning

    out.mkdir(parents=True, exist_ok=True)
    if figures:
        from birdlens.explain.metrics.figures import (
            plot_categories,
            plot_curves,
            plot_metric_bars,
            plot_sanity,
        )

        fig_dir = out / "figures"
        paths = [figure_or_warning(lambda p: plot_curves(results["curves"], p), fig_dir / "curves.png")]
        for metric in results["ranking"]:
            draw = functools.partial(plot_metric_bars, results["methods"], metric)
            paths.append(figure_or_warning(draw, fig_dir / f"bars_{metric}.png"))
        if results["sanity"]["methods"]:
            paths.append(
                figure_or_warning(lambda p: plot_sanity(results["sanity"], p), fig_dir / "sanity.png")
            )
        summary_fig = functools.partial(plot_categories, results["methods"])
        paths.append(figure_or_warning(summary_fig, fig_dir / "categories.png"))
        results["figures"] = [p.relative_to(out).as_posix() for p in paths if p is not None]
    write_json(out / "per_image.json", {"images": results["data"]["images"], "methods": per_image})
    write_json(out / "results.json", results)
