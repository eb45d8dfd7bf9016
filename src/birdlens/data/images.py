"""Open any image file a user may have and turn it into one thing: an 8-bit RGB Pillow image.

Why one function: validation, the data report, ``prepare``, the decoded-image cache and the dataset all must
agree on what "the pixels of this file" are, or a model would see different images in training and in the
explanation stage.

The RGB rule (documented, tested):

* EXIF orientation is applied (a phone photo stored sideways is shown upright); animations give frame 0.
* ``RGB`` is kept; ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` use Pillow's ``convert("RGB")``
  (CMYK without colour management: Pillow's naive inversion).
* Anything with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent index, ``RGBa``, ``La``) is
  alpha-composited on neutral grey ``(128, 128, 128)``: a transparent background must not become black or white,
  both of which a classifier could learn as a shortcut.
* High bit depth grey: ``I;16*`` is scaled by 1/257 (full 16-bit range to 8 bits); ``I`` (int32) and ``F``
  (float32) are clipped to 0..255 when they already fit, ``F`` in 0..1 is multiplied by 255, and anything wider
  is min-max rescaled to 0..255.

Bad files raise :class:`BadImage` with a short human reason; callers skip and report them. The image size is
checked from the header *before* decoding, so a decompression bomb is never allocated.
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import stat
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".bmp",
        ".dib",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".ico",
        ".jp2",
        ".j2k",
        ".avif",
        ".qoi",
        ".mpo",
    }
)
# Photo formats Pillow cannot decode here: listed (not ignored) so the report says "convert these" instead of
# a folder silently looking empty.
FOREIGN_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".heic",
        ".heif",
        ".svg",
        ".cr2",
        ".cr3",
        ".nef",
        ".dng",
        ".arw",
        ".orf",
        ".rw2",
        ".raf",
        ".raw",
    }
)
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "icon\r"})
GREY_BACKGROUND: tuple[int, int, int] = (128, 128, 128)
_OPEN_LOCK = threading.Lock()


class BadImage(Exception):
    """A file that cannot serve as a training image; ``reason`` is one short sentence for the report."""

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(reason if path is None else f"{path}: {reason}")
        self.reason = reason
        self.path = None if path is None else Path(path)


@dataclass(frozen=True)
class Skipped:
    """A file (or CSV row) left out of the dataset, and why: the unit of the data report's ``skipped`` list."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class ImageLimits:
    """What counts as usable. ``max_pixels`` defaults to Pillow's own bomb limit (~89 Mpx)."""

    min_side: int = 32
    max_aspect: float = 10.0
    max_pixels: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
    max_bytes: int = 512 * 1024 * 1024  # a file is read whole before decoding: refuse e.g. a video named .jpg

    def __post_init__(self) -> None:
        if self.min_side < 1:
            raise ValueError("min_side must be >= 1")
        if self.max_aspect < 1:
            raise ValueError("max_aspect must be >= 1 (it is long side / short side)")


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class ImageInfo:
    """What validation learns about one file in the single pass that decodes it."""

    width: int  # after EXIF orientation
    height: int
    mode: str  # Pillow mode as stored in the file
    format: str | None
    n_frames: int
    sha1: str  # content hash of the file bytes (the cache key)
    dhash: int  # 64-bit difference hash of the decoded RGB image (near-duplicate search)


def is_ignored_name(name: str) -> bool:
    """Hidden and system files (``.DS_Store``, ``._IMG.jpg``, ``Thumbs.db``) that are skipped silently."""
    return name.startswith(".") or name.lower() in _SYSTEM_FILES or name.startswith("~$")


