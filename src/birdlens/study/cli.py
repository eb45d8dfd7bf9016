"""``birdlens run STUDY.yaml`` and ``birdlens demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from birdlens.runs.layout import RunDirError
from birdlens.study.config import ConfigError, load_study_config
from birdlens.study.run import bundled_config, run_study
from birdlens.study.stages import StageFailed


def _parse_sets(sets: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in sets:
        if "=" not in item:
            raise typer.BadParameter(f"--set wants KEY=VALUE (e.g. data.path=/data/birds), got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _run(config: Path, out: Path | None, resume: bool, force: bool, quiet: bool, sets: list[str]) -> None:
    try:
        cfg = load_study_config(config, _parse_sets(sets))
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    out = out or Path("runs") / cfg.name
    try:
        report, _ = run_study(cfg, out, resume=resume, force=force, quiet=quiet)
    except RunDirError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except StageFailed as e:
        typer.echo(
            f"error: {e}\nEverything finished before it is kept in {out}; fix the cause and re-run with "
            f"--resume (details: {out}/.stages/).",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"report: {report.resolve()}")


def run(
    config: Annotated[Path, typer.Argument(help="study YAML (see configs/*.yaml)")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="run directory (default runs/<name>)")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue an existing run; finished stages are skipped")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="delete an existing run directory first")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars (CI logs)")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a field: --set data.path=/data")
    ] = None,
) -> None:
    """Run a whole study: data -> augmentation -> (GAN) -> models -> evaluation -> explanations -> report."""
    _run(config, out, resume, force, quiet, set_ or [])


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/demo"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    force: Annotated[bool, typer.Option("--force", help="start over instead of resuming")] = False,
) -> None:
    """The embedded default, fully offline: synthetic birds, CNN + Lite0, all explainers, one report."""
    _run(bundled_config("demo"), out, resume=not force, force=force, quiet=quiet, sets=[])


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
