"""Open every image of a manifest once; keep the good ones, report the rest with a reason.

The single pass yields everything later steps need without decoding again: size, mode, format, the content
hash (exact duplicates, cache key) and a 64-bit dHash (near duplicates). With a cache, a file whose content
hash was validated before is not decoded again: same bytes, same verdict (only the size limits are re-checked,
since they may have changed).

Threads: Pillow releases the GIL while decoding, so ``workers=2`` could use both cores of this machine. It is
off by default (``workers=1``): while other work keeps the cores busy, 2 threads are sometimes slower than one
(measured: docs/benchmarks.md#data), so it does not pay for itself by default; pass ``workers`` on a quiet or
bigger machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from birdlens.data.cache import ImageCache, as_cache
from birdlens.data.images import (
    DEFAULT_LIMITS,
    BadImage,
    ImageInfo,
    ImageLimits,
    Skipped,
    content_hash,
    explain_reason,
    inspect_bytes,
    open_image,
    read_image_bytes,
)
from birdlens.data.manifest import Manifest, Record


@dataclass
class ValidationResult:
    """Good records (with their :class:`ImageInfo`, aligned) and the skipped ones with reasons."""

    manifest: Manifest
    infos: list[ImageInfo]
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    from_cache: int = 0

    @property
    def n_checked(self) -> int:
        return len(self.manifest) + len(self.skipped)


def _limits_verdict(info: ImageInfo, limits: ImageLimits) -> str | None:
    w, h = info.width, info.height
    if w * h > limits.max_pixels:
        return f"decompression bomb ({w}x{h} > {limits.max_pixels / 1e6:.0f} Mpx limit)"
    if min(w, h) < limits.min_side:
        return f"too small ({w}x{h}; a side is < {limits.min_side} px)"
    if max(w, h) / min(w, h) > limits.max_aspect:
        return f"absurd aspect ratio ({w}x{h} is {max(w, h) / min(w, h):.1f}:1 > {limits.max_aspect:g}:1)"
    return None


def check_file(
    path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS, cache: ImageCache | None = None
) -> tuple[ImageInfo, bool]:
    """Validate one file: its :class:`ImageInfo` and whether it came from the cache; raises ``BadImage``."""
    data = read_image_bytes(path, limits.max_bytes)
    if cache is not None:
        sha1 = content_hash(data)
        cache.remember_key(path, sha1)
        info = cache.get_info(sha1)
        if info is not None:
            reason = _limits_verdict(info, limits)
            if reason is not None:
                raise BadImage(reason)
            return info, True
        open_image(data, limits)  # header checks first, as in the uncached path
    _, info = inspect_bytes(data, limits)
    if cache is not None:
        cache.put_info(info)
    return info, False


def validate_manifest(
    manifest: Manifest,
    limits: ImageLimits = DEFAULT_LIMITS,
    cache: ImageCache | str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool | None = None,
    description: str = "validating images",
) -> ValidationResult:
    """Decode every record once; return the usable ones and the skipped ones with reasons.

    Never raises for a bad file: every failure becomes a :class:`Skipped` entry with a readable reason.
    """
    from birdlens.utils.console import track

    c = as_cache(cache)
    t0 = time.perf_counter()
    root = manifest.root

    def one(rec: Record) -> tuple[ImageInfo | None, bool, str | None]:
        try:
            info, hit = check_file(rec.path, limits, c)
            return info, hit, None
        except BadImage as e:
            return None, False, explain_reason(e.reason, rec.path)
        except Exception as e:  # an unexpected library failure on one file must not lose the others
            return None, False, f"could not be read ({type(e).__name__}: {str(e)[:100]})"

    results: Iterable[tuple[ImageInfo | None, bool, str | None]]
    if workers > 1 and len(manifest) > 1:
        pool = ThreadPoolExecutor(max_workers=workers)
        results = pool.map(one, manifest.records)
    else:
        pool = None
        results = map(one, manifest.records)
    good: list[Record] = []
    infos: list[ImageInfo] = []
    skipped: list[Skipped] = []
    hits = 0
    try:
        for rec, (info, hit, reason) in track(
            zip(manifest.records, results, strict=True),
            total=len(manifest),
            description=description,
            quiet=progress is False,
        ):
            if info is None:
                skipped.append(Skipped(display_path(rec.path, root), reason or "unknown error"))
            else:
                good.append(rec)
                infos.append(info)
                hits += hit
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return ValidationResult(Manifest(good, manifest.root), infos, skipped, time.perf_counter() - t0, hits)


def display_path(path: str | os.PathLike[str], root: Path | None) -> str:
    """A path relative to the dataset root when it is under it (short and machine-independent)."""
    p = Path(path)
    if root is not None:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(p)