def has_image_extension(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in FOREIGN_EXTENSIONS


def is_image_candidate(name: str) -> bool:
    """A file name a scan should look at (image extension, not hidden); everything else is ignored silently."""
    return has_image_extension(name) and not is_ignored_name(name)


def content_hash(data: bytes) -> str:
    """SHA-1 of the file bytes: the identity of an image for the cache and for exact duplicates."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def read_image_bytes(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """Read a file, turning every filesystem failure into a :class:`BadImage` with a readable reason.

    Only regular files are read (a symbolic link is followed, but its target must be one): a character
    device such as ``/dev/zero`` reports size 0 and never ends, and a FIFO blocks its reader for ever. The
    open is non-blocking and the type is checked on the opened descriptor, so a file swapped for a FIFO after
    a check cannot hang the scan, and at most ``max_bytes`` (default: :data:`DEFAULT_LIMITS`) are read
    whatever ``stat`` claims.
    """
    p = Path(path)
    limit = DEFAULT_LIMITS.max_bytes if max_bytes is None else max_bytes
    try:
        if p.is_symlink():
            try:
                p.resolve(strict=True)
            except FileNotFoundError:
                raise BadImage("dangling symbolic link (its target does not exist)") from None
            except (RuntimeError, OSError) as e:
                if isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP:
                    raise BadImage("symbolic link loop") from None
                raise
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        try:
            data = _read_regular(fd, limit)
        finally:
            os.close(fd)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadImage("symbolic link loop") from None
        if e.errno == errno.EISDIR:
            raise BadImage("is a directory, not an image file") from None
        raise BadImage(f"cannot read file ({e.strerror or e})") from None
    if not data:
        raise BadImage("empty file (0 bytes)")
    return data


def _read_regular(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes of an open regular file; anything else is a :class:`BadImage`."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise BadImage(_not_regular(st.st_mode))
    if st.st_size > limit:
        raise BadImage(_too_large(st.st_size, limit))
    chunks: list[bytes] = []
    n = 0
    while n <= limit:  # stat may lie (a file still growing, a FUSE mount): the read itself is bounded
        chunk = os.read(fd, min(1 << 20, limit + 1 - n))
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    if n > limit:
        raise BadImage(_too_large(n, limit, at_least=True))
    return b"".join(chunks)


def _not_regular(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not an image file"
    kinds = [
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO, a named pipe"),
        (stat.S_ISSOCK, "socket"),
    ]
    kind = next((name for test, name in kinds if test(mode)), "special file")
    return f"not a regular file ({kind}; only regular files are read)"


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return f"file too large ({more}{size / 2**20:.0f} MiB > {limit / 2**20:.0f} MiB limit)"


def open_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Parse the header only and check size limits; nothing is decoded yet (bombs are never allocated)."""
    try:
        # catch_warnings edits process-global state: the lock keeps validation threads from racing on it
        # (header parsing is microseconds, so nothing real is serialised).
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("decompression bomb (declared size is far above the pixel limit)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, struct.error) as e:
        raise BadImage(f"corrupt header ({_short(e)})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise BadImage(f"invalid size {w}x{h}")
    if w * h > limits.max_pixels:
        raise BadImage(
            f"decompression bomb ({w}x{h} = {w * h / 1e6:.0f} Mpx > {limits.max_pixels / 1e6:.0f} Mpx limit)"
        )
    if min(w, h) < limits.min_side:
        raise BadImage(f"too small ({w}x{h}; a side is < {limits.min_side} px)")
    aspect = max(w, h) / min(w, h)
    if aspect > limits.max_aspect:
        raise BadImage(f"absurd aspect ratio ({w}x{h} is {aspect:.1f}:1 > {limits.max_aspect:g}:1)")
    return img


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:120]


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to RGB following the module's documented rule."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if (
        mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or (mode == "P" and "transparency" in img.info)
        or (mode in ("L", "RGB") and "transparency" in img.info)
    ):
        rgba = (img.convert("LA") if mode == "La" else img).convert("RGBA")  # Pillow has no La->RGBA
        background = Image.new("RGBA", rgba.size, (*GREY_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        return Image.fromarray(_wide_to_uint8(arr, mode)).convert("RGB")
    return img.convert("RGB")


def _wide_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        out = a / 257.0
    else:
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            out = a
        else:
            out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def decode_rgb(img: Image.Image, draft_size: int | None = None) -> Image.Image:
    """Decode frame 0, apply EXIF orientation, convert to RGB.

    ``draft_size`` lets JPEG decoding downscale by DCT (1/2, 1/4, 1/8) while keeping the short side
    >= draft_size: several times faster for a large photo resized to model size, with a difference after the
    resize well under one grey level (measured: docs/benchmarks.md#data).
    """
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        if draft_size is not None and img.format == "JPEG":
            w, h = img.size
            scale = draft_size / min(w, h)
            if scale < 1:
                img.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return to_rgb(img)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("decompression bomb (declared size is far above the pixel limit)") from None
    except MemoryError:
        raise BadImage("too large to decode in memory") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... for bad data
        text = str(e).lower()
        if "truncated" in text or "premature" in text or "broken data stream" in text:
            raise BadImage(f"truncated ({_short(e)})") from None
        raise BadImage(f"corrupt image data ({_short(e)})") from None


def dhash64(img: Image.Image) -> int:
    """64-bit difference hash: grey 9x8 thumbnail, one bit per horizontal neighbour comparison.

    Robust to resizing, recompression and small colour changes; two photos that differ get ~32 bits apart.
    """
    small = img.convert("L").resize((9, 8), Image.Resampling.BOX)
    a = np.asarray(small, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def inspect_bytes(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[Image.Image, ImageInfo]:
    """Check and decode one file's bytes: the RGB image and what validation reports about it."""
    img = open_image(data, limits)
    mode, fmt, n_frames = img.mode, img.format, int(getattr(img, "n_frames", 1) or 1)
    rgb = decode_rgb(img)
    w, h = rgb.size
    info = ImageInfo(
        width=w,
        height=h,
        mode=mode,
        format=fmt,
        n_frames=n_frames,
        sha1=content_hash(data),
        dhash=dhash64(rgb),
    )
    return rgb, info


def explain_reason(reason: str, path: str | os.PathLike[str]) -> str:
    """Turn "not an image" into "unsupported format" for HEIC/RAW/SVG files, which are images Pillow can't read."""
    suffix = Path(path).suffix.lower()
    if reason.startswith("not an image") and suffix in FOREIGN_EXTENSIONS:
        return f"unsupported format {suffix} (convert it to JPEG or PNG)"
    return reason


def load_rgb(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """The RGB Pillow image of a file (see the module doc for the rule); raises :class:`BadImage`."""
    try:
        data = read_image_bytes(path, limits.max_bytes)
        return decode_rgb(open_image(data, limits))
    except BadImage as e:
        raise BadImage(e.reason, path) from None


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Aspect-preserving resize so the short side is ``size``, then a centre ``size`` x ``size`` crop."""
    w, h = img.size
    box = center_crop_box(w, h, size)
    scale = size / min(w, h)
    # resize only the region that survives the crop: same pixels, less work.
    return img.resize(
        (size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=None if scale > 0.5 else 2.0
    )


def center_crop_box(w: int, h: int, size: int) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) region of a ``w`` x ``h`` image that :func:`resize_center_crop` keeps."""
    side = min(w, h)
    left = (w - side) / 2
    top = (h - side) / 2
    return (left, top, left + side, top + side)


def transform_box(
    box: tuple[float, float, float, float], w: int, h: int, size: int
) -> tuple[float, float, float, float] | None:
    """Map an (x, y, w, h) box of the original image into the frame of :func:`resize_center_crop`.

    Clipped to the crop; None when nothing of the box survives.
    """
    left, top, _, _ = center_crop_box(w, h, size)
    scale = size / min(w, h)
    x0 = (box[0] - left) * scale
    y0 = (box[1] - top) * scale
    x1 = (box[0] + box[2] - left) * scale
    y1 = (box[1] + box[3] - top) * scale
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(size), x1), min(float(size), y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2))


def load_resized(
    path: str | os.PathLike[str], size: int | None, limits: ImageLimits = DEFAULT_LIMITS
) -> Image.Image:
    """Decode (with JPEG draft when it helps) and, if ``size`` is given, resize + centre crop."""
    try:
        data = read_image_bytes(path, limits.max_bytes)
        rgb = decode_rgb(open_image(data, limits), draft_size=size)
    except BadImage as e:
        raise BadImage(e.reason, path) from None
    return rgb if size is None else resize_center_crop(rgb, size)
