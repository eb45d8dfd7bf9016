"""The images a run trains and evaluates on: discovery -> validation -> top-N / per-class selection.

The result is written to ``RUN_DIR/manifest.csv`` (:data:`birdlens.runs.layout.MANIFEST`), so evaluation and explanation see exactly the images and
splits training saw, even if the dataset folder changes later.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from birdlens.data.manifest import Manifest

logger = logging.getLogger("birdlens.train")


@dataclass
class RunData:
    manifest: Manifest
    classes: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def split(self, name: str) -> Manifest:
        return self.manifest.split(name)


def load_manifest(
    path: str | os.PathLike[str], seed: int = 0, ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> Manifest:
    """The data engineer's discovery (folders, CSV, CUB, ...): one place to import it from."""
    from birdlens.data.layouts import load_manifest as _load

    return _load(path, seed=seed, ratios=ratios)


def prepare_data(
    data: str | os.PathLike[str],
    *,
    seed: int = 0,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    top: int | None = None,
    per_class: int | None = None,
    image_cache: str | None = None,
    validate: bool = True,
    quiet: bool = False,
) -> RunData:
    """Discover, validate (bad files are skipped and reported, not fatal) and select the run's images."""
    from birdlens.data.select import select

    manifest = load_manifest(data, seed=seed, ratios=ratios)
    skipped: list[dict[str, str]] = []
    if validate:
        from birdlens.data.validate import validate_manifest

        res = validate_manifest(manifest, cache=image_cache, progress=not quiet)
        manifest = res.manifest
        skipped = [{"path": str(s.path), "reason": s.reason} for s in res.skipped]
        if skipped:
            logger.warning(
                "skipped %d unreadable image(s), e.g. %s: %s",
                len(skipped),
                skipped[0]["path"],
                skipped[0]["reason"],
            )
    sel = select(manifest, top=top, per_class=per_class, seed=seed)
    manifest = sel.manifest
    if not manifest.split("train").records:
        raise ValueError(f"{data}: no training images after selection; check the path, --top and --per-class")
    classes = manifest.classes
    if len(classes) < 2:
        raise ValueError(f"{data}: found {len(classes)} class(es); a classifier needs at least 2")
    selection = sel.to_dict()
    selection.pop("classes", None)
    return RunData(manifest=manifest, classes=classes, skipped=skipped, selection=selection)
