"""The data report: what is in a dataset, what was skipped and why, duplicates and leaks.

:func:`scan_data` runs the whole data pass (discover -> validate -> duplicates -> optional dedupe -> select);
:func:`build_data_report` returns its JSON-ready dict (what ``birdlens data inspect --json`` writes and the
study runner stores as ``data/report.json``); :func:`render_report` prints it as rich tables.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdlens.data.cache import ImageCache
from birdlens.data.duplicates import DEFAULT_NEAR_THRESHOLD, DuplicatePair, dedupe, find_duplicates
from birdlens.data.images import DEFAULT_LIMITS, ImageInfo, ImageLimits, Skipped
from birdlens.data.layouts import Discovery, discover, missing_from_splits
from birdlens.data.manifest import SPLITS, Manifest, Record
from birdlens.data.select import Selection, rank_classes, select
from birdlens.data.splits import DEFAULT_RATIOS
from birdlens.data.validate import ValidationResult, display_path, validate_manifest

REPORT_VERSION = 1


class DataUnusable(ValueError):
    """The data cannot train a classifier; the message is one sentence saying why and what to do."""


@dataclass
class DataScan:
    """Everything one pass over a dataset learnt; :meth:`report` turns it into the JSON report."""

    source: str
    layout: str
    manifest: Manifest  # the usable (validated, optionally deduped, selected) records
    infos: list[ImageInfo]  # aligned with manifest.records
    validation: ValidationResult
    pairs: list[DuplicatePair]  # indices into validation.manifest
    deduped: list[Record] = field(default_factory=list)
    selection: Selection | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def problem(self) -> str | None:
        """One sentence when the data is not usable, else None."""
        classes = self.manifest.classes
        n_bad = len(self.validation.skipped)
        if self.validation.n_checked == 0:
            return f"no images found in {self.source}: class folders are empty or hold no image files."
        if len(self.validation.manifest) == 0:
            return (
                f"all {n_bad} image files in {self.source} failed validation "
                f"(first reason: {self.validation.skipped[0].reason})."
            )
        if not classes:
            return f"no classes left in {self.source} after selection: lower --min-per-class or check --top."
        if len(classes) < 2:
            return f"only one class ({classes[0]}) in {self.source}: a classifier needs at least two."
        if not self.manifest.split("train").records:
            return f"no training images in {self.source}: add a train/ folder or let birdlens split the data."
        return None

    def report(self) -> dict[str, Any]:
        return _build_report(self)


def scan_data(
    source: str | os.PathLike[str] | Manifest | Discovery,
    *,
    seed: int = 0,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    top: int | None = None,
    per_class: int | None = None,
    min_per_class: int = 1,
    limits: ImageLimits = DEFAULT_LIMITS,
    near_threshold: int | None = DEFAULT_NEAR_THRESHOLD,
    dedupe_splits: bool = False,
    cache: ImageCache | str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> DataScan:
    """Discover (if given a path), validate, find duplicates, optionally dedupe, then select.

    With ``top``, only the ``top`` largest classes plus a few spares (by raw file count) are validated, so
    asking for 10 of 525 Kaggle species does not decode 90,000 photos; a spare replaces a class whose images
    turn out bad.
    """
    t0 = time.perf_counter()
    if isinstance(source, Discovery):
        disc = source
    elif isinstance(source, Manifest):
        disc = Discovery(source, "manifest", source.root or Path("."))
    else:
        disc = discover(source, seed=seed, ratios=ratios)
    notes = list(disc.notes)
    candidates = disc.manifest
    if top is not None:
        ranked = rank_classes(candidates)
        spare = top + max(2, top // 5)
        if len(ranked) > spare:
            keep = {label for label, _ in ranked[:spare]}
            candidates = candidates.filter(labels=keep)
            notes.append(
                f"validated only the {spare} largest classes (top {top} plus spares) of {len(ranked)}"
            )
    val = validate_manifest(candidates, limits, cache=cache, workers=workers, progress=progress)
    pairs = find_duplicates(val.manifest, val.infos, near_threshold)
    good, infos, dropped = val.manifest, list(val.infos), []
    if dedupe_splits and pairs:
        good, infos, dropped = dedupe(val.manifest, val.infos, pairs)
        notes.append(f"--dedupe dropped {len(dropped)} duplicate image(s) (the copy in the later split)")
    selection = None
    if top is not None or per_class is not None or min_per_class > 1:
        selection = select(good, top=top, per_class=per_class, min_per_class=min_per_class, seed=seed)
        infos = [infos[i] for i in selection.kept]
        good = selection.manifest
    root = disc.root
    return DataScan(
        source=str(disc.root) if isinstance(source, (Manifest, Discovery)) else str(source),
        layout=disc.layout,
        manifest=good,
        infos=infos,
        validation=val,
        pairs=pairs,
        deduped=dropped,
        selection=selection,
        notes=notes,
        skipped=list(disc.skipped) + list(val.skipped),
        settings={
            "seed": seed,
            "ratios": list(ratios),
            "top": top,
            "per_class": per_class,
            "min_per_class": min_per_class,
            "min_side": limits.min_side,
            "max_aspect": limits.max_aspect,
            "max_pixels": limits.max_pixels,
            "near_threshold": near_threshold,
            "dedupe": dedupe_splits,
            "root": str(root),
        },
        seconds=time.perf_counter() - t0,
    )


def build_data_report(source: str | os.PathLike[str] | Manifest | Discovery, **kwargs: Any) -> dict[str, Any]:
    """The JSON-ready data report of a dataset (``kwargs`` as for :func:`scan_data`)."""
    return scan_data(source, **kwargs).report()


# ------------------------------------------------------------------------------------------------ report
def _size_summary(infos: Sequence[ImageInfo]) -> dict[str, Any]:
    if not infos:
        return {}
    ws = [i.width for i in infos]
    hs = [i.height for i in infos]
    sizes = Counter(f"{i.width}x{i.height}" for i in infos)
    return {
        "width": {"min": min(ws), "median": statistics.median(ws), "max": max(ws)},
        "height": {"min": min(hs), "median": statistics.median(hs), "max": max(hs)},
        "distinct_sizes": len(sizes),
        "most_common": [[s, n] for s, n in sizes.most_common(5)],
        "modes": dict(Counter(i.mode for i in infos).most_common()),
        "formats": dict(Counter(i.format or "?" for i in infos).most_common()),
        "animated": sum(1 for i in infos if i.n_frames > 1),
    }


def _build_report(scan: DataScan) -> dict[str, Any]:
    m = scan.manifest
    root = Path(scan.settings.get("root", "."))
    counts = m.counts()
    classes = {
        label: {**{s: per.get(s, 0) for s in SPLITS}, "total": sum(per.values())}
        for label, per in sorted(counts.items())
    }
    vrecs = scan.validation.manifest.records
    in_final = {r.path for r in m.records}
    dropped = {r.path for r in scan.deduped}
    dup_rows = []
    for p in scan.pairs:
        a, b = vrecs[p.a], vrecs[p.b]
        if not ({a.path, b.path} <= (in_final | dropped)):
            continue  # one end was not selected: not a duplicate *of this dataset*
        row = {
            "a": display_path(a.path, root),
            "b": display_path(b.path, root),
            "split_a": a.split,
            "split_b": b.split,
            "label_a": a.label,
            "label_b": b.label,
            "kind": p.kind,
            "distance": p.distance,
            "leak": a.split != b.split,
            "label_conflict": a.label != b.label,
            "dropped": display_path(b.path if b.path in dropped else a.path, root)
            if (a.path in dropped or b.path in dropped)
            else None,
        }
        dup_rows.append(row)
    problem = scan.problem()
    return {
        "report_version": REPORT_VERSION,
        "source": scan.source,
        "layout": scan.layout,
        "usable": problem is None,
        "problem": problem,
        "n_images": len(m),
        "n_classes": len(counts),
        "n_files_checked": scan.validation.n_checked,
        "n_skipped": len(scan.skipped),
        "splits": {s: len(m.split(s)) for s in SPLITS},
        "classes": classes,
        "missing_from_splits": missing_from_splits(m),
        "image_sizes": _size_summary(scan.infos),
        "skipped": [s.to_dict() for s in scan.skipped],
        "skipped_reasons": _reason_counts(scan.skipped),
        "duplicates": dup_rows,
        "leaks": [r for r in dup_rows if r["leak"]],
        "dedupe_dropped": [display_path(r.path, root) for r in scan.deduped],
        "selection": scan.selection.to_dict() if scan.selection else None,
        "notes": scan.notes,
        "settings": scan.settings,
        "seconds": round(scan.seconds, 3),
        "validated_from_cache": scan.validation.from_cache,
    }


def _reason_counts(skipped: Sequence[Skipped]) -> dict[str, int]:
    """Reasons without their per-file details ("too small (20x20 ...)" -> "too small")."""
    return dict(Counter(s.reason.split(" (")[0] for s in skipped).most_common())


# ------------------------------------------------------------------------------------------------ render
def render_report(report: dict[str, Any], console: Any = None, max_rows: int = 40) -> None:
    """Print the report as rich tables (classes, sizes, skipped files, duplicates and leaks)."""
    from rich.console import Console

    con = console or Console()
    _render_summary(con, report)
    _render_classes(con, report, max_rows)
    _render_sizes(con, report)
    _render_skipped(con, report, max_rows)
    _render_duplicates(con, report, max_rows)
    _render_verdict(con, report)


def _render_summary(con: Any, report: dict[str, Any]) -> None:
    """The title, the one-line counts, and the notes."""
    n_img, n_cls = report["n_images"], report["n_classes"]
    sp = report["splits"]
    con.print()
    con.rule(f"[bold]birdlens data report[/]  {report['source']}  [dim]({report['layout']})[/]")
    leaks = report["leaks"]
    dup = report["duplicates"]
    con.print(
        "  "
        + "  ·  ".join(
            [
                f"[bold]{n_img:,}[/] usable images",
                f"[bold]{n_cls}[/] classes",
                " / ".join(f"{s} [bold]{sp[s]:,}[/]" for s in SPLITS),
            ]
        )
    )
    con.print(
        "  "
        + "  ·  ".join(
            [
                f"[{'yellow' if report['n_skipped'] else 'green'}]{report['n_skipped']} skipped[/]",
                f"[{'yellow' if dup else 'green'}]{len(dup)} duplicate pair(s)[/]",
                f"[{'red' if leaks else 'green'}]{len(leaks)} leak(s) across splits[/]",
            ]
        )
    )
    for note in report["notes"]:
        con.print(f"  [yellow]•[/] {note}")


def _render_classes(con: Any, report: dict[str, Any], max_rows: int) -> None:
    """Classes, largest first, with a red zero where a split that has images lacks the class."""
    from rich import box
    from rich.table import Table

    classes = report["classes"]
    if not classes:
        return
    n_img, n_cls = report["n_images"], report["n_classes"]
    sp = report["splits"]
    t = Table(box=box.SIMPLE_HEAD, title="classes (largest first)", title_justify="left", pad_edge=False)
    t.add_column("#", justify="right", style="dim")
    t.add_column("class")
    for s in SPLITS:
        t.add_column(s, justify="right")
    t.add_column("total", justify="right", style="bold")
    ranked = sorted(classes.items(), key=lambda kv: (-kv[1]["total"], kv[0]))
    for i, (label, c) in enumerate(ranked[:max_rows]):
        cells = [f"[red]{c[s]}[/]" if c[s] == 0 and sp[s] > 0 else str(c[s]) for s in SPLITS]
        t.add_row(str(i + 1), label, *cells, str(c["total"]))
    if len(ranked) > max_rows:
        last, c = ranked[-1]
        t.add_row("", f"[dim]… {len(ranked) - max_rows} more (smallest: {last}, {c['total']})[/]", *[""] * 4)
    t.add_section()
    t.add_row("", f"[bold]{n_cls} classes[/]", *[f"{sp[s]:,}" for s in SPLITS], f"{n_img:,}")
    con.print(t)


def _render_sizes(con: Any, report: dict[str, Any]) -> None:
    """One line of image sizes, then the Pillow modes and formats."""
    sizes = report["image_sizes"]
    if not sizes:
        return
    n_img = report["n_images"]
    if sizes["distinct_sizes"] == 1:
        line = f"all {n_img:,} images are {sizes['most_common'][0][0]}"
    else:
        w, h = sizes["width"], sizes["height"]
        common = ", ".join(f"{s} ({n:,})" for s, n in sizes["most_common"][:3])
        line = (
            f"width {w['min']}–{w['max']} (median {w['median']:g}), height {h['min']}–{h['max']} "
            f"(median {h['median']:g}); {sizes['distinct_sizes']:,} distinct sizes, most common {common}"
        )
    modes = ", ".join(f"{k} {v:,}" for k, v in sizes["modes"].items())
    fmts = ", ".join(f"{k} {v:,}" for k, v in sizes["formats"].items())
    con.print(f"[bold]image sizes[/]  {line}\n[bold]modes[/]  {modes}   [bold]formats[/]  {fmts}")


def _render_skipped(con: Any, report: dict[str, Any], max_rows: int) -> None:
    """The skipped files and folders with their reasons (the first ``max_rows // 2``; all are in --json)."""
    from rich import box
    from rich.table import Table

    skipped = report["skipped"]
    if not skipped:
        return
    t = Table(
        box=box.SIMPLE_HEAD, title=f"skipped files ({len(skipped)})", title_justify="left", pad_edge=False
    )
    t.add_column("file", overflow="fold")
    t.add_column("reason", style="yellow", overflow="fold")
    for s in skipped[: max_rows // 2]:
        t.add_row(s["path"], s["reason"])
    if len(skipped) > max_rows // 2:
        t.add_row(f"[dim]… {len(skipped) - max_rows // 2} more (see --json)[/]", "")
    con.print(t)
    if len(skipped) > max_rows // 2 and len(report["skipped_reasons"]) > 1:
        con.print("  by reason: " + ", ".join(f"{k} {v}" for k, v in report["skipped_reasons"].items()))


def _render_duplicates(con: Any, report: dict[str, Any], max_rows: int) -> None:
    """Duplicate pairs, leaks across splits first, and what to do about leaks."""
    from rich import box
    from rich.table import Table

    dup, leaks = report["duplicates"], report["leaks"]
    if not dup:
        return
    t = Table(
        box=box.SIMPLE_HEAD,
        title=f"duplicate pairs ({len(dup)}, {len(leaks)} across splits = leaks)",
        title_justify="left",
        pad_edge=False,
    )
    t.add_column("")
    t.add_column("kind")
    t.add_column("image a", overflow="fold")
    t.add_column("image b", overflow="fold")
    t.add_column("note", overflow="fold")
    ordered = sorted(dup, key=lambda r: (not r["leak"], r["a"]))
    for r in ordered[: max_rows // 2]:
        tag = "[bold red]LEAK[/]" if r["leak"] else "dup"
        kind = "exact" if r["kind"] == "exact" else f"near (d={r['distance']})"
        note = []
        if r["label_conflict"]:
            note.append("[red]different labels[/]")
        if r["dropped"]:
            note.append(f"dropped {r['dropped']}")
        t.add_row(tag, kind, r["a"], r["b"], "; ".join(note))
    if len(dup) > max_rows // 2:
        t.add_row("", "", f"[dim]… {len(dup) - max_rows // 2} more (see --json)[/]", "", "")
    con.print(t)
    if leaks and not report["dedupe_dropped"]:
        con.print(
            "  [red]leaks inflate test accuracy[/]: re-run with --dedupe to drop the later split's copy"
        )


def _render_verdict(con: Any, report: dict[str, Any]) -> None:
    """Classes missing from a split after selection (unless a note said so), then usable or why not."""
    told = " ".join(n for n in report["notes"] if "missing from" in n)
    for mrow in [m for m in report["missing_from_splits"] if repr(m["class"]) not in told][:10]:
        con.print(
            f"  [yellow]•[/] class [bold]{mrow['class']}[/] has no images in {', '.join(mrow['missing_from'])}"
            " after selection"
        )
    if report["usable"]:
        con.print(
            f"[green]✓ usable[/]  [dim]({report['n_files_checked']:,} files checked in {report['seconds']:.1f} s)[/]"
        )
    else:
        con.print(f"[bold red]✗ not usable:[/] {report['problem']}")
