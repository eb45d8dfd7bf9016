"""A decoded-image cache: uint8 HWC arrays in ``.npy`` files opened memory-mapped.

Why: decoding a JPEG costs milliseconds, and every training epoch, every explanation batch and every
validation pass would pay it again. A cached array is mapped, not read, so the page cache is shared between
processes (DataLoader workers, the web app). The first fill costs more than a plain decode (file creation), so
the cache pays from the second epoch on, and more for large source photos (measured:
docs/benchmarks.md#data).

Layout (a person can ``rm -rf`` it any time)::

    ROOT/arrays/<sha1[:2]>/<sha1>_<tag>.npy   tag = "orig" or "<size>" (resize short side + centre crop)
    ROOT/meta/<sha1[:2]>/<sha1>.json          what validation learnt about the file (size, mode, dHash)

Keys are the SHA-1 of the file *content* plus the target size: renaming or moving a photo keeps its entry and
editing it makes a new one. Every file is written to a temporary name and renamed, so two processes may fill
the same cache at once; the loser of a race just overwrites an identical file. A cache file that cannot be
read (disk full, killed writer on an exotic filesystem) counts as a miss and is rewritten.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from birdlens.data.images import (
    DEFAULT_LIMITS,
    BadImage,
    ImageInfo,
    ImageLimits,
    content_hash,
    decode_rgb,
    open_image,
    read_image_bytes,
    resize_center_crop,
)
from birdlens.utils.atomic import atomic_path

_FORMAT_VERSION = 1  # bump when the RGB rule or the resize changes: old entries are then ignored


class ImageCache:
    """Content-keyed, memory-mapped cache of decoded RGB images (see module doc)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._keys: dict[str, tuple[tuple[int, int, int], str]] = {}
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ImageCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers; key memo not shipped
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    # ------------------------------------------------------------------------------------------ paths
    @staticmethod
    def _tag(size: int | None) -> str:
        return f"v{_FORMAT_VERSION}_orig" if size is None else f"v{_FORMAT_VERSION}_{int(size)}"

    def array_path(self, sha1: str, size: int | None = None) -> Path:
        return self.root / "arrays" / sha1[:2] / f"{sha1}_{self._tag(size)}.npy"

    def meta_path(self, sha1: str) -> Path:
        return self.root / "meta" / sha1[:2] / f"{sha1}.v{_FORMAT_VERSION}.json"

    # ------------------------------------------------------------------------------------------ keys
    def file_key(self, path: str | os.PathLike[str]) -> str:
        """Content hash of a file, memoised per process on (mtime, size, inode)."""
        key = self._memo_key(path)
        if key is None:
            key = content_hash(read_image_bytes(path))  # raises a readable BadImage
            self.remember_key(path, key)
        return key

    def _memo_key(self, path: str | os.PathLike[str]) -> str | None:
        p = os.fspath(path)
        hit = self._keys.get(p)
        if hit is None:
            return None
        try:
            st = os.stat(p)
        except OSError:
            return None
        return hit[1] if hit[0] == (st.st_mtime_ns, st.st_size, st.st_ino) else None

    def remember_key(self, path: str | os.PathLike[str], sha1: str) -> None:
        """Record a hash computed elsewhere (validation already read the bytes) so it is not recomputed."""
        p = os.fspath(path)
        try:
            st = os.stat(p)
        except OSError:
            return
        self._keys[p] = ((st.st_mtime_ns, st.st_size, st.st_ino), sha1)

    # ------------------------------------------------------------------------------------------ arrays
    def get(self, sha1: str, size: int | None = None) -> np.ndarray | None:
        """The cached HWC uint8 array (read-only memory map), or None."""
        path = self.array_path(sha1, size)
        try:
            arr = _map_npy(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, EOFError):
            return None  # unreadable entry: treat as a miss, put() will replace it
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            return None
        return arr

    def put(self, sha1: str, arr: np.ndarray, size: int | None = None) -> np.ndarray:
        """Store an HWC uint8 RGB array atomically; returns it (read-only, like a hit)."""
        arr = np.ascontiguousarray(arr)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"cache stores HxWx3 uint8 arrays, got {arr.dtype} {arr.shape}")
        target = self.array_path(sha1, size)
        with atomic_path(target, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        arr.flags.writeable = False  # same contract as a hit: callers copy before writing
        return arr

    def load(
        self, path: str | os.PathLike[str], size: int | None = None, limits: ImageLimits = DEFAULT_LIMITS
    ) -> np.ndarray:
        """HWC uint8 RGB of a file at ``size`` (None: original), decoding only on a miss.

        Raises :class:`~birdlens.data.images.BadImage` for a file that cannot be decoded.
        """
        data: bytes | None = None
        sha1 = self._memo_key(path)
        if sha1 is None:  # first sight of this file in this process: read it once, for the key and a decode
            try:
                data = read_image_bytes(path, limits.max_bytes)
            except BadImage as e:
                raise BadImage(e.reason, path) from None
            sha1 = content_hash(data)
            self.remember_key(path, sha1)
        arr = self.get(sha1, size)
        if arr is not None:
            self.hits += 1
            return arr
        self.misses += 1
        try:
            if data is None:
                data = read_image_bytes(path, limits.max_bytes)
            rgb = decode_rgb(open_image(data, limits), draft_size=size)
        except BadImage as e:
            raise BadImage(e.reason, path) from None
        if size is not None:
            rgb = resize_center_crop(rgb, size)
        return self.put(sha1, np.asarray(rgb, dtype=np.uint8), size)

    # ------------------------------------------------------------------------------------------ metadata
    def get_info(self, sha1: str) -> ImageInfo | None:
        try:
            with open(self.meta_path(sha1), encoding="utf-8") as f:
                d = json.load(f)
            return ImageInfo(**d)
        except (OSError, ValueError, TypeError):
            return None

    def put_info(self, info: ImageInfo) -> None:
        from dataclasses import asdict

        target = self.meta_path(info.sha1)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")


_HEADER = re.compile(
    r"\{'descr':\s*'(?P<descr>[^']+)',\s*'fortran_order':\s*(?P<fortran>True|False),\s*"
    r"'shape':\s*\((?P<shape>[\d,\s]*)\),?\s*\}"
)


def _map_npy(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only.

    Same result as ``np.load(path, mmap_mode="r")`` at a fraction of its cost: numpy parses the header with
    ``ast.literal_eval`` (a ``compile`` per file; measured: docs/benchmarks.md#data) and builds a slow
    ``np.memmap``; this path runs once per image per epoch, so the header is matched with a regex instead
    (files this cache wrote always match; anything else falls back to numpy).
    """
    with open(path, "rb") as f:
        head = f.read(10)
        if len(head) < 10 or head[:6] != b"\x93NUMPY":
            raise ValueError("not a .npy file")
        if head[6] == 1:
            hlen, start = int.from_bytes(head[8:10], "little"), 10
        else:
            head += f.read(2)
            hlen, start = int.from_bytes(head[8:12], "little"), 12
        text = f.read(hlen).decode("latin1")
        m = _HEADER.match(text)
        if m is None or m["fortran"] == "True":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        dtype = np.dtype(m["descr"])
        shape = tuple(int(x) for x in m["shape"].replace(" ", "").split(",") if x)
        offset = start + hlen
        count = int(np.prod(shape)) if shape else 1
        if os.fstat(f.fileno()).st_size < offset + count * dtype.itemsize:
            raise ValueError("truncated cache file")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)


def as_cache(cache: ImageCache | str | os.PathLike[str] | None) -> ImageCache | None:
    """Accept a cache object, a folder path or None."""
    if cache is None or isinstance(cache, ImageCache):
        return cache
    return ImageCache(cache)
