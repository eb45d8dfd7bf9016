"""Planted shortcuts: a cue added to the train and valid images of chosen classes, decorrelated in test.

A shortcut audit needs ground truth: a dataset where some classes can be told apart by something other than
the bird. :func:`plant_shortcut` adds a :class:`Cue` to each train/valid image of the chosen classes with
probability ``p``, and to test images of *every* class with probability ``test_p`` (so in test the cue says
nothing about the class, and the accuracy with and without it can be compared). Every cue's pixel mask is
saved (``cue_masks/...``) and listed in ``shortcut.json``; these are for scoring only, never for the audit.

Cues are user-extensible: subclass :class:`Cue`, implement :meth:`Cue.mask` and :meth:`Cue.paint`, and
decorate with :func:`register_cue`.

    >>> plant_shortcut("data/birds", "data/birds-patch", cue=make_cue("patch"), n_classes=3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from birdlens.data.manifest import Manifest, Record, normalise_label
from birdlens.utils import console
from birdlens.utils.atomic import write_bytes, write_json

SHORTCUT_FILE = "shortcut.json"
CUE_MASKS = "cue_masks"

_CUES: dict[str, type[Cue]] = {}


def register_cue(cls: type[Cue]) -> type[Cue]:
    """Class decorator: make a cue available by its ``kind`` (``--cue KIND`` on the command line)."""
    _CUES[cls.kind] = cls
    return cls


def cue_kinds() -> list[str]:
    """The registered cue kinds, sorted."""
    return sorted(_CUES)


def make_cue(kind: str, **params: Any) -> Cue:
    """The cue ``kind`` with ``params`` (unknown kind: ValueError naming the allowed ones)."""
    if kind not in _CUES:
        raise ValueError(f"unknown cue {kind!r}: choose one of {', '.join(cue_kinds())}")
    return _CUES[kind](**params)


def cue_from_dict(d: dict[str, Any]) -> Cue:
    """The cue that :meth:`Cue.to_dict` described (read back from ``shortcut.json``)."""
    d = dict(d)
    return make_cue(d.pop("kind"), **d)


@dataclass
class Cue(ABC):
    """A visual cue drawn onto an image: where (:meth:`mask`) and how (:meth:`paint`).

    Cues are deterministic functions of the image size, so the same cue can be pasted again at scoring time.
    """

    kind: ClassVar[str] = "base"
    colour: tuple[int, int, int] = (255, 0, 255)

    @abstractmethod
    def mask(self, height: int, width: int) -> np.ndarray:
        """Bool ``[H, W]``: the pixels the cue changes (never empty)."""

    def paint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The image with the cue drawn on the masked pixels (default: a solid colour)."""
        out = image.copy()
        out[mask] = np.asarray(self.colour, dtype=np.uint8)
        return out

    def apply(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(image with the cue, its bool mask)`` for an RGB uint8 ``[H, W, 3]`` image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"a cue needs an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        m = self.mask(image.shape[0], image.shape[1])
        if not m.any():
            raise ValueError(
                f"the {self.kind} cue's mask is empty on a {image.shape[1]}x{image.shape[0]} image"
            )
        return self.paint(image, m), m

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()},
        }


