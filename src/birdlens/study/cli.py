"""``birdlens run STUDY.yaml``, ``birdlens demo`` and ``birdlens gan ablation`` (the study's GAN experiment)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from birdlens.runs.layout import RunDirError
from birdlens.study.config import ConfigError, load_study_config
from birdlens.study.run import bundled_config, run_study
from birdlens.study.stages import StageFailed
from birdlens.utils.env import set_threads


def _parse_sets(sets: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in sets:
        if "=" not in item:
            raise typer.BadParameter(f"--set wants KEY=VALUE (e.g. data.path=/data/birds), got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _int_list(text: str, option: str) -> list[int]:
    """``"10,40"`` -> ``[10, 40]``; anything else is a usage error naming the option."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"wants whole numbers separated by commas (e.g. 10,40), got {text!r}", param_hint=option
        ) from None


def _run(config: Path, out: Path | None, resume: bool, force: bool, quiet: bool, sets: list[str]) -> None:
    try:
        cfg = load_study_config(config, _parse_sets(sets))
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    out = out or Path("runs") / cfg.name
    try:
        report, _ = run_study(cfg, out, resume=resume, force=force, quiet=quiet)
    except (RunDirError, ConfigError) as e:
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


def gan_ablation(
    data: Annotated[Path, typer.Option(help="real images with train and test (or valid) splits")],
    out: Annotated[Path, typer.Option(help="folder for ablation.json/.md/.png and the GAN runs")],
    budgets: Annotated[str, typer.Option(help="real images per class, comma list")] = "10,40",
    seeds: Annotated[str, typer.Option(help="comma list (>= 3 for intervals worth reading)")] = "0,1,2",
    image_size: int = 32,
    arch: str = "cgan",
    gan_iterations: int = 500,
    gan_batch_size: int = 16,
    gan_width: int = 16,
    gan_per_class: Annotated[int | None, typer.Option(help="generated per class (default: = budget)")] = None,
    classic_copies: int = 2,
    classes: Annotated[list[str] | None, typer.Option(help="only these classes (repeatable)")] = None,
    threads: int | None = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no progress bar (also BIRDLENS_QUIET=1)")
    ] = False,
) -> None:
    """real / real+classic / real+GAN / real+classic+GAN at small real budgets, several seeds, 95% intervals."""
    from birdlens.augment.gan.config import GANConfig
    from birdlens.augment.gan.data import load_images, resolve_manifest, select
    from birdlens.augment.gan.features import Lite0Features
    from birdlens.study.ablation import AblationConfig, markdown_table, run_ablation

    budget_list, seed_list = _int_list(budgets, "--budgets"), _int_list(seeds, "--seeds")
    set_threads(threads)
    try:
        manifest = resolve_manifest(data)
        train_m = select(manifest, "train", classes)
        names = train_m.classes
        test_split = "test" if "test" in manifest.splits else "valid"
        train_set = load_images(train_m, image_size, names)
        test_set = load_images(select(manifest, test_split, names), image_size, names)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    cfg = AblationConfig(
        budgets=budget_list,
        seeds=seed_list,
        classic_copies=classic_copies,
        gan_per_class=gan_per_class,
        gan=GANConfig(
            arch=arch,
            image_size=image_size,
            iterations=gan_iterations,
            batch_size=gan_batch_size,
            g_width=gan_width,
            d_width=gan_width,
            sample_every=max(gan_iterations // 2, 1),
            checkpoint_every=max(gan_iterations // 4, 1),
        ),
    )
    result = run_ablation(train_set, test_set, Lite0Features(), out, cfg, quiet=quiet)
    typer.echo(markdown_table(result))


def register(app: typer.Typer) -> None:
    from birdlens.augment.gan.cli import app as gan_app

    app.command("run")(run)
    app.command("demo")(demo)
    gan_app.command("ablation")(gan_ablation)
