"""``birdlens explain``: explain images with a trained run (maps, overlays, panel, manifest)."""

from __future__ import annotations

from pathlib import Path

import typer

from birdlens.explain.shard import DEVICES_HELP, NUM_NODES_HELP, RESUME_HELP
from birdlens.utils.device import DEVICE_HELP, PRECISION_HELP


def explain(
    sources: list[Path] | None = typer.Argument(
        None, help="Image files and/or folders (searched recursively); optional with --visualise-class."
    ),
    run: Path = typer.Option(..., "--run", help="Training run directory (with meta.json and weights)."),
    methods: str = typer.Option(
        "gradcam,lime,shap,ig",
        "--methods",
        help="Comma-separated methods (any registered explainer; an unknown name lists them).",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder for maps, overlays, panel and manifest."),
    n: int | None = typer.Option(None, "--n", help="Explain a seeded sample of N images."),
    seed: int = typer.Option(0, "--seed", help="Seed for LIME/SHAP sampling and the image sample."),
    which: str = typer.Option("best", "--weights", help="Which checkpoint of the run: best or last."),
    lime_samples: int = typer.Option(1000, "--lime-samples", help="LIME perturbations per image."),
    shap_evals: int = typer.Option(500, "--shap-evals", help="SHAP model evaluations per image."),
    ig_steps: int = typer.Option(50, "--ig-steps", help="Integrated Gradients steps."),
    param: list[str] | None = typer.Option(
        None,
        "--param",
        help="A method's option as METHOD.OPTION=VALUE, repeatable (e.g. rise.num_masks=500, occlusion.window=16).",
    ),
    layer: str | None = typer.Option(
        None,
        "--layer",
        help="Layer for the CAM methods (default: the model's, e.g. blocks.11.norm1 of a ViT).",
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Explain this class (name or index) in every image instead of the predicted one.",
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", help="Explain each image's K most likely classes (files METHOD/IMAGE__CLASS.npy)."
    ),
    contrast: str | None = typer.Option(
        None,
        "--contrast",
        help="Explain 'why the explained class and not CLASS' (name, index or runner-up): logit difference.",
    ),
    examples: int = typer.Option(
        0,
        "--examples",
        min=0,
        help="Also find each image's K nearest training images (predicted class and runner-up) in the model's "
        "feature space; 0: off.",
    ),
    batch_images: int = typer.Option(
        8,
        "--batch-images",
        min=1,
        help="Images per call of IG, LIME and SHAP: their model batches mix several images (maps as alone, to float32 rounding).",
    ),
    visualise_class: str | None = typer.Option(
        None,
        "--visualise-class",
        help="Also render what maximises this class's logit (name or index): OUT/visualise/CLASS.png + .json.",
    ),
    visualise_steps: int = typer.Option(
        256,
        "--visualise-steps",
        help="Gradient-ascent steps of --visualise-class (one forward+backward each).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar (also BIRDLENS_QUIET=1)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("fp32", "--precision", help=PRECISION_HELP),
    devices: int = typer.Option(1, "--devices", help=DEVICES_HELP),
    num_nodes: int = typer.Option(1, "--num-nodes", help=NUM_NODES_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
) -> None:
    """Explain IMAGE_OR_DIR... with the model of --run; write .npy maps, PNG overlays/panel, manifest.json."""
    from birdlens.explain.base import UnsupportedMethodError, list_methods, method_class
    from birdlens.explain.cli_params import parse_params
    from birdlens.explain.examples import index_for_run
    from birdlens.explain.layers import use_cam_layer
    from birdlens.explain.run import explain_images
    from birdlens.explain.shard import ShardError, check_processes, is_main_process
    from birdlens.explain.targets import resolve_contrast
    from birdlens.runs.trained import load_trained
    from birdlens.utils.device import resolve_for_cli

    dev, prec = resolve_for_cli(device, precision)
    try:
        procs = check_processes(devices, num_nodes, dev)
    except ShardError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise typer.BadParameter(f"no methods given; choose from {list_methods()}", param_hint="--methods")
    if not sources and visualise_class is None:
        raise typer.BadParameter(
            "give images or folders to explain, or --visualise-class", param_hint="SOURCES"
        )
    try:
        for m in names:  # before loading the model: a typo fails at once
            method_class(m)
        if visualise_class is not None:
            _check_visualise(visualise_steps)
        trained = load_trained(run, which=which, device=dev)  # type: ignore[arg-type]
        if visualise_class is not None:
            vis_target = _visualise_target(trained, visualise_class, out, force)
        if layer is not None and sources:
            use_cam_layer(trained, layer, names)
        if contrast is not None:  # before the training features are computed: a typo fails at once
            resolve_contrast(contrast, list(trained.classes))
        index = index_for_run(trained, run, quiet=quiet) if examples and sources else None
        manifest = None
        if sources:
            manifest = explain_images(
                trained,
                [str(s) for s in sources],
                names,
                out,
                seed=seed,
                n=n,
                quiet=quiet,
                force=force,
                target=target,
                top_k=top_k,
                contrast=contrast,
                examples=index,
                k_examples=examples,
                batch_images=batch_images,
                processes=procs,
                resume=resume,
                method_params=_method_params(
                    names, prec, lime_samples, shap_evals, ig_steps, parse_params(param or [])
                ),
            )
        if visualise_class is not None and is_main_process():
            from birdlens.explain.visualise import write_visualisation

            rec = write_visualisation(
                trained, vis_target, out / "visualise", steps=visualise_steps, seed=seed
            )
            typer.echo(
                f"visualised {rec['class']!r}: logit {rec['start_logit']:.2f} -> {rec['final_logit']:.2f} "
                f"in {rec['seconds']:.1f}s -> {out / 'visualise' / rec['image']}"
            )
    except (UnsupportedMethodError, FileExistsError, FileNotFoundError, ValueError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
    if manifest is None or not is_main_process():  # only visualised, or another rank of a sharded run
        return
    per = ", ".join(f"{m} {v['seconds_per_image']:.2f}s" for m, v in manifest["methods"].items())
    typer.echo(f"explained {len(manifest['images'])} images ({per} per image) -> {out}")


def _check_visualise(steps: int) -> None:
    """``--visualise-steps`` against its declared range (one error line naming the option)."""
    from birdlens.explain.visualise import check_settings

    try:
        check_settings(steps=steps)
    except ValueError as e:
        raise ValueError(str(e).replace("visualise: steps", "--visualise-steps")) from None


def _visualise_target(trained: object, cls: str, out: Path, force: bool) -> int:
    """The class index of ``--visualise-class`` (a name or an index) and a check that its image is new."""
    from birdlens.explain.targets import class_slug, resolve_target

    classes = list(trained.classes)  # type: ignore[attr-defined]
    try:
        idx = resolve_target(cls, classes)
    except ValueError as e:
        raise ValueError(f"--visualise-class: {e}") from None
    png = out / "visualise" / f"{class_slug(classes, idx)}.png"
    if png.exists() and not force:
        raise FileExistsError(f"{png} already exists; pass --force to overwrite it")
    return idx


def _method_params(
    names: list[str],
    precision: str,
    lime_samples: int,
    shap_evals: int,
    ig_steps: int,
    given: dict[str, dict[str, object]] | None = None,
) -> dict[str, dict[str, object]]:
    """The budget options as each method's parameters, then the ``--param`` options (which win), with the
    precision for the methods that take one."""
    from birdlens.explain.base import with_precision

    budgets: dict[str, dict[str, object]] = {
        "lime": {"num_samples": lime_samples},
        "shap": {"max_evals": shap_evals},
        "ig": {"steps": ig_steps},
    }
    for method, options in (given or {}).items():
        budgets.setdefault(method, {}).update(options)
    return with_precision(budgets, names, precision)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
