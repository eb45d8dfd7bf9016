"""``birdlens data synth``: the typer-ready command (registered under the ``data`` group by ``data.cli``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def synth_command(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write the dataset to (must be empty unless --force)."
    ),
    classes: int = typer.Option(10, "--classes", min=1, help="Number of bird species (part combinations)."),
    per_class: int = typer.Option(
        100, "--per-class", min=1, help="Images per species (all splits together)."
    ),
    size: int = typer.Option(224, "--size", min=32, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same classes, same bytes."),
    force: bool = typer.Option(False, "--force", help="Replace a previous dataset in --out."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes (default: up to 2)."),
    sheet: Path | None = typer.Option(None, "--sheet", help="Also write a contact sheet PNG here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    shortcut: str | None = typer.Option(
        None, "--shortcut", help="Also plant a cue (patch, border, tint): see `birdlens data plant-shortcut`."
    ),
    shortcut_classes: int = typer.Option(
        3, "--shortcut-classes", min=1, help="Classes the cue is planted in."
    ),
    shortcut_p: float = typer.Option(
        0.9, "--shortcut-p", min=0, max=1, help="Share of their train/valid images."
    ),
    shortcut_test_p: float = typer.Option(
        0.5, "--shortcut-test-p", min=0, max=1, help="Share of test images (all classes) cued."
    ),
) -> None:
    """Draw a synthetic part-based bird dataset (images, part masks, specs, parts.json, manifest.csv)."""
    from birdlens.data.shortcuts import choose_classes, make_cue, plant_shortcut
    from birdlens.data.synth.dataset import generate_dataset

    t0 = time.perf_counter()
    try:
        cue = make_cue(shortcut) if shortcut is not None else None
        if cue is not None and shortcut_classes > classes:
            raise ValueError(f"--shortcut-classes {shortcut_classes} is more than the {classes} --classes")
        manifest = generate_dataset(
            out,
            classes=classes,
            per_class=per_class,
            size=size,
            seed=seed,
            quiet=quiet,
            force=force,
            workers=workers,
        )
        if cue is not None:
            chosen = choose_classes(manifest.classes, shortcut_classes, seed)
            manifest = plant_shortcut(
                manifest, None, cue, chosen, p=shortcut_p, test_p=shortcut_test_p, seed=seed, quiet=quiet
            ).manifest
            typer.echo(
                f"planted a {cue.kind} cue in {', '.join(chosen)}; ground truth in {out}/shortcut.json"
            )
    except (FileExistsError, NotADirectoryError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    seconds = time.perf_counter() - t0
    per_split = {s: len(manifest.split(s)) for s in manifest.splits}
    typer.echo(
        f"wrote {len(manifest)} images of {len(manifest.classes)} classes to {out} in {seconds:.1f} s "
        f"({', '.join(f'{k} {v}' for k, v in per_split.items())}); parts and classes in {out}/parts.json"
    )
    if sheet is not None:
        from birdlens.data.synth.sheet import contact_sheet

        typer.echo(f"contact sheet: {contact_sheet(sheet, out)}")
