"""``birdlens evaluate | compare``: thin wrappers over :mod:`birdlens.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from birdlens.utils.device import DEVICE_HELP


def evaluate(
    run: Annotated[Path, typer.Option("--run", help="training run directory")],
    data: Annotated[
        str | None, typer.Option("--data", help="another dataset (default: the run's own manifest)")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="train | valid | test")] = "test",
    which: Annotated[str, typer.Option("--weights", help="best | last")] = "best",
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
) -> None:
    """Evaluate a run: metrics/<split>.json (accuracy + Wilson CI, per-class, ECE, confusions) and figures.

    With --data the outputs are named <split>-on-<dataset>, so the run's own results are kept."""
    from birdlens.evaluate import evaluate_run
    from birdlens.runs import layout
    from birdlens.utils.device import resolve_for_cli

    dev, _ = resolve_for_cli(device)
    try:
        m = evaluate_run(run, data=data, split=split, which=which, quiet=quiet, device=dev)
    except layout.RunDirError as e:  # a damaged checkpoint or meta.json: the message names it
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    lo, hi = m["accuracy_ci95"]
    typer.echo(
        f"{split}: accuracy {m['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] (n={m['n']}), top-5 "
        f"{m['top5_accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}"
        f"\nwrote {run / layout.METRICS_DIR / (layout.metrics_name(m['split'], data) + '.json')} and "
        f"{run / layout.FIGURES_DIR}/"
    )


def compare(
    runs: Annotated[list[Path], typer.Argument(help="training run directories")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="FILE.csv | FILE.md | FILE.json (other names: all three)"),
    ] = None,
    split: Annotated[str, typer.Option("--split")] = "test",
) -> None:
    """The study's Table 1 for several runs: test accuracy with CI, macro-F1, train time, params."""
    from rich.console import Console

    from birdlens.evaluate.compare import compare_runs, rich_table, write_table

    try:
        rows = compare_runs(runs, split=split)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    Console().print(rich_table(rows, title=f"Runs ({split})"))
    if out is not None:
        for p in write_table(rows, out):
            typer.echo(f"wrote {p}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("compare")(compare)
