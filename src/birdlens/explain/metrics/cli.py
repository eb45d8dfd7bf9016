"""``birdlens explain-eval``: score explanation methods on a trained run; thin over :func:`evaluate_explanations`.

Mistakes a user can make (a wrong path, an unknown method, an existing output) end with exit code 2 and one
sentence on stderr, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from birdlens.explain.cli_params import parse_params
from birdlens.explain.metrics import budgets
from birdlens.explain.shard import DEVICES_HELP, NUM_NODES_HELP, RESUME_HELP
from birdlens.utils.device import DEVICE_HELP, PRECISION_HELP


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def explain_eval(
    run: Annotated[Path, typer.Option("--run", help="training run folder (meta.json + weights)")],
    data: Annotated[Path, typer.Option("--data", help="dataset folder or manifest CSV")],
    out: Annotated[Path, typer.Option("--out", help="folder for results.json and figures/")],
    methods: Annotated[
        str, typer.Option("--methods", help="comma-separated explanation methods")
    ] = "gradcam,lime,shap,ig",
    n: Annotated[int, typer.Option("--n", min=1, help="images to explain (class-balanced, seeded)")] = 50,
    split: Annotated[str, typer.Option("--split", help="split to sample from")] = "test",
    boxes: Annotated[
        Path | None, typer.Option("--boxes", help="CUB bounding_boxes.txt or path,x,y,w,h CSV")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            min=1,
            help=f"deletion and insertion steps (RISE: 224; default {budgets.DELETION_STEPS} for deletion, "
            f"{budgets.INSERTION_STEPS} for insertion, within 0.01 of 224's AUCs on the shared photos)",
        ),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="explain the 'pred'icted class or the 'label'")
    ] = "pred",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    sanity_n: Annotated[
        int, typer.Option("--sanity-n", min=0, help="images in the sanity check")
    ] = budgets.SANITY_N,
    stability_n: Annotated[
        int, typer.Option("--stability-n", min=0, help="images in the stability check")
    ] = budgets.STABILITY_N,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="METHOD.OPTION=VALUE, repeatable")
    ] = None,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="comma-separated extra metrics, e.g. road_morf,road_lerf,infidelity,max_sensitivity "
            "('' for none; a wrong name lists them all)",
        ),
    ] = "sparseness,complexity",
    metric_param: Annotated[
        list[str] | None,
        typer.Option("--metric-param", help="METRIC.OPTION=VALUE, repeatable (e.g. road_morf.noise=0)"),
    ] = None,
    metrics_n: Annotated[
        int, typer.Option("--metrics-n", min=0, help="images for the extra metrics that re-explain")
    ] = 8,
    layer: Annotated[
        str | None, typer.Option("--layer", help="layer for the CAM methods (default: the model's)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing results.json")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    precision: Annotated[str, typer.Option("--precision", help=PRECISION_HELP)] = "fp32",
    devices: Annotated[int, typer.Option("--devices", help=DEVICES_HELP)] = 1,
    num_nodes: Annotated[int, typer.Option("--num-nodes", help=NUM_NODES_HELP)] = 1,
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_HELP)] = False,
) -> None:
    """Measure which explanation of this model to trust: deletion/insertion, localisation, ground-truth parts
    (synthetic birds), sanity check and stability, plus the --metrics chosen (ROAD, infidelity, sensitivity,
    Lipschitz, random logit, sparseness, complexity), with 95% bootstrap intervals and two baselines."""
    from birdlens.explain.base import UnsupportedMethodError, with_precision
    from birdlens.explain.layers import use_cam_layer
    from birdlens.explain.metrics.evaluate import evaluate_explanations
    from birdlens.explain.metrics.evaluation_count import format_evaluations
    from birdlens.explain.metrics.table import print_results
    from birdlens.explain.shard import ShardError, check_processes, is_main_process
    from birdlens.utils.device import resolve_for_cli

    dev, prec = resolve_for_cli(device, precision)
    try:
        procs = check_processes(devices, num_nodes, dev)
    except ShardError as e:
        raise _fail(str(e)) from None
    _check_options(out, force, target, boxes)
    trained, manifest = _load(run, data, dev)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        if layer is not None:
            use_cam_layer(trained, layer, names)
        results = evaluate_explanations(
            trained,
            manifest,
            names,
            n=n,
            out_dir=out,
            seed=seed,
            split=split or None,
            boxes=boxes,
            quiet=quiet,
            n_steps=steps,
            target=target,
            batch_size=batch_size,
            sanity_n=sanity_n,
            stability_n=stability_n,
            method_params=with_precision(parse_params(param or []), names, prec),
            precision=prec,
            metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()),
            metric_params=parse_params(metric_param or [], "--metric-param", "METRIC"),
            metrics_n=metrics_n,
            processes=procs,
            resume=resume,
        )
    except UnsupportedMethodError as e:
        raise _fail(str(e)) from None
    except ValueError as e:
        raise _fail(str(e)) from None
    if not is_main_process():  # the other ranks of a sharded run: rank 0 reports
        return
    print_results(results)
    typer.echo("model evaluations per phase (where the time went):")
    typer.echo(format_evaluations(results["evaluations"]))
    typer.echo(f"wrote {out / 'results.json'} and {len(results['figures'])} figures in {out / 'figures'}")


def _check_options(out: Path, force: bool, target: str, boxes: Path | None) -> None:
    """What can be refused before anything is loaded."""
    if (out / "results.json").exists() and not force:
        raise _fail(f"{out / 'results.json'} exists; choose another --out or pass --force")
    if target not in ("pred", "label"):
        raise _fail("--target must be 'pred' or 'label'")
    if boxes is not None and not boxes.is_file():
        raise _fail(f"--boxes {boxes} is not a file")


def _load(run: Path, data: Path, device: Any) -> tuple[Any, Any]:
    """The trained run and the dataset's manifest, or one error line naming what could not be read."""
    from birdlens.data import load_manifest
    from birdlens.runs.trained import load_trained

    try:
        trained = load_trained(run, device=device)
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        raise _fail(f"cannot load the run {run}: {e}") from None
    try:
        manifest = load_manifest(data)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(f"cannot read the data {data}: {e}") from None
    return trained, manifest


def register(app: typer.Typer) -> None:
    """Attach ``birdlens explain-eval`` to the top-level app."""
    app.command("explain-eval")(explain_eval)
