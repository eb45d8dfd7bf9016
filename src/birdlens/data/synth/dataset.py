"""Write a synthetic bird dataset to disk: split folders, part masks, specs, ``parts.json``, ``manifest.csv``.

Layout (``out/``)::

    train|valid|test/<CLASS>/<id>.png     RGB images (the usual split-folder layout)
    masks/<split>/<CLASS>/<id>.png        uint8 part masks (0 background, i+1 = PARTS[i]), mode "L"
    specs.jsonl                           one line per image: {"path", "mask", "split", "spec"}
    parts.json                            parts, attributes, classes, which parts tell classes apart
    manifest.csv                          Manifest.to_csv; written last, so its presence means "complete"

Every image is rendered from its own seed (``SeedSequence([seed, class, i])``), so the bytes do not depend on
the number of worker processes or on the order in which they finish.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from birdlens.data.manifest import SPLITS, Manifest, Record
from birdlens.data.synth.catalog import ATTRIBUTES, DRAW_ORDER, PART_IDS, PARTS, class_catalog, parts_summary
from birdlens.data.synth.render import SUPERSAMPLE, render_bird
from birdlens.data.synth.spec import SPEC_VERSION, BirdSpec, sample_spec
from birdlens.utils import console
from birdlens.utils.atomic import write_json, write_text

_OWNED = (
    "train",
    "valid",
    "test",
    "masks",
    "specs.jsonl",
    "parts.json",
    "manifest.csv",
    "cue_masks",  # a planted shortcut (`--shortcut`, birdlens.data.shortcuts)
    "shortcut.json",
)
_GENERATOR = "birdlens.data.synth"
# fixed, so the same spec always gives the same bytes; the fastest level, since encoding is much of the
# time spent per image and the files are small anyway
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class _Job:
    spec: BirdSpec
    size: int
    image: str  # paths relative to the dataset root
    mask: str


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an image with the fixed settings used for the dataset (deterministic bytes)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _render_job(job: _Job, root: str) -> tuple[float, float, float, float] | None:
    """Render and write one image and its mask; return the bird's box (x, y, w, h) from the mask."""
    img, mask = render_bird(job.spec, job.size)
    for rel, arr in ((job.image, img), (job.mask, mask)):
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(arr))
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))


