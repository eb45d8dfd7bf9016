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

from birdlens.study.config import (
    ConfigError,
    DataConfig,
    GanCompareConfig,
    GanConfig,
    ModelEntry,
    StudyConfig,
)
from birdlens.study.stages import Stage, StageContext


# ---------------------------------------------------------------------------------------------- data
def data_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.data import load_manifest
    from birdlens.data.report import build_data_report
    from birdlens.study.figures import sample_grid
    from birdlens.utils.atomic import write_json

    cfg: DataConfig = ctx.config["data"]
    seed = ctx.config["seed"]
    out = ctx.dir / "dataset"
    if cfg.source == "synth":
        from birdlens.data.synth import generate_dataset

        s = cfg.synth
        generate_dataset(
            out,
            classes=s.classes,
            per_class=s.per_class,
            size=s.size,
            seed=seed,
            force=True,
            quiet=ctx.quiet,
        )
    else:
        from birdlens.data.prepare import prepare_dataset

        prepare_dataset(
            cfg.path,
            out,
            top=cfg.top,
            per_class=cfg.per_class,
            min_per_class=cfg.min_per_class,
            size=cfg.image_size,
            seed=seed,
            dedupe=cfg.dedupe,
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
        "source": cfg.source,
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
SHIPPED_GENERATORS = {"demo": "demo-gan.safetensors"}  # under birdlens/configs, beside the demo's config


def _generator_file(name: str) -> Path:
    """A shipped generator by name, or a generator file by path."""
    if name in SHIPPED_GENERATORS:
        return Path(__file__).resolve().parents[1] / "configs" / SHIPPED_GENERATORS[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"gan.generator {name!r}: no such file; give a file written by 'birdlens gan export' or "
            f"one of {sorted(SHIPPED_GENERATORS)}"
        )
    return path


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_generator(ctx: StageContext, manifest: Any) -> tuple[Path, dict[str, Any]]:
    """Train the study's GAN on the training split; its run folder and what the report shows of it."""
    from birdlens.augment.gan.config import GANConfig
    from birdlens.augment.gan.data import load_images
    from birdlens.augment.gan.evaluate import gan_metrics
    from birdlens.augment.gan.train import train_gan
    from birdlens.utils.atomic import write_json

    g: GanConfig = ctx.config["gan"]
    seed = ctx.config["seed"]
    train_set = load_images(manifest.split("train"), g.image_size, classes=manifest.classes)
    cfg = GANConfig(
        arch=g.arch,
        image_size=g.image_size,
        iterations=g.iterations,
        batch_size=g.batch_size,
        seed=seed,
        sample_every=g.iterations,
        checkpoint_every=max(25, g.iterations // 4),
    )
    run = ctx.dir / "run"
    result = train_gan(cfg, train_set, run, resume=ctx.resume, force=True, quiet=ctx.quiet)
    metrics = gan_metrics(run, train_set, seed=seed)
    write_json(ctx.dir / "fd.json", metrics)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "note"}
    return run, {
        "figures": [str(p) for p in result.grids[-1:]],
        "metrics": scalars,
        "note": metrics.get("note"),
        "seconds": result.seconds,
    }


def _shipped_generator(ctx: StageContext, manifest: Any) -> tuple[Path, str, dict[str, Any]]:
    """The configured generator file, why it was not trained on the study's data ('' when it was), and what
    the report says of it."""
    from birdlens.augment.gan.checkpoint import load_meta
    from birdlens.augment.gan.export import data_mismatch, data_record

    path = _generator_file(str(ctx.config["gan"].generator))
    meta = load_meta(path)
    actual = data_record(ctx.inputs["data"]["dataset"])
    reason = data_mismatch(meta.get("data") or {}, actual, manifest.classes, list(meta.get("classes") or []))
    about = {"arch": (meta.get("config") or {}).get("arch"), "iterations": meta.get("iteration")}
    return path, reason, about


def _compare(ctx: StageContext, source: Path, manifest: Any) -> dict[str, Any]:
    """real / +classic / +GAN / both with the generator, written as compare.json/.md/.png."""
    from birdlens.augment.gan.data import load_images
    from birdlens.augment.gan.features import Lite0Features
    from birdlens.augment.gan.train import load_generator
    from birdlens.study.ablation import AblationConfig, compare_generator, markdown_table, plot_ablation
    from birdlens.utils.atomic import write_json, write_text

    c: GanCompareConfig = ctx.config["gan"].compare
    loaded = load_generator(source)
    assert loaded.cfg.z_dim is not None
    size, classes = loaded.cfg.image_size, manifest.classes
    train_set = load_images(manifest.split("train"), size, classes)
    test_set = load_images(manifest.split(ctx.config["split"]), size, classes)
    cfg = AblationConfig(seeds=c.seeds, classic_copies=c.classic_copies, gan_per_class=c.per_class)
    features = Lite0Features(input_size=c.feature_size)
    result = compare_generator(train_set, test_set, features, loaded.G, loaded.cfg.z_dim, cfg)
    result["gan"].update(arch=loaded.cfg.arch, iterations=loaded.iteration)
    result["classifier"] += f" ({c.feature_size} px input)"
    write_json(ctx.dir / "compare.json", result)
    write_text(ctx.dir / "compare.md", markdown_table(result))
    plot_ablation(result, ctx.dir / "compare.png")
    return {**result, "figure": str(ctx.dir / "compare.png")}


def gan_stage(ctx: StageContext) -> dict[str, Any]:
    """Train the GAN (or take a shipped one trained on these data), sample it per class, build a real+GAN
    manifest, and with ``gan.compare`` measure what its images do for a classifier."""
    from birdlens.augment.gan.sample import write_samples
    from birdlens.data import load_manifest
    from birdlens.data.manifest import Manifest
    from birdlens.study.figures import sample_grid

    g: GanConfig = ctx.config["gan"]
    seed = ctx.config["seed"]
    manifest = load_manifest(ctx.inputs["data"]["dataset"])
    if g.generator:
        source, reason, about = _shipped_generator(ctx, manifest)
        if reason:
            if ctx.config["needed"]:
                raise ValueError(f"gan.generator {g.generator!r} does not fit this study: {reason}")
            return {"skipped": f"the generator {source.name} was not used: {reason}"}
        summary: dict[str, Any] = {"generator": str(source), **about, "figures": [], "metrics": {}}
    else:
        source, summary = _train_generator(ctx, manifest)
    samples = write_samples(source, ctx.dir / "samples", g.per_class, seed=seed, quiet=ctx.quiet, force=True)
    summary["sample_grid"] = str(
        sample_grid(samples, ctx.dir / "samples.png", per_class=min(g.per_class, 8), seed=seed, thumb=64)
    )
    # real images + GAN samples (train split only), for models with use_gan: true
    mixed = Manifest(list(manifest.records) + list(samples.records), ctx.dir)
    mixed.to_csv(ctx.dir / "mixed.csv")
    summary.update(mixed_manifest=str(ctx.dir / "mixed.csv"), samples=str(ctx.dir / "samples"))
    if g.compare:
        summary["compare"] = _compare(ctx, source, manifest)
    return summary


# ---------------------------------------------------------------------------------------------- models
def train_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.train.api import train

    m: ModelEntry = ctx.config["model"]
    data = ctx.inputs["gan"]["mixed_manifest"] if m.use_gan else ctx.inputs["data"]["dataset"]
    train(
        m.train_config(data, str(ctx.dir), ctx.config["seed"], ctx.quiet),
        resume=ctx.resume and (ctx.dir / "config.yaml").is_file(),
        force=not ctx.resume,
        evaluate=False,
    )
    return {"run": str(ctx.dir), "entry": m.model_dump()}


def evaluate_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.evaluate import evaluate_run

    (model_stage,) = [k for k in ctx.inputs if k.startswith("model:")]
    run = Path(ctx.inputs[model_stage]["run"])
    metrics = evaluate_run(run, split=ctx.config["split"], quiet=ctx.quiet, device=_device(ctx))
    views = _error_views(ctx, run, metrics)
    return {"run": str(run), "metrics": metrics, "entry": ctx.inputs[model_stage]["entry"], "views": views}


def _error_views(ctx: StageContext, run: Path, metrics: dict[str, Any]) -> list[str]:
    """Grad-CAM on the highest-loss and most-confused test images (figures in the stage's folder)."""
    from birdlens.runs.layout import run_manifest
    from birdlens.runs.trained import load_trained
    from birdlens.study.error_views import write_error_views

    trained = load_trained(run, device=_device(ctx))
    records = run_manifest(run).split(ctx.config["split"]).records
    return write_error_views(trained, metrics, records, ctx.dir)


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


def _device(ctx: StageContext) -> Any:
    from birdlens.utils.device import resolve_device

    return resolve_device(ctx.config.get("device", "auto"))


def _precision(ctx: StageContext) -> str:
    return str(ctx.config.get("precision", "fp32"))


def explain_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.explain.base import with_precision
    from birdlens.explain.layers import use_cam_layer
    from birdlens.explain.run import explain_images
    from birdlens.runs.trained import load_trained

    (model_stage,) = [k for k in ctx.inputs if k.startswith("model:")]
    trained = load_trained(ctx.inputs[model_stage]["run"], device=_device(ctx))
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
        method_params=with_precision(ctx.config["params"], ctx.config["methods"], _precision(ctx)),
        force=True,
        quiet=ctx.quiet,
    )
    visualised = _visualise(trained, ctx) if ctx.config.get("visualise") else []
    return {
        "model": model_stage.split(":", 1)[1],
        **result,
        **({"visualised": visualised} if visualised else {}),
    }


