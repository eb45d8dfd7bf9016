"""``explain-eval`` in parts: whole image blocks scored on each rank (``--devices N``), merged on rank 0.

A block is the smallest run of images whose batches are the same as in one process: a multiple of the
explainers' batch (``explain_batch``) whose deletion/insertion pairs start on a chunk boundary of
:func:`birdlens.explain.metrics.perturbation.perturbation_curves`. Every model batch of a block, the sanity
check's and the stability runs' included, then holds the rows it holds in one process, so each per-image
value is bit for bit the one-process value. The sample, its probabilities, the ground truth and the part
importances are computed over the whole sample on every rank (cheap: one pass), exactly as in one process.
Rank 0 concatenates the blocks in sample order and runs the bootstrap, ranking, figures and ``results.json``
of the one-process path.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.explain.metrics import evaluate as ev
from birdlens.explain.metrics.evaluation_count import EvaluationCounter, summed_evaluations
from birdlens.explain.metrics.perturbation import Endpoints, endpoint_probs
from birdlens.explain.shard import PartStore, Processes, Rank, ShardError, run_sharded


@dataclass
class Job:
    """The arguments of one :func:`birdlens.explain.metrics.evaluate.evaluate_explanations` call."""

    trained: Any
    manifest: Any
    methods: list[str]
    n: int
    seed: int
    split: str | None
    boxes: Any
    dataset_dir: Any
    cfg: ev.EvalSettings
    t_start: float


def block_size(cfg: ev.EvalSettings, height: int, width: int) -> int:
    """Images per block: a multiple of ``explain_batch`` whose deletion/insertion pairs start a chunk."""
    from birdlens.explain.metrics.perturbation import chunk_size_for

    chunk = chunk_size_for(cfg.batch_size, (3, height, width), 256 * 2**20)  # perturbation_curves' default
    size = max(1, cfg.explain_batch)
    for mode in ("deletion", "insertion"):  # each curve has its own steps, so its own chunk alignment
        inner = max(1, min(ev.curve_steps(cfg, mode), height * width) - 1)  # the map-dependent points
        size = math.lcm(size, chunk // math.gcd(inner, chunk))
    return size


def _subset(sample: ev._Sample, truth: ev._Truth, a: int, b: int) -> tuple[ev._Sample, ev._Truth]:
    """Images ``a..b-1`` of the sample and their ground truth (whole-sample quantities sliced, not recomputed)."""
    per_image = ("records", "images", "orig_sizes", "labels", "probs", "preds", "targets")
    part = replace(sample, **{k: getattr(sample, k)[a:b] for k in per_image})
    ctx = None
    if truth.part_ctx is not None:
        ctx = {k: (v[a:b] if isinstance(v, torch.Tensor) else v) for k, v in truth.part_ctx.items()}
    regions = None if truth.regions is None else truth.regions[a:b]
    has = None if truth.has_region is None else truth.has_region[a:b]
    return part, replace(truth, regions=regions, has_region=has, part_ctx=ctx)


def _score_block(
    job: Job,
    sample: ev._Sample,
    truth: ev._Truth,
    entries: list[ev.Entry],
    ends: Endpoints,
    a: int,
    b: int,
    prog: Any,
) -> dict[str, Any]:
    """Every method and baseline on images ``a..b-1``: the part file of the block."""
    sub, sub_truth = _subset(sample, truth, a, b)
    cfg = replace(
        job.cfg,
        sanity_n=min(max(0, min(job.cfg.sanity_n, sample.n) - a), b - a),
        stability_n=min(max(0, min(job.cfg.stability_n, sample.n) - a), b - a),
        metrics_n=min(max(0, min(job.cfg.metrics_n, sample.n) - a), b - a),
    )
    counter = EvaluationCounter()  # the block's evaluations; the sample and its ground truth are every rank's
    scored = ev._Scored(sanity_n=cfg.sanity_n, counter=counter)
    scored.endpoints = Endpoints(ends.original[a:b], ends.deleted[a:b], ends.start[a:b])
    with counter.watching(job.trained.model):
        counter.attach(sample.scorer)
        for name, fn, seeded in entries:
            ev._score_method(name, fn, seeded, sub, sub_truth, cfg, job.seed, prog, scored)
    return {
        "n": b - a,
        "evaluations": counter.as_dict(),
        "per_image": scored.per_image,
        "curves": {
            name: {
                mode: {"fractions": c["fractions"], "probs": scored.probs[name][mode].tolist()}
                for mode, c in cs.items()
            }
            for name, cs in scored.curves.items()
        },
        "sanity": scored.sanity["methods"],
        "seconds": {name: s * (b - a) for name, s in scored.seconds.items()},
        "errors": scored.errors,
    }


def _merge(parts: list[dict[str, Any]], names: list[str], n: int, sanity_n: int) -> ev._Scored:
    """The blocks in sample order as one process scores the whole sample."""
    scored = ev._Scored(sanity_n=sanity_n)
    for name in names:
        errors = [p["errors"][name] for p in parts if name in p["errors"]]
        if errors:
            scored.errors[name] = errors[0]
            continue
        scored.seconds[name] = sum(p["seconds"][name] for p in parts) / n
        keys = list(dict.fromkeys(k for p in parts for k in p["per_image"][name]))
        scored.per_image[name] = {
            k: [v for p in parts for v in p["per_image"][name].get(k, [math.nan] * p["n"])] for k in keys
        }
        scored.curves[name] = {}
        for mode, c in parts[0]["curves"][name].items():
            probs = np.concatenate(
                [np.asarray(p["curves"][name][mode]["probs"], dtype=np.float64) for p in parts]
            )
            scored.curves[name][mode] = {
                "fractions": c["fractions"],
                "mean": probs.mean(0).tolist(),
                "auc": float(np.asarray(scored.per_image[name][mode], dtype=float).mean()),
            }
        sanity = [p["sanity"][name] for p in parts if name in p["sanity"]]
        if sanity:
            corr = np.concatenate([np.asarray(s["corr"], dtype=float) for s in sanity], axis=1)
            scored.sanity["methods"][name] = {
                "stages": sanity[0]["stages"],
                "corr": corr.tolist(),
                "mean_abs": np.nanmean(np.abs(corr), axis=1).tolist(),
            }
    return scored


def evaluate_in_parts(
    job: Job,
    out_dir: str | Path | None,
    procs: Processes,
    resume: bool,
    quiet: bool | None,
    print_table: bool,
) -> dict[str, Any]:
    """Score the sample's blocks on each rank (one part file per block), merge and write on rank 0."""
    if out_dir is None:
        raise ShardError("--devices > 1 and --resume need an output folder (out_dir) for the part files")
    out = Path(out_dir)
    records = ev.select_records(job.manifest, job.n, job.seed, job.split)
    key = {
        "kind": "explain-eval",
        "images": [str(r.path) for r in records],
        "methods": job.methods,
        "settings": ev._jsonable(asdict(job.cfg)),
        "seed": job.seed,
        "model": job.trained.model_name,
        "cam_layer": job.trained.cam_layer,
        "boxes": ev._jsonable(job.boxes),  # other boxes give other localisation values: not the same parts
        "dataset_dir": None if job.dataset_dir is None else str(job.dataset_dir),
    }
    store = PartStore(out, key)
    state: dict[str, Any] = {}

    def work(me: Rank) -> None:
        if me.device is not None:
            job.trained.model.to(me.device)
        torch.manual_seed(job.seed)
        setup = EvaluationCounter()  # counted as one process counts them (each rank does the same)
        with setup.watching(job.trained.model):
            sample, truth = ev.sample_and_truth(
                job.trained,
                job.manifest,
                job.n,
                job.seed,
                job.split,
                job.dataset_dir,
                job.boxes,
                job.cfg,
                setup,
            )
            with setup.phase("deletion/insertion"):  # the curves' shared ends, batched over the whole sample
                ends = endpoint_probs(
                    sample.scorer,
                    sample.images,
                    sample.targets,
                    batch_size=job.cfg.batch_size,
                    precision=job.cfg.precision,
                )
        state["setup"] = setup.as_dict()
        entries = ev._entries(job.methods, job.trained, job.cfg, job.seed)
        size = block_size(job.cfg, *sample.images.shape[2:])
        blocks = [(a, min(sample.n, a + size)) for a in range(0, sample.n, size)]
        state.update(sample=sample, truth=truth, entries=entries, blocks=blocks)
        with ev.bars(quiet or not me.main) as prog:
            for u in me.units(
                len(blocks), f"Blocks of {size} images; a smaller --batch-size gives smaller ones."
            ):
                if resume and store.load(f"block_{u:05d}") is not None:
                    continue
                torch.manual_seed(job.seed)  # as before the first method in one process
                store.save(
                    f"block_{u:05d}", _score_block(job, sample, truth, entries, ends, *blocks[u], prog)
                )

    def merge() -> dict[str, Any]:
        sample, blocks = state["sample"], state["blocks"]
        parts = [store.load(f"block_{u:05d}") for u in range(len(blocks))]
        if any(p is None for p in parts):
            raise RuntimeError(f"a block's part is missing in {store.dir}")
        names = [e[0] for e in state["entries"]]
        scored = _merge(parts, names, sample.n, min(job.cfg.sanity_n, sample.n))  # type: ignore[arg-type]
        results = ev._results(job.trained, sample, state["truth"], job.cfg, job.seed, job.split, scored)
        counts = [state["setup"], *(p["evaluations"] for p in parts)]  # type: ignore[index]
        results["evaluations"] = summed_evaluations(counts)
        results["seconds_total"] = time.perf_counter() - job.t_start
        ev._write(results, scored.per_image, out, job.cfg.figures)
        store.remove()
        if print_table:
            from birdlens.explain.metrics.table import print_results

            print_results(results)
        return results

    def reload() -> dict[str, Any]:
        import json

        return json.loads((out / "results.json").read_text(encoding="utf-8"))

    return run_sharded(procs, store, resume, work, merge, reload)