def _split_counts(n: int, splits: Sequence[float]) -> list[int]:
    if len(splits) != 3 or any(r < 0 for r in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise ValueError(
            f"splits must be three non-negative ratios (train, valid, test) summing to 1, got {splits}"
        )
    n_train = round(n * splits[0])
    n_valid = min(round(n * splits[1]), n - n_train)
    return [n_train, n_valid, n - n_train - n_valid]


def _is_synth_dataset(root: Path) -> bool:
    try:
        return json.loads((root / "parts.json").read_text(encoding="utf-8")).get("generator") == _GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork on Linux: no re-import of the caller's script (spawn's classic pitfall) and instant start-up;
    # the workers only use numpy and Pillow, never torch, so forking a torch-using parent is safe.
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def generate_dataset(
    out: str | os.PathLike[str],
    classes: int = 10,
    per_class: int = 100,
    size: int = 224,
    seed: int = 0,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    quiet: bool = False,
    force: bool = False,
    workers: int | None = None,
) -> Manifest:
    """Generate the dataset into ``out`` and return its :class:`Manifest` (masks and bird boxes filled).

    Refuses a non-empty ``out`` unless ``force``; then only the entries this function writes are replaced,
    and only if they come from an earlier run (it never deletes a ``train/`` folder of real photos).
    ``workers``: processes to render with (default: up to 2, one for small jobs); the bytes never depend on it.
    """
    root = Path(out)
    if size < 32:
        raise ValueError("size must be >= 32 pixels")
    if per_class < 1:
        raise ValueError("per_class must be >= 1")
    _clear_output(root, force)
    catalog = class_catalog(classes, seed)
    jobs, split_of = _plan_jobs(catalog, _split_counts(per_class, splits), size, seed)
    n_workers = workers if workers is not None else (1 if len(jobs) < 200 else min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    boxes = list(_run_jobs(jobs, str(root), max(1, n_workers), quiet))
    seconds = time.perf_counter() - t0
    settings = {"seed": seed, "size": size, "per_class": per_class, "splits": list(splits)}
    _write_specs_and_parts(root, jobs, split_of, catalog, settings, seconds, n_workers)
    records = [
        Record(root / j.image, j.spec.class_name, s, box, root / j.mask)
        for j, s, box in zip(jobs, split_of, boxes, strict=True)
    ]
    manifest = Manifest(records, root)
    manifest.to_csv(root / "manifest.csv")
    return manifest


def _clear_output(root: Path, force: bool) -> None:
    """Make ``root`` an empty-enough folder: refuse what is not ours, replace a previous synth output."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise FileExistsError(f"{root} is not empty; choose another folder or pass force=True (--force)")
        if any((root / name).exists() for name in _OWNED) and not _is_synth_dataset(root):
            # never delete what this generator did not write (e.g. real photos in train/ valid/ test/)
            raise FileExistsError(
                f"{root} holds data that is not a synthetic bird dataset; --force only "
                "replaces a previous `birdlens data synth` output"
            )
        for name in _OWNED:
            p = root / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _plan_jobs(
    catalog: Sequence[Any], counts: Sequence[int], size: int, seed: int
) -> tuple[list[_Job], list[str]]:
    """One job per image, each with its own seed (``SeedSequence([seed, class, i])``), and its split."""
    jobs: list[_Job] = []
    split_of: list[str] = []
    for cls in catalog:
        split_names = [s for s, k in zip(SPLITS, counts, strict=True) for _ in range(k)]
        for i, split in enumerate(split_names):
            rng = np.random.default_rng(np.random.SeedSequence([seed, cls.index, i]))
            stem = f"{cls.index:03d}_{i:05d}.png"
            jobs.append(
                _Job(
                    sample_spec(cls, rng),
                    size,
                    f"{split}/{cls.name}/{stem}",
                    f"masks/{split}/{cls.name}/{stem}",
                )
            )
            split_of.append(split)
    return jobs, split_of


def _write_specs_and_parts(
    root: Path,
    jobs: Sequence[_Job],
    split_of: Sequence[str],
    catalog: Sequence[Any],
    settings: dict[str, Any],
    seconds: float,
    n_workers: int,
) -> None:
    """``specs.jsonl`` (one spec per image) and ``parts.json`` (what the masks and attributes mean)."""
    lines = [
        json.dumps(
            {"path": j.image, "mask": j.mask, "split": s, "spec": j.spec.to_dict()},
            sort_keys=True,
            separators=(",", ":"),
        )
        for j, s in zip(jobs, split_of, strict=True)
    ]
    write_text(root / "specs.jsonl", "\n".join(lines) + "\n")
    write_json(
        root / "parts.json",
        {
            "generator": _GENERATOR,
            "version": SPEC_VERSION,
            **settings,
            "supersample": SUPERSAMPLE,
            "parts": list(PARTS),
            "part_ids": {"background": 0, **PART_IDS},
            "draw_order": list(DRAW_ORDER),
            "mask_format": "8-bit grey PNG (mode L): 0 = background, i + 1 = parts[i]; the part visible at the "
            "pixel's centre (draw_order is back to front)",
            "attributes": {k: {"part": p, "values": list(v)} for k, (p, v) in ATTRIBUTES.items()},
            **parts_summary(catalog),
            "seconds": round(seconds, 3),
            "workers": n_workers,
        },
    )


def _run_jobs(jobs: list[_Job], root: str, workers: int, quiet: bool) -> Iterator[Any]:
    render = functools.partial(_render_job, root=root)
    with console.progress(len(jobs), "synth birds", quiet) as bar:
        if workers == 1:
            results: Iterator[Any] = map(render, jobs)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
            results = pool.map(render, jobs, chunksize=8)
        try:
            for r in results:
                bar.advance()
                yield r
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)


# ------------------------------------------------------------------------------------------ reading back
@functools.lru_cache(maxsize=8)
def _specs_index(path: str, mtime_ns: int, nbytes: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[row["path"]] = row
    return out


def _index(dataset_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    path = Path(dataset_dir) / "specs.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: is {dataset_dir} a dataset made by `birdlens data synth`?"
        )
    st = path.stat()
    return _specs_index(str(path.resolve()), st.st_mtime_ns, st.st_size)


def _key(dataset_dir: str | os.PathLike[str], image_path: str | os.PathLike[str]) -> str:
    p = Path(image_path)
    if p.is_absolute() or p.exists():
        with contextlib.suppress(ValueError):
            return p.resolve().relative_to(Path(dataset_dir).resolve()).as_posix()
    return p.as_posix()


def load_spec(dataset_dir: str | os.PathLike[str], image_path: str | os.PathLike[str]) -> BirdSpec:
    """The spec of one image; ``image_path`` absolute or relative to ``dataset_dir`` (e.g. a Record's path)."""
    key = _key(dataset_dir, image_path)
    row = _index(dataset_dir).get(key)
    if row is None:
        raise KeyError(f"no spec for {key!r} in {Path(dataset_dir) / 'specs.jsonl'}")
    return BirdSpec.from_dict(row["spec"])


def load_specs(dataset_dir: str | os.PathLike[str]) -> dict[str, BirdSpec]:
    """Every spec of a dataset, keyed by the image path relative to ``dataset_dir``."""
    return {k: BirdSpec.from_dict(v["spec"]) for k, v in _index(dataset_dir).items()}


def load_parts(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The dataset's ``parts.json`` (parts, attributes, classes, pairwise differing parts)."""
    return json.loads((Path(dataset_dir) / "parts.json").read_text(encoding="utf-8"))
