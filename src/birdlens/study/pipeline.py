"""From a :class:`StudyConfig` to the list of cached stages, and the stage bodies that call each area's API.

Folder layout of a study run (``RUN``)::

    config.yaml  env.json  report.html  results.json
    data/          dataset/ (prepared or synthetic images + manifest.csv), report.json, samples.png
    augment/       examples.png
    gan/           the GAN run (checkpoints, samples, fd.json)
    models/<name>/ a training run (birdlens train layout: best.safetensors, meta.json, log.csv, metrics/, figures/)
    explain/<name>/ maps, overlays, panel.png, manifest.json
    explain_eval/<name>/ results.json + figures
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from birdlens.study.config import ModelEntry, StudyConfig
from birdlens.study.stages import Stage, StageContext


def _dataset_dir(run_dir: Path) -> Path:
    return run_dir / "data" / "dataset"


# ---------------------------------------------------------------------------------------------- data
def data_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.data import load_manifest
    from birdlens.data.report import build_data_report
    from birdlens.study.figures import sample_grid
    from birdlens.utils.atomic import write_json

    cfg = ctx.config["data"]
    seed = ctx.config["seed"]
    out = ctx.dir / "dataset"
    if cfg["source"] == "synth":
        from birdlens.data.synth import generate_dataset

        s = cfg["synth"]
        generate_dataset(
            out,
            classes=s["classes"],
            per_class=s["per_class"],
            size=s["size"],
            seed=seed,
            force=True,
            quiet=ctx.quiet,
        )
    else:
        from birdlens.data.prepare import prepare_dataset

        prepare_dataset(
            cfg["path"],
            out,
            top=cfg["top"],
            per_class=cfg["per_class"],
            min_per_class=cfg["min_per_class"],
            size=cfg["image_size"],
            seed=seed,
            dedupe=cfg["dedupe"],
            force=True,
            progress=not ctx.quiet,
        )
    manifest = load_manifest(out, seed=seed)
    report = build_data_report(manifest)
    write_json(ctx.dir / "report.json", report)
    sample_grid(manifest, ctx.dir / "samples.png", seed=seed)
    return {
        "dataset": str(out),
        "report": str(ctx.dir / "report.json"),
        "samples": str(ctx.dir / "samples.png"),
        "n_images": report.get("n_images"),
        "n_classes": report.get("n_classes"),
        "warnings": list(report.get("warnings", [])),
        "source": cfg["source"],
    }


def augment_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.augment.presets import augment_examples_figure
    from birdlens.data import load_manifest

    manifest = load_manifest(ctx.inputs["data"]["dataset"]).split("train")
    rng = random.Random(ctx.config["seed"])
    picks = rng.sample(manifest.records, min(2, len(manifest.records)))
    fig = augment_examples_figure(
        [r.path for r in picks], ctx.config["examples"], ctx.dir / "examples.png", seed=ctx.config["seed"]
    )
    return {"figure": str(fig), "presets": ctx.config["examples"]}


# ----------------------------------------------------------------------------------------------- GAN
def gan_stage(ctx: StageContext) -> dict[str, Any]:
    """Train the GAN on the training split, sample it, measure FD/KID-lite0, and build a real+GAN manifest."""
    from birdlens.augment.gan.config import GANConfig
    from birdlens.augment.gan.data import load_images
    from birdlens.augment.gan.evaluate import gan_metrics
    from birdlens.augment.gan.sample import write_samples
    from birdlens.augment.gan.train import train_gan
    from birdlens.data import load_manifest
    from birdlens.data.manifest import Manifest
    from birdlens.utils.atomic import write_json

    g = ctx.config["gan"]
    seed = ctx.config["seed"]
    manifest = load_manifest(ctx.inputs["data"]["dataset"])
    train_set = load_images(manifest.split("train"), g["image_size"], classes=manifest.classes)
    cfg = GANConfig(
        arch=g["arch"],
        image_size=g["image_size"],
        iterations=g["iterations"],
        batch_size=g["batch_size"],
        seed=seed,
        sample_every=g["iterations"],
        checkpoint_every=max(25, g["iterations"] // 4),
    )
    run = ctx.dir / "run"
    result = train_gan(cfg, train_set, run, resume=ctx.resume, force=True, quiet=ctx.quiet)
    samples = write_samples(run, ctx.dir / "samples", g["per_class"], seed=seed, quiet=ctx.quiet, force=True)
    metrics = gan_metrics(run, train_set, seed=seed)
    write_json(ctx.dir / "fd.json", metrics)
    # real images + GAN samples (train split only), for models with use_gan: true
    mixed = Manifest(list(manifest.records) + list(samples.records), ctx.dir)
    mixed.to_csv(ctx.dir / "mixed.csv")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "note"}
    return {
        "figures": [str(p) for p in result.grids[-1:]],
        "metrics": scalars,
        "note": metrics.get("note"),
        "mixed_manifest": str(ctx.dir / "mixed.csv"),
        "samples": str(ctx.dir / "samples"),
        "seconds": result.seconds,
    }


# ---------------------------------------------------------------------------------------------- models
def train_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.train.api import train
    from birdlens.train.config import TrainConfig

    m = ModelEntry.model_validate(ctx.config["model"])
    data = ctx.inputs["data"]["dataset"]
    if m.use_gan:
        data = ctx.inputs["gan"]["mixed_manifest"]
    fields: dict[str, Any] = {
        "data": data,
        "out": str(ctx.dir),
        "model": m.model,
        "mode": "probe" if m.mode == "probe" else "finetune",
        "pretrained": m.mode != "scratch",
        "augment": m.augment,
        "epochs": m.epochs,
        "image_size": m.image_size,
        "batch_size": m.batch_size,
        "lr": m.lr,
        "weights": m.weights,
        "seed": ctx.config["seed"],
        "quiet": ctx.quiet,
    }
    fields.update(m.options)
    train(
        TrainConfig(**fields),
        resume=ctx.resume and (ctx.dir / "config.yaml").is_file(),
        force=not ctx.resume,
        evaluate=False,
    )
    return {"run": str(ctx.dir), "entry": m.model_dump()}


def evaluate_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.evaluate import evaluate_run

    (model_stage,) = [k for k in ctx.inputs if k.startswith("model:")]
    run = Path(ctx.inputs[model_stage]["run"])
    metrics = evaluate_run(run, split=ctx.config["split"], quiet=ctx.quiet)
    return {"run": str(run), "metrics": metrics, "entry": ctx.inputs[model_stage]["entry"]}


# ------------------------------------------------------------------------------------------ explain
def _pick_images(dataset: str, split: str, n: int, seed: int) -> list[tuple[Path, str]]:
    """One image per class first (round-robin over classes), seeded, so panels show different species."""
    from birdlens.data import load_manifest

    manifest = load_manifest(dataset).split(split)
    rng = random.Random(seed)
    by_class: dict[str, list] = {}
    for r in manifest:
        by_class.setdefault(r.label, []).append(r)
    for recs in by_class.values():
        rng.shuffle(recs)
    classes = sorted(by_class)
    rng.shuffle(classes)
    picks: list[tuple[Path, str]] = []
    i = 0
    while len(picks) < n and any(by_class.values()):
        c = classes[i % len(classes)]
        if by_class[c]:
            r = by_class[c].pop()
            picks.append((Path(r.path), r.label))
        i += 1
    return picks


def explain_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.explain.layers import use_cam_layer
    from birdlens.explain.run import explain_images
    from birdlens.runs.trained import load_trained

    (model_stage,) = [k for k in ctx.inputs if k.startswith("model:")]
    trained = load_trained(ctx.inputs[model_stage]["run"])
    if ctx.config.get("layer"):
        use_cam_layer(trained, ctx.config["layer"], ctx.config["methods"])
    picks = _pick_images(
        ctx.inputs["data"]["dataset"], ctx.config["split"], ctx.config["n_images"], ctx.config["seed"]
    )
    result = explain_images(
        trained,
        [p for p, _ in picks],
        ctx.config["methods"],
        ctx.dir,
        labels=[lab for _, lab in picks],
        seed=ctx.config["seed"],
        method_params=ctx.config["params"],
        force=True,
        quiet=ctx.quiet,
    )
    return {"model": model_stage.split(":", 1)[1], **result}


def explain_eval_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.data import load_manifest
    from birdlens.explain.layers import use_cam_layer
    from birdlens.explain.metrics import evaluate_explanations
    from birdlens.runs.trained import load_trained

    (model_stage,) = [k for k in ctx.inputs if k.startswith("model:")]
    trained = load_trained(ctx.inputs[model_stage]["run"])
    manifest = load_manifest(ctx.inputs["data"]["dataset"])
    c = ctx.config
    if c.get("layer"):
        use_cam_layer(trained, c["layer"], c["methods"])
    result = evaluate_explanations(
        trained,
        manifest,
        c["methods"],
        n=c["n"],
        out_dir=ctx.dir,
        seed=c["seed"],
        split=c["split"],
        dataset_dir=ctx.inputs["data"]["dataset"],
        method_params=c["method_params"],
        quiet=ctx.quiet,
        **c["params"],
    )
    return {"model": model_stage.split(":", 1)[1], "results": result, "dir": str(ctx.dir)}


# --------------------------------------------------------------------------------------------- build
def build_stages(cfg: StudyConfig) -> list[Stage]:
    """The study's stage graph. Each stage's config slice is exactly what its outputs depend on."""
    from birdlens.study.report_stage import report_stage

    seed = cfg.seed
    stages = [Stage("data", data_stage, {"data": cfg.data.model_dump(), "seed": seed})]
    stages.append(
        Stage("augment", augment_stage, {"examples": cfg.augment.examples, "seed": seed}, deps=["data"])
    )
    if cfg.gan.enabled:
        stages.append(Stage("gan", gan_stage, {"gan": cfg.gan.model_dump(), "seed": seed}, deps=["data"]))
    for m in cfg.models:
        deps = ["data", *(["gan"] if m.use_gan else [])]
        stages.append(
            Stage(
                f"model:{m.name}",
                train_stage,
                {"model": m.model_dump(), "seed": seed},
                deps=deps,
                subdir=f"models/{m.name}",
            )
        )
        stages.append(
            Stage(
                f"evaluate:{m.name}",
                evaluate_stage,
                {"split": cfg.evaluate_split},
                deps=[f"model:{m.name}"],
                subdir=f"evaluate/{m.name}",
            )
        )
    names = [m.name for m in cfg.models]
    for name in cfg.explain.models or names:
        stages.append(
            Stage(
                f"explain:{name}",
                explain_stage,
                {
                    "methods": cfg.explain.methods,
                    "n_images": cfg.explain.n_images,
                    "params": cfg.explain.params,
                    "split": cfg.evaluate_split,
                    "seed": seed,
                    **({"layer": cfg.explain.layer} if cfg.explain.layer else {}),  # old stage keys kept
                },
                deps=["data", f"model:{name}"],
            )
        )
    if cfg.explain_eval.enabled:
        for name in cfg.explain_eval.models or names:
            e = cfg.explain_eval
            stages.append(
                Stage(
                    f"explain_eval:{name}",
                    explain_eval_stage,
                    {
                        "methods": e.methods,
                        "n": e.n,
                        "params": e.params,
                        "method_params": e.method_params,
                        "split": cfg.evaluate_split,
                        "seed": seed,
                        **({"layer": e.layer} if e.layer else {}),
                    },
                    deps=["data", f"model:{name}"],
                )
            )
    stages.append(
        Stage(
            "report",
            report_stage,
            {"config": cfg.model_dump(mode="json")},
            deps=[s.name for s in stages],
            subdir="report",
        )
    )
    return stages