def _visualise(trained: Any, ctx: StageContext, n_photos: int = 3) -> list[dict[str, Any]]:
    """The configured classes' activation maximisations, each beside ``n_photos`` seeded training images of
    the class (``visualise/CLASS_beside_train.png``), for the report."""
    import numpy as np
    from PIL import Image

    from birdlens.data import load_manifest
    from birdlens.explain.visualise import beside_photos, write_visualisation
    from birdlens.explain.viz import save_png

    train = load_manifest(ctx.inputs["data"]["dataset"]).split("train")
    out = []
    for cls in ctx.config["visualise"]:
        rec = write_visualisation(
            trained, cls, ctx.dir / "visualise", steps=ctx.config["visualise_steps"], seed=ctx.config["seed"]
        )
        paths = sorted(Path(r.path) for r in train if r.label == rec["class"])
        photos = random.Random(ctx.config["seed"]).sample(paths, min(n_photos, len(paths)))
        image = np.asarray(Image.open(ctx.dir / "visualise" / rec["image"]).convert("RGB"))
        figure = ctx.dir / "visualise" / f"{Path(rec['image']).stem}_beside_train.png"
        save_png(figure, beside_photos(image, photos))
        out.append({**rec, "figure": str(figure), "train_images": [str(p) for p in photos]})
    return out


