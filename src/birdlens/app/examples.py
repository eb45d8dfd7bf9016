"""Example photos to click: a few images of the run's *test* split, one per species.

Why the test split: the page is for showing a model to others; examples it was trained on would flatter it.
Where the split comes from, first found wins:

1. an explicit folder (``birdlens serve --examples DIR``): ``DIR/<species>/*.jpg`` or ``DIR/test/<species>/``;
2. a manifest CSV saved with the run (``manifest.csv`` or ``data/manifest.csv``, or ``meta.json``'s
   ``manifest``), its ``test`` rows;
3. the run's dataset (``config.yaml``'s ``data``): its ``test/`` folder, or a manifest CSV's ``test`` rows.

The server only ever serves files from this list, by index: a client never names a path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from birdlens.data.images import is_image_candidate
from birdlens.data.manifest import Manifest, normalise_label
from birdlens.runs import layout


@dataclass(frozen=True)
class ExampleImage:
    label: str
    path: Path


def find_examples(
    run_dir: str | os.PathLike[str] | None, override: str | os.PathLike[str] | None = None, limit: int = 12
) -> list[ExampleImage]:
    """Up to ``limit`` test images, one per species in sorted order (deterministic); [] when none found."""
    for source in _sources(Path(run_dir) if run_dir else None, Path(override) if override else None):
        found = source()
        if found:
            return _one_per_class(found, limit)
    return []


def _sources(run_dir: Path | None, override: Path | None) -> list:  # type: ignore[type-arg]
    out = []
    if override is not None:
        out.append(lambda: _from_folder(override / "test") or _from_folder(override))
        return out
    if run_dir is None:
        return out
    meta = _read_json(run_dir / layout.META)
    candidates = [run_dir / layout.MANIFEST, run_dir / "data" / "manifest.csv"]
    if isinstance(meta.get("manifest"), str):
        candidates.insert(0, _resolve(run_dir, meta["manifest"]))
    for csv_path in candidates:
        out.append(lambda p=csv_path: _from_manifest(p))
    data = _config_data(run_dir) or meta.get("data")
    if isinstance(data, str) and data:
        d = _resolve(run_dir, data)
        out.append(lambda: _from_folder(d / "test") if d.is_dir() else _from_manifest(d))
    return out


def _resolve(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path)


def _read_json(path: Path) -> dict:  # type: ignore[type-arg]
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _config_data(run_dir: Path) -> str | None:
    try:
        with open(run_dir / layout.CONFIG, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(cfg, dict):
        return None
    cfg = cfg.get("train", cfg)
    data = cfg.get("data")
    if isinstance(data, dict):
        data = data.get("root") or data.get("path")
    return data if isinstance(data, str) else None


def _from_manifest(path: Path) -> list[ExampleImage]:
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return []
    try:
        m = Manifest.from_csv(path)
    except (OSError, ValueError, KeyError):
        return []
    return [ExampleImage(r.label, Path(r.path)) for r in m.split("test") if Path(r.path).is_file()]


def _from_folder(folder: Path) -> list[ExampleImage]:
    if not folder.is_dir():
        return []
    out = []
    for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(cls_dir.iterdir()):
            if f.is_file() and is_image_candidate(f.name):
                out.append(ExampleImage(normalise_label(cls_dir.name), f))
    return out


def _one_per_class(found: list[ExampleImage], limit: int) -> list[ExampleImage]:
    by_class: dict[str, list[ExampleImage]] = {}
    for ex in found:
        by_class.setdefault(ex.label, []).append(ex)
    picked: list[ExampleImage] = []
    rank = 0
    while len(picked) < limit and any(rank < len(v) for v in by_class.values()):
        for label in sorted(by_class):
            if rank < len(by_class[label]) and len(picked) < limit:
                picked.append(by_class[label][rank])
        rank += 1
    return picked
