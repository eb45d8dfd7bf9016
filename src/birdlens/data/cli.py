"""``birdlens data inspect | prepare | download | synth``: thin wrappers over :mod:`birdlens.data`.

Every failure a user can cause (a wrong path, unusable data, no network) ends with exit code 2 and one
sentence on stderr, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from birdlens.data.synth.cli import synth_command

data_app = typer.Typer(
    help="Inspect, prepare, download or generate image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def register(app: typer.Typer) -> None:
    """Attach ``birdlens data ...`` to the top-level app."""
    app.add_typer(data_app, name="data")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.replace("/", ",").split(","))
    except ValueError:
        raise typer.BadParameter("--ratios wants three numbers, e.g. 0.7,0.15,0.15") from None
    if len(parts) != 3:
        raise typer.BadParameter("--ratios wants three numbers, e.g. 0.7,0.15,0.15")
    return parts  # type: ignore[return-value]


Top = Annotated[
    int | None, typer.Option("--top", min=1, help="Keep the N classes with most images (ties by name).")
]
PerClass = Annotated[
    int | None,
    typer.Option("--per-class", min=1, help="At most K images per class (seeded, stratified by split)."),
]
MinPerClass = Annotated[
    int, typer.Option("--min-per-class", min=1, help="Drop classes with fewer images (with a warning).")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for splits and subsampling.")]
Ratios = Annotated[str, typer.Option("--ratios", help="train,valid,test shares when the data has no split.")]
MinSide = Annotated[int, typer.Option("--min-side", min=1, help="Skip images with a side below this (px).")]
MaxAspect = Annotated[
    float, typer.Option("--max-aspect", min=1.0, help="Skip images longer than this ratio.")
]
Near = Annotated[
    int, typer.Option("--near", min=-1, max=64, help="dHash distance for near duplicates (-1: off).")
]
Dedupe = Annotated[bool, typer.Option("--dedupe", help="Drop the later split's copy of each duplicate.")]
Cache = Annotated[
    Path | None, typer.Option("--cache", help="Decoded-image cache folder (makes re-scans fast).")
]
Workers = Annotated[int, typer.Option("--workers", min=1, max=32, help="Decoding threads.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


@data_app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Dataset folder or CSV manifest.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    top: Top = None,
    per_class: PerClass = None,
    min_per_class: MinPerClass = 1,
    seed: Seed = 0,
    ratios: Ratios = "0.7,0.15,0.15",
    min_side: MinSide = 32,
    max_aspect: MaxAspect = 10.0,
    near: Near = 5,
    dedupe: Dedupe = False,
    cache: Cache = None,
    workers: Workers = 1,
    quiet: Quiet = False,
) -> None:
    """Report classes, per-split counts, image sizes, skipped files, duplicates and leaks."""
    import warnings

    from birdlens.data.images import ImageLimits
    from birdlens.data.layouts import LayoutError
    from birdlens.data.report import render_report, scan_data
    from birdlens.utils.atomic import write_json

    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # dropped classes are in the report's selection block
            scan = scan_data(
                path,
                seed=seed,
                ratios=_ratios(ratios),
                top=top,
                per_class=per_class,
                min_per_class=min_per_class,
                limits=ImageLimits(min_side=min_side, max_aspect=max_aspect),
                near_threshold=None if near < 0 else near,
                dedupe_splits=dedupe,
                cache=cache,
                workers=workers,
                progress=not quiet,
            )
    except (LayoutError, ValueError) as e:
        raise _fail(str(e)) from None
    report = scan.report()
    if scan.selection and scan.selection.dropped_classes:
        below = {k: v for k, v in scan.selection.dropped_classes.items() if "minimum" in v}
        if below:
            report["notes"].append(
                f"dropped {len(below)} class(es) below --min-per-class {min_per_class}: "
                + ", ".join(sorted(below)[:10])
            )
    if json_out is not None:
        write_json(json_out, report)
    render_report(report)
    if json_out is not None:
        typer.echo(f"report written to {json_out}")
    if not report["usable"]:
        raise _fail(report["problem"])


@data_app.command()
def prepare(
    path: Annotated[Path, typer.Argument(help="Dataset folder or CSV manifest.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the prepared dataset to.")],
    top: Top = None,
    per_class: PerClass = None,
    min_per_class: MinPerClass = 1,
    seed: Seed = 0,
    size: Annotated[
        int, typer.Option("--size", min=8, help="Output side (resize short side, centre crop).")
    ] = 224,
    dedupe: Dedupe = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out.")] = False,
    ratios: Ratios = "0.7,0.15,0.15",
    min_side: MinSide = 32,
    max_aspect: MaxAspect = 10.0,
    near: Near = 5,
    cache: Cache = None,
    workers: Workers = 1,
    quiet: Quiet = False,
) -> None:
    """Write the selected, validated, resized subset (split folders + manifest.csv + data_report.json)."""
    import warnings

    from birdlens.data.images import ImageLimits
    from birdlens.data.layouts import LayoutError
    from birdlens.data.prepare import OutputExists, prepare_dataset
    from birdlens.data.report import DataUnusable

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            res = prepare_dataset(
                path,
                out,
                top=top,
                per_class=per_class,
                min_per_class=min_per_class,
                seed=seed,
                size=size,
                dedupe=dedupe,
                force=force,
                ratios=_ratios(ratios),
                limits=ImageLimits(min_side=min_side, max_aspect=max_aspect),
                near_threshold=None if near < 0 else near,
                cache=cache,
                workers=workers,
                progress=not quiet,
            )
    except (OutputExists, LayoutError, DataUnusable, ValueError) as e:
        raise _fail(str(e)) from None
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    rep = res.report
    splits = ", ".join(f"{k} {v}" for k, v in rep["prepared"]["splits"].items())
    typer.echo(
        f"wrote {len(res.manifest)} images of {len(res.manifest.classes)} classes ({splits}) at "
        f"{size}x{size} to {res.out} in {res.seconds:.1f} s; {rep['n_skipped']} skipped, "
        f"{len(rep['leaks'])} leak(s){' (deduped)' if dedupe else ''}; report: {res.out / 'data_report.json'}"
    )
    for label, folder in rep["prepared"]["class_folders"].items():
        typer.echo(f"note: class {label!r} is written to the folder {folder!r} (safe folder name)", err=True)
    if rep["prepared"]["removed_stale"]:
        typer.echo(
            f"note: removed {len(rep['prepared']['removed_stale'])} folder(s) an interrupted prepare left: "
            + ", ".join(rep["prepared"]["removed_stale"]),
            err=True,
        )


@data_app.command()
def download(
    source: Annotated[str, typer.Argument(help="kaggle-birds or cub200")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to download into.")],
    url: Annotated[str | None, typer.Option("--url", help="Override the archive URL (cub200).")] = None,
    md5: Annotated[str | None, typer.Option("--md5", help="Override the expected MD5 (cub200).")] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the server.")
    ] = 5.0,
    quiet: Quiet = False,
) -> None:
    """Download a public bird dataset (fails fast and clearly when offline; resumes when re-run)."""
    from birdlens.data.download import DownloadError, download_cub200, download_kaggle_birds

    key = source.strip().lower().replace("_", "-")
    try:
        if key in ("cub200", "cub", "cub-200", "cub-200-2011"):
            root = download_cub200(out, url=url, md5=md5, timeout=timeout, progress=not quiet)
        elif key in ("kaggle-birds", "kaggle"):
            root = download_kaggle_birds(out, timeout=timeout)
        else:
            raise _fail(f"unknown source {source!r}: choose kaggle-birds or cub200.")
    except DownloadError as e:
        raise _fail(str(e)) from None
    typer.echo(f"downloaded {key} to {root}; next: birdlens data inspect {root}")


@data_app.command("plant-shortcut")
def plant_shortcut_command(
    path: Annotated[Path, typer.Argument(help="Dataset folder or CSV manifest (needs a train split).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Empty folder to write the planted copy to.")],
    cue: Annotated[
        str, typer.Option("--cue", help="Cue kind: patch, border or tint (or a registered one).")
    ] = "patch",
    classes: Annotated[
        str | None, typer.Option("--classes", help="Comma-separated classes to plant the cue in.")
    ] = None,
    n_classes: Annotated[
        int,
        typer.Option("--n-classes", min=1, help="Without --classes: this many classes, drawn with --seed."),
    ] = 3,
    p: Annotated[
        float, typer.Option("--p", min=0, max=1, help="Share of their train/valid images cued.")
    ] = 0.9,
    test_p: Annotated[
        float, typer.Option("--test-p", min=0, max=1, help="Share of test images (all classes) cued.")
    ] = 0.5,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Plant a shortcut cue in chosen classes (train/valid), decorrelated in test; masks in shortcut.json."""
    from birdlens.data.layouts import LayoutError, load_manifest
    from birdlens.data.shortcuts import choose_classes, make_cue, plant_shortcut

    try:
        cue_obj = make_cue(cue)
        manifest = load_manifest(path, seed=seed)
        chosen = (
            [c for c in classes.split(",") if c.strip()]
            if classes
            else choose_classes(manifest.classes, n_classes, seed)
        )
        res = plant_shortcut(manifest, out, cue_obj, chosen, p=p, test_p=test_p, seed=seed, quiet=quiet)
    except (LayoutError, ValueError, FileExistsError) as e:
        raise _fail(str(e)) from None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(res.counts.items()))
    typer.echo(
        f"planted a {cue_obj.kind} cue in {', '.join(res.classes)} (p={p}; test_p={test_p} in all classes): "
        f"{counts} images cued; {len(res.manifest)} images written to {out}; ground truth in "
        f"{out / 'shortcut.json'}"
    )


# the synthetic dataset generator (birdlens.data.synth, the synth engineer's module), listed last
data_app.command("synth")(synth_command)