def explain_eval_stage(ctx: StageContext) -> dict[str, Any]:
    from birdlens.data import load_manifest
    from birdlens.explain.base import with_precision
    from birdlens.explain.layers import use_cam_layer
    from birdlens.explain.metrics import evaluate_explanations
    from birdlens.runs.trained import load_trained

    (model_stage,) = [k for k in ctx.inputs if k.startswith("model:")]
    trained = load_trained(ctx.inputs[model_stage]["run"], device=_device(ctx))
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
        method_params=with_precision(c["method_params"], c["methods"], _precision(ctx)),
        quiet=ctx.quiet,
        **{"precision": _precision(ctx), **c["params"]},
    )
    evidence = _class_evidence(ctx, trained, manifest)
    return {
        "model": model_stage.split(":", 1)[1],
        "results": result,
        "dir": str(ctx.dir),
        **({"class_evidence": evidence} if evidence else {}),
    }


def _class_evidence(ctx: StageContext, trained: Any, manifest: Any) -> str | None:
    """Per-class part reliance vs each explainer, on synthetic birds only (photos cannot lose a part)."""
    from birdlens.explain.base import with_precision
    from birdlens.explain.metrics.class_evidence import evaluate_class_evidence

    c, root = ctx.config, Path(ctx.inputs["data"]["dataset"])
    n = int(c.get("class_evidence_n", 0))
    if n <= 0 or not (root / "specs.jsonl").is_file():
        return None
    evaluate_class_evidence(
        trained,
        manifest,
        c["methods"],
        n_per_class=n,
        out_dir=ctx.dir,
        seed=c["seed"],
        split=c["split"],
        dataset_dir=root,
        method_params=with_precision(c["method_params"], c["methods"], _precision(ctx)),
    )
    return str(ctx.dir / "class_evidence.json")


def audit_stage(ctx: StageContext) -> dict[str, Any]:
    """The shortcut audit of one model (``audit.json`` + evidence images in the stage folder)."""
    from birdlens.data import load_manifest
    from birdlens.explain.audit.core import AuditConfig, audit_run
    from birdlens.runs.trained import load_trained

    (model_stage,) = [k for k in ctx.inputs if k.startswith("model:")]
    trained = load_trained(ctx.inputs[model_stage]["run"], device=_device(ctx))
    c = ctx.config
    cfg = AuditConfig(
        method=c["method"],
        per_class=c["per_class"],
        recipients=c["recipients"],
        threshold=c["threshold"],
        alpha=c["alpha"],
        seed=c["seed"],
    )
    result = audit_run(trained, load_manifest(ctx.inputs["data"]["dataset"]), ctx.dir, cfg, quiet=ctx.quiet)
    return {"model": model_stage.split(":", 1)[1], "dir": str(ctx.dir), "flagged": result["flagged"]}


