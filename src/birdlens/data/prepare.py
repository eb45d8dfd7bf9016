"""Write the selected, validated, resized subset of a dataset, so later stages never decode the originals.

Output (``OUT``)::

    train/<CLASS>/<name>.jpg   valid/...   test/...      aspect-preserving resize + centre crop; JPEG q95
                                                          (PNG when the source was lossless: PNG, BMP, TIFF...)
    masks/<split>/<CLASS>/<name>.png                      only for records with a mask (nearest-neighbour)
    manifest.csv                                          birdlens CSV (boxes moved into the new pixel frame)
    data_report.json                                      the data report of the source + the selection

The output is built in a hidden staging folder next to ``OUT`` (:mod:`birdlens.data.staging`) and moved into
place at the end, so an interrupted run never leaves a half-written dataset that looks complete, ``--force``
replaces an old output only once the new one is finished, and the next run removes what a killed one left.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from birdlens.data.cache import ImageCache
from birdlens.data.duplicates import DEFAULT_NEAR_THRESHOLD
from birdlens.data.images import (
    DEFAULT_LIMITS,
    BadImage,
    ImageLimits,
    center_crop_box,
    load_resized,
    read_image_bytes,
    transform_box,
)
from birdlens.data.manifest import Manifest, Record
from birdlens.data.report import DataScan, DataUnusable, scan_data
from birdlens.data.splits import DEFAULT_RATIOS
from birdlens.data.staging import clean_stale, make_staging_dir, staging_name
from birdlens.utils.atomic import write_json
from birdlens.utils.console import track

JPEG_QUALITY = 95
# Lossless sources stay lossless (PNG), so synthetic images keep exact pixels; photos become JPEG q95.
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF", "PPM", "TGA", "GIF"})


class OutputExists(FileExistsError):
    """The output folder is not empty and ``force`` was not given."""


@dataclass
class PrepareResult:
    out: Path
    manifest: Manifest
    report: dict[str, Any]
    seconds: float


_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_MAX_NAME_BYTES = 200  # file systems allow 255 bytes per name; room for a hash suffix and an extension


def _safe_name(name: str) -> str:
    """One file or folder name for ``name``: no slashes or control characters, not ``.``/``..`` or hidden.

    Unicode is kept; a name too long for a file system is cut and told apart by a hash of the whole.
    """
    safe = _UNSAFE.sub("_", name).strip()
    safe = re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe) or "_"
    if len(safe.encode("utf-8")) > _MAX_NAME_BYTES:
        digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]
        safe = safe.encode("utf-8")[:_MAX_NAME_BYTES].decode("utf-8", "ignore") + "_" + digest
    return safe


def class_folders(labels: list[str]) -> tuple[dict[str, str], list[str]]:
    """Each class's folder name, and a note per class whose name had to change.

    Raises :class:`DataUnusable` naming both classes when two map to one folder (also when they differ only
    in case, which a case-insensitive file system would merge).
    """
    folders: dict[str, str] = {}
    owner: dict[str, str] = {}
    notes: list[str] = []
    for label in sorted(labels):
        folder = _safe_name(label)
        key = folder.casefold()
        if key in owner:
            raise DataUnusable(
                f"classes {owner[key]!r} and {label!r} both map to the folder name {folder!r}: "
                "rename one of them in the source (its folder or CSV label)."
            )
        owner[key] = label
        folders[label] = folder
        if folder != label:
            notes.append(
                f"class {label!r} is written to the folder {folder!r} (a folder name cannot be '.' or '..', "
                "start with '.', or hold slashes or control characters)"
            )
    return folders, notes


def check_output(source: Path, out: Path, force: bool) -> None:
    """Refuse to clobber: a non-empty ``out`` needs ``force``; ``out`` may not contain or be inside the source."""
    src = source.resolve()
    dst = out.resolve()
    src_dir = src if src.is_dir() else src.parent
    if dst == src_dir or src_dir.is_relative_to(dst):
        raise OutputExists(f"--out {out} contains the source data: choose a folder outside {source}.")
    if dst.is_relative_to(src_dir):
        raise OutputExists(
            f"--out {out} is inside the source folder {source}: choose a folder outside it, "
            "or the next scan of the source would read the prepared copy as data."
        )
    if out.exists() and not out.is_dir():
        raise OutputExists(f"--out {out} is a file: choose a folder.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExists(
            f"{out} exists and is not empty: choose another --out or pass --force to replace it."
        )


def prepare_dataset(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    top: int | None = None,
    per_class: int | None = None,
    min_per_class: int = 1,
    seed: int = 0,
    size: int = 224,
    dedupe: bool = False,
    force: bool = False,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    limits: ImageLimits = DEFAULT_LIMITS,
    near_threshold: int | None = DEFAULT_NEAR_THRESHOLD,
    cache: ImageCache | str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> PrepareResult:
    """Scan ``source``, select, and write the prepared copy to ``out`` (see module doc).

    Raises :class:`OutputExists` (before any work) and :class:`DataUnusable` with a one-sentence reason.
    """
    if size < 8:
        raise ValueError("--size must be at least 8 pixels")
    t0 = time.perf_counter()
    source, out = Path(source), Path(out)
    check_output(source, out, force)
    scan = scan_data(
        source,
        seed=seed,
        ratios=ratios,
        top=top,
        per_class=per_class,
        min_per_class=min_per_class,
        limits=limits,
        near_threshold=near_threshold,
        dedupe_splits=dedupe,
        cache=cache,
        workers=workers,
        progress=progress,
    )
    problem = scan.problem()
    if problem:
        raise DataUnusable(problem)
    report = scan.report()
    folders, renamed = class_folders(scan.manifest.classes)
    report["notes"].extend(renamed)

    cleaned = clean_stale(out)  # what a killed run left (kept out of the try: it is not this run's)
    tmp = make_staging_dir(out)
    try:
        records, failed = _write_images(scan, tmp, folders, size, limits, progress)
        manifest = Manifest(records, tmp)
        manifest.to_csv(tmp / "manifest.csv")
        report["prepared"] = {
            "out": str(out),
            "size": size,
            "resize": "aspect-preserving resize of the short side, centre crop",
            "format": f"JPEG quality {JPEG_QUALITY} 4:4:4; PNG for lossless sources",
            "n_written": len(records),
            "failed": failed,
            "splits": {s: len(manifest.split(s)) for s in ("train", "valid", "test")},
            "removed_stale": cleaned,
            "class_folders": {k: v for k, v in folders.items() if k != v},
        }
        write_json(tmp / "data_report.json", report)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = Manifest.from_csv(out / "manifest.csv")
    return PrepareResult(out, final, report, time.perf_counter() - t0)


def _write_images(
    scan: DataScan,
    tmp: Path,
    folders: dict[str, str],
    size: int,
    limits: ImageLimits,
    progress: bool | None,
) -> tuple[list[Record], list[dict[str, str]]]:
    """Write every selected image (and mask) under ``tmp``; the new records and the files that failed."""
    records: list[Record] = []
    used: set[str] = set()
    failed: list[dict[str, str]] = []
    items = list(zip(scan.manifest.records, scan.infos, strict=True))
    for rec, info in track(
        items, total=len(items), description=f"writing {size}px images", quiet=progress is False
    ):
        split = rec.split or "train"
        cls = folders[rec.label]
        ext = ".png" if info.format in LOSSLESS_FORMATS else ".jpg"
        stem = _unique_stem(f"{split}/{cls}", _safe_name(Path(rec.path).stem), ext, info.sha1, used)
        try:
            img = load_resized(rec.path, size, limits)
        except BadImage as e:  # changed on disk since validation
            failed.append({"path": str(rec.path), "reason": e.reason})
            continue
        dst = tmp / split / cls / f"{stem}{ext}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if ext == ".png":
            img.save(dst, "PNG", compress_level=1)  # fast; lossless sources (synthetic birds) stay exact
        else:
            img.save(dst, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        box = transform_box(rec.box, info.width, info.height, size) if rec.box else None
        mask = None
        if rec.mask is not None:
            mask = _write_mask(rec.mask, tmp / "masks" / split / cls / f"{stem}.png", size)
        records.append(Record(path=dst, label=rec.label, split=split, box=box, mask=mask))
    return records, failed


def _unique_stem(folder: str, stem: str, ext: str, sha1: str, used: set[str]) -> str:
    """``stem``, or when two sources share a file name, one told apart by content (then by a counter)."""
    candidate, n = stem, 0
    while f"{folder}/{candidate}{ext}".lower() in used:
        n += 1
        candidate = f"{stem}_{sha1[:8]}{f'_{n}' if n > 1 else ''}"
    used.add(f"{folder}/{candidate}{ext}".lower())
    return candidate


def _write_mask(src: Path, dst: Path, size: int) -> Path | None:
    """Resize a label mask like its image (nearest neighbour: part ids never blend); None if unreadable."""
    try:
        with Image.open(io.BytesIO(read_image_bytes(src))) as m:  # regular files only, bounded read
            m.load()
            m = m.resize((size, size), Image.Resampling.NEAREST, box=center_crop_box(m.width, m.height, size))
            dst.parent.mkdir(parents=True, exist_ok=True)
            m.save(dst, "PNG")
        return dst
    except (BadImage, OSError, ValueError):
        return None


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an old ``out`` (only with --force) is removed after the move."""
    old = None
    if out.exists():
        old = staging_name(out, "old")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
