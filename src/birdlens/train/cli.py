"""``birdlens train | predict``: thin wrappers over :mod:`birdlens.train` (``evaluate`` and ``compare`` live in
:mod:`birdlens.evaluate.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from birdlens.utils.device import DEVICE_HELP


def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory")],
    data: Annotated[str | None, typer.Option("--data", help="dataset folder or manifest CSV")] = None,
    model: Annotated[str | None, typer.Option("--model", help="registry or timm name")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="probe | finetune")] = None,
    augment: Annotated[
        str | None, typer.Option("--augment", help="none, light, keras-paper, randaugment, trivialaugment")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", min=32)] = None,
    top: Annotated[
        int | None, typer.Option("--top", min=1, help="keep the N species with most images")
    ] = None,
    per_class: Annotated[
        int | None, typer.Option("--per-class", min=1, help="at most K images per species")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="head learning rate")] = None,
    label_smoothing: Annotated[float | None, typer.Option("--label-smoothing")] = None,
    unfreeze_stages: Annotated[
        int | None,
        typer.Option("--unfreeze-stages", help="fine-tune only the last N backbone stages (default: all)"),
    ] = None,
    head_epochs: Annotated[int | None, typer.Option("--head-epochs", min=0)] = None,
    devices: Annotated[int | None, typer.Option("--devices", min=1)] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="auto | ddp | ...")] = None,
    accelerator: Annotated[str | None, typer.Option("--accelerator", help="auto | cpu | gpu")] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="auto | 32-true | 16-mixed | bf16-mixed")
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="local weights file (.safetensors / .pth)")
    ] = None,
    no_pretrained: Annotated[bool, typer.Option("--no-pretrained", help="random initialisation")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML with TrainConfig fields (CLI wins)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing run directory")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out from last.ckpt")
    ] = False,
    no_evaluate: Annotated[
        bool, typer.Option("--no-evaluate", help="skip valid/test evaluation at the end")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Train a classifier: a linear probe on cached frozen features, or a fine-tune (Lightning)."""
    from birdlens.runs.layout import RunDirError
    from birdlens.train.api import train as run_train

    # every option named like a TrainConfig field is an override; None means "not given"
    fields: dict[str, Any] = {k: v for k, v in locals().items() if k in _CONFIG_OPTIONS}
    fields.update(out=str(out), quiet=quiet or None, pretrained=False if no_pretrained else None)
    cfg = _config(fields, config=config, resume=resume, out=out, data=data, quiet=quiet)
    try:
        run_dir = run_train(cfg, force=force, resume=resume, evaluate=not no_evaluate)
    except RunDirError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    summary = _summary(run_dir)
    if summary:  # none in a DDP helper process: rank 0 reports
        typer.echo(summary)


_CONFIG_OPTIONS = (
    "data",
    "model",
    "mode",
    "augment",
    "epochs",
    "image_size",
    "top",
    "per_class",
    "seed",
    "batch_size",
    "lr",
    "label_smoothing",
    "unfreeze_stages",
    "head_epochs",
    "devices",
    "strategy",
    "accelerator",
    "precision",
    "weights",
)


def _config(
    fields: dict[str, Any], *, config: Path | None, resume: bool, out: Path, data: str | None, quiet: bool
) -> Any:
    """The run's TrainConfig: a YAML with the options on top, a resumed run's own, or the options alone."""
    from pydantic import ValidationError

    from birdlens.runs import layout
    from birdlens.train.config import TrainConfig

    try:
        if config is not None:
            return TrainConfig.from_yaml(config, **fields)
        if resume and (out / layout.CONFIG).is_file():
            return TrainConfig.from_yaml(out / layout.CONFIG, quiet=quiet or None, out=str(out))
        if data is None:
            raise typer.BadParameter("--data is required (or --config YAML, or --resume of an existing run)")
        return TrainConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        typer.echo(f"error: invalid training settings:\n{e}", err=True)
        raise typer.Exit(2) from None
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _summary(run_dir: Path) -> str | None:
    """Where the run is, its training time and, when evaluated, its test accuracy with the interval."""
    from birdlens.runs import layout

    meta = run_dir / layout.META
    if not meta.is_file():
        return None
    summary = json.loads(meta.read_text(encoding="utf-8"))
    test = run_dir / layout.METRICS_DIR / "test.json"
    msg = f"run: {run_dir}  ({summary.get('train_seconds', 0):.0f} s training)"
    if test.is_file():
        m = json.loads(test.read_text(encoding="utf-8"))
        lo, hi = m["accuracy_ci95"]
        msg += f"\ntest accuracy {m['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] on {m['n']} images, macro-F1 {m['macro_f1']:.3f}"
    return msg


def predict(
    run: Annotated[Path, typer.Option("--run", help="training run directory")],
    images: Annotated[list[Path], typer.Argument(help="image files")],
    top_k: Annotated[int, typer.Option("--top-k", min=1)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    which: Annotated[str, typer.Option("--weights", help="best | last")] = "best",
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
) -> None:
    """Top-k species for each image; a bad image prints one error line and makes the exit code 1."""
    from birdlens.runs.trained import load_trained
    from birdlens.train.predict import predict_files
    from birdlens.utils.device import resolve_for_cli

    dev, _ = resolve_for_cli(device)
    try:
        trained = load_trained(run, which=which, device=dev)  # type: ignore[arg-type]
    except (FileNotFoundError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    preds = predict_files(trained, images, top_k=top_k)
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in preds], indent=2, ensure_ascii=False))
    for p in preds:
        if p.error is not None:
            typer.echo(f"error: {p.path}: {p.error}", err=True)
        elif not as_json:
            typer.echo(f"{p.path}: " + ", ".join(f"{lbl} ({prob:.3f})" for lbl, prob in p.top))
    if any(p.error is not None for p in preds):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("predict")(predict)