# --------------------------------------------------------------------------------------------- build
def build_stages(cfg: StudyConfig) -> list[Stage]:
    """The study's stage graph. Each stage's config slice is exactly what its outputs depend on."""
    from birdlens.study.report_stage import report_stage

    seed = cfg.seed
    stages = [Stage("data", data_stage, {"data": cfg.data, "seed": seed})]
    stages.append(
        Stage("augment", augment_stage, {"examples": cfg.augment.examples, "seed": seed}, deps=["data"])
    )
    if cfg.gan.enabled:
        stages.append(_gan_stage(cfg))
    stages += _model_stages(cfg)
    stages += _explain_stages(cfg)
    if cfg.audit.enabled:
        a = cfg.audit
        a_slice = {"method": a.method, "per_class": a.per_class, "recipients": a.recipients}
        stages += [
            Stage(
                f"audit:{name}",
                audit_stage,
                {
                    **a_slice,
                    "threshold": a.threshold,
                    "alpha": a.alpha,
                    "seed": cfg.seed,
                    **_on_device(cfg, precision=False),
                },
                deps=["data", f"model:{name}"],
            )
            for name in a.models or [m.name for m in cfg.models]
        ]
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


def _on_device(cfg: StudyConfig, precision: bool = True) -> dict[str, str]:
    """Device (and precision) for a stage's key, only when set: the stages of an older study stay valid."""
    on = {"device": cfg.device} if cfg.device != "auto" else {}
    if precision and cfg.precision != "fp32":
        on["precision"] = cfg.precision
    return on


def _gan_stage(cfg: StudyConfig) -> Stage:
    needed = any(m.use_gan for m in cfg.models)
    gan_slice = {"gan": cfg.gan, "seed": cfg.seed, "split": cfg.evaluate_split, "needed": needed}
    if cfg.gan.generator:  # a re-exported generator is another generator: the stage must run again
        try:
            gan_slice["generator_sha256"] = _sha256(_generator_file(cfg.gan.generator))
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
    return Stage("gan", gan_stage, gan_slice, deps=["data"])


def _model_stages(cfg: StudyConfig) -> list[Stage]:
    """Train, then evaluate, each model."""
    stages = []
    for m in cfg.models:
        deps = ["data", *(["gan"] if m.use_gan else [])]
        stages.append(
            Stage(
                f"model:{m.name}",
                train_stage,
                {"model": m, "seed": cfg.seed},
                deps=deps,
                subdir=f"models/{m.name}",
            )
        )
        stages.append(
            Stage(
                f"evaluate:{m.name}",
                evaluate_stage,
                {"split": cfg.evaluate_split, **_on_device(cfg, precision=False)},  # evaluate has no autocast
                deps=[f"model:{m.name}"],
                subdir=f"evaluate/{m.name}",
            )
        )
    return stages


def _explain_stages(cfg: StudyConfig) -> list[Stage]:
    """Explanations of the chosen models, then their measured quality."""
    names = [m.name for m in cfg.models]
    x, e = cfg.explain, cfg.explain_eval
    common = {"split": cfg.evaluate_split, "seed": cfg.seed}
    run_on = _on_device(cfg)
    stages = [
        Stage(
            f"explain:{name}",
            explain_stage,
            {
                "methods": x.methods,
                "n_images": x.n_images,
                "params": x.params,
                **common,
                **({"layer": x.layer} if x.layer else {}),  # old stage keys kept
                **({"visualise": x.visualise, "visualise_steps": x.visualise_steps} if x.visualise else {}),
                **run_on,
            },
            deps=["data", f"model:{name}"],
        )
        for name in x.models or names
    ]
    if e.enabled:
        stages += [
            Stage(
                f"explain_eval:{name}",
                explain_eval_stage,
                {
                    "methods": e.methods,
                    "n": e.n,
                    "params": e.params,
                    "method_params": e.method_params,
                    "class_evidence_n": e.class_evidence_n,
                    **common,
                    **({"layer": e.layer} if e.layer else {}),
                    **run_on,
                },
                deps=["data", f"model:{name}"],
            )
            for name in e.models or names
        ]
    return stages + _cases_stages(cfg)


def _cases_stages(cfg: StudyConfig) -> list[Stage]:
    """Confused pairs (plain vs contrastive Grad-CAM), top losses' nearest examples and prototypes."""
    from birdlens.study.cases import cases_stage

    c = cfg.cases
    if not c.enabled:
        return []
    slice_ = {"pairs": c.pairs, "losses": c.losses, "k": c.k, "split": cfg.evaluate_split}
    return [
        Stage(
            f"cases:{name}",
            cases_stage,
            {**slice_, **_on_device(cfg, precision=False)},
            deps=[f"evaluate:{name}"],
        )
        for name in c.models or [m.name for m in cfg.models]
    ]