@register_cue
@dataclass
class PatchCue(Cue):
    """A small square of ``size`` (share of the short side) at a fixed corner, a checkerboard of ``colour`` and
    black (a mark nothing in a bird photo looks like)."""

    kind: ClassVar[str] = "patch"
    size: float = 0.14
    corner: str = "top-left"
    margin: float = 0.04

    def mask(self, height: int, width: int) -> np.ndarray:
        if not 0 < self.size <= 0.5:
            raise ValueError(f"patch size must be in (0, 0.5] of the short side, got {self.size}")
        if self.corner not in ("top-left", "top-right", "bottom-left", "bottom-right"):
            raise ValueError(
                f"patch corner must be top-left, top-right, bottom-left or bottom-right, got {self.corner!r}"
            )
        side = max(2, round(self.size * min(height, width)))
        off = round(self.margin * min(height, width))
        y0 = off if self.corner.startswith("top") else height - off - side
        x0 = off if self.corner.endswith("left") else width - off - side
        m = np.zeros((height, width), dtype=bool)
        m[max(0, y0) : y0 + side, max(0, x0) : x0 + side] = True
        return m

    def paint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = image.copy()
        ys, xs = np.nonzero(mask)
        cell = max(1, (ys.max() - ys.min() + 1) // 4)
        on = (((ys - ys.min()) // cell + (xs - xs.min()) // cell) % 2) == 0
        out[ys[on], xs[on]] = np.asarray(self.colour, dtype=np.uint8)
        out[ys[~on], xs[~on]] = 0
        return out


@register_cue
@dataclass
class BorderCue(Cue):
    """A frame of ``width`` (share of the short side) around the whole image: a global cue, unlike a patch.

    The default is wider than the 6.25% of each side that timm's usual evaluation centre crop (``crop_pct``
    0.875) cuts off: a narrower frame leaves the model's test-time view only a line blended into each photo,
    which tests no audit."""

    kind: ClassVar[str] = "border"
    width: float = 0.1
    colour: tuple[int, int, int] = (0, 200, 255)

    def mask(self, height: int, width: int) -> np.ndarray:
        if not 0 < self.width < 0.5:
            raise ValueError(f"border width must be in (0, 0.5) of the short side, got {self.width}")
        w = max(1, round(self.width * min(height, width)))
        m = np.zeros((height, width), dtype=bool)
        m[:w] = m[-w:] = True
        m[:, :w] = m[:, -w:] = True
        return m


@register_cue
@dataclass
class TintCue(Cue):
    """A colour tint of the whole image (``strength`` of ``colour`` mixed in): global, with no edge to find."""

    kind: ClassVar[str] = "tint"
    strength: float = 0.25
    colour: tuple[int, int, int] = (255, 120, 0)

    def mask(self, height: int, width: int) -> np.ndarray:
        return np.ones((height, width), dtype=bool)

    def paint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not 0 < self.strength <= 1:
            raise ValueError(f"tint strength must be in (0, 1], got {self.strength}")
        mixed = (1 - self.strength) * image.astype(np.float32) + self.strength * np.asarray(
            self.colour, np.float32
        )
        out = image.copy()
        out[mask] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)[mask]
        return out


# ------------------------------------------------------------------------------------------ planting
@dataclass
class Planted:
    """What :func:`plant_shortcut` did: the new manifest and the ground truth written to ``shortcut.json``."""

    manifest: Manifest
    cue: Cue
    classes: list[str]
    p: float
    test_p: float
    images: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # rel image path -> {"cue_mask", "split", ...}

    @property
    def counts(self) -> dict[str, int]:
        """Images with the cue per split."""
        out: dict[str, int] = {}
        for v in self.images.values():
            out[v["split"]] = out.get(v["split"], 0) + 1
        return out


def choose_classes(classes: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` classes drawn with ``seed`` (sorted), the default when the user names none."""
    if not 1 <= n <= len(classes):
        raise ValueError(f"--n-classes must be between 1 and the {len(classes)} classes of the data, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C]))
    return sorted(rng.choice(sorted(classes), size=n, replace=False).tolist())


def _check(manifest: Manifest, classes: Sequence[str], p: float, test_p: float) -> list[str]:
    if not 0 <= p <= 1 or not 0 <= test_p <= 1:
        raise ValueError(f"--p and --test-p are probabilities in [0, 1], got {p} and {test_p}")
    if not manifest.split("train").records:
        raise ValueError("the data has no train split: a shortcut is planted in train (and valid) images")
    wanted = [normalise_label(c) for c in classes]
    unknown = [c for c in wanted if c not in manifest.classes]
    if unknown or not wanted:
        raise ValueError(
            f"--classes: {', '.join(unknown) or 'none given'} not in the data; choose from {', '.join(manifest.classes)}"
        )
    return sorted(set(wanted))


def _rel(path: Path, root: Path | None) -> Path:
    if root is not None:
        try:
            return Path(path).resolve().relative_to(Path(root).resolve())
        except ValueError:
            pass
    return Path(Path(path).parent.name) / Path(path).name


def plant_shortcut(
    manifest: Manifest,
    out: str | os.PathLike[str] | None,
    cue: Cue,
    classes: Sequence[str],
    p: float = 0.9,
    test_p: float = 0.5,
    seed: int = 0,
    quiet: bool = True,
) -> Planted:
    """Write the dataset with the cue planted to ``out`` (``None``: in place, for a fresh synthetic dataset).

    Train/valid images of ``classes`` get the cue with probability ``p``; test images of all classes with
    ``test_p``. Images keep their relative paths; object masks are copied; the cue masks go to
    ``out/cue_masks/<same path>.png`` and ``shortcut.json`` lists them. Nothing is written on bad input.
    """
    chosen = _check(manifest, classes, p, test_p)
    src_root = manifest.root
    root = Path(out) if out is not None else Path(src_root or ".")
    if out is not None and root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose another --out")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0E]))
    records: list[Record] = []
    images: dict[str, dict[str, Any]] = {}
    with console.progress(len(manifest), f"plant {cue.kind}", quiet) as bar:
        for r in manifest:
            rel = _rel(r.path, src_root)
            prob = test_p if r.split == "test" else (p if r.label in chosen else 0.0)
            planted = bool(rng.random() < prob)
            dst = root / rel
            records.append(_write_one(r, rel, dst, root, src_root, cue, planted, images))
            bar.advance()
    new = Manifest(records, root)
    new.to_csv(root / "manifest.csv")
    planted_obj = Planted(new, cue, chosen, p, test_p, images)
    write_json(
        root / SHORTCUT_FILE,
        {
            "cue": cue.to_dict(),
            "classes": chosen,
            "p": p,
            "test_p": test_p,
            "seed": seed,
            "counts": planted_obj.counts,
            "note": "ground truth for scoring a shortcut audit; the audit itself never reads this file",
            "images": images,
        },
    )
    return planted_obj


def _write_one(
    r: Record,
    rel: Path,
    dst: Path,
    root: Path,
    src_root: Path | None,
    cue: Cue,
    planted: bool,
    images: dict[str, dict[str, Any]],
) -> Record:
    """Write one image (with the cue if ``planted``); copy its object mask; return its new record.

    Every image is decoded and re-encoded the same way, cued or not, so the encoding is not itself a cue
    (a re-compressed JPEG next to byte-copied ones would be one)."""
    in_place = Path(r.path).resolve() == dst.resolve() if dst.exists() else False
    if planted or not in_place:
        with Image.open(r.path) as im:
            arr = np.asarray(im.convert("RGB"))
        fmt = "PNG" if dst.suffix.lower() == ".png" else "JPEG"
        if planted:
            arr, m = cue.apply(arr)
            mask_rel = Path(CUE_MASKS) / rel.with_suffix(".png")
            write_bytes(root / mask_rel, _encode(np.where(m, 255, 0).astype(np.uint8), "PNG"))
            images[rel.as_posix()] = {"split": r.split, "label": r.label, "cue_mask": mask_rel.as_posix()}
        write_bytes(dst, _encode(arr, fmt))
    mask = r.mask
    if mask is not None and not in_place:
        mdst = root / _rel(mask, src_root)
        if Path(mask).resolve() != mdst.resolve():
            mdst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mask, mdst)
        mask = mdst
    return Record(dst, r.label, r.split, r.box, mask)


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"compress_level": 1} if fmt == "PNG" else {"quality": 95}
    Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def read_shortcut(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``shortcut.json`` of a planted dataset (for scoring an audit), with the cue rebuilt under ``"cue"``."""
    path = Path(root) / SHORTCUT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} was not made by `birdlens data plant-shortcut`")
    info = json.loads(path.read_text(encoding="utf-8"))
    info["cue"] = cue_from_dict(info["cue"])
    return info


def cue_mask(root: str | os.PathLike[str], rel_mask: str) -> np.ndarray:
    """A saved cue mask as bool ``[H, W]``; an empty one is refused (it would score nothing)."""
    path = Path(root) / rel_mask
    with Image.open(path) as im:
        m = np.asarray(im.convert("L")) > 0
    if not m.any():
        raise ValueError(f"cue mask {path} is empty: re-plant the shortcut")
    return m
