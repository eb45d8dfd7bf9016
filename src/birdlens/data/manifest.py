"""The Manifest: one row per image (path, label, split, optional box / mask), whatever the layout on disk.

Every later stage reads a Manifest, never the raw folder layout, so adding a new source only means writing
one more discovery function. On disk it is a plain CSV (``manifest.csv``) that a person can open.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from birdlens.utils.atomic import write_text

SPLITS: tuple[str, ...] = ("train", "valid", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "dev": "valid",
    "test": "test",
    "testing": "test",
}
CSV_COLUMNS = ("path", "label", "split", "x", "y", "w", "h", "mask")


def normalise_label(name: str) -> str:
    """Strip, collapse inner whitespace and upper-case: ``' parakett  auklet'`` -> ``'PARAKETT AUKLET'``."""
    return re.sub(r"\s+", " ", str(name)).strip().upper()


def normalise_split(name: str | None) -> str | None:
    """Map ``val``/``validation``/... to the canonical ``train``/``valid``/``test``; None stays None."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if key == "":
        return None
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {name!r}: use one of train, valid (val, validation), test")
    return _SPLIT_ALIASES[key]


@dataclass(frozen=True)
class Record:
    """One image. ``box`` is (x, y, w, h) in pixels of the original image; ``mask`` a label/part mask path."""

    path: Path
    label: str
    split: str | None = None
    box: tuple[float, float, float, float] | None = None
    mask: Path | None = None


@dataclass
class Manifest:
    """An ordered list of :class:`Record` plus the folder it was discovered from."""

    records: list[Record] = field(default_factory=list)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    @property
    def classes(self) -> list[str]:
        """Sorted class names: the index of a class in this list is its integer target."""
        return sorted({r.label for r in self.records})

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def splits(self) -> list[str]:
        present = {r.split for r in self.records}
        return [s for s in SPLITS if s in present]

    def split(self, name: str) -> Manifest:
        """The records of one split (``val``/``validation`` accepted)."""
        key = normalise_split(name)
        return Manifest([r for r in self.records if r.split == key], self.root)

    def filter(self, keep: Iterable[bool] | None = None, *, labels: Iterable[str] | None = None) -> Manifest:
        recs = self.records
        if keep is not None:
            recs = [r for r, k in zip(recs, keep, strict=True) if k]
        if labels is not None:
            wanted = {normalise_label(x) for x in labels}
            recs = [r for r in recs if r.label in wanted]
        return Manifest(list(recs), self.root)

    def counts(self) -> dict[str, dict[str, int]]:
        """class -> split -> number of images (split ``None`` is reported as ``'unsplit'``)."""
        c: Counter[tuple[str, str]] = Counter((r.label, r.split or "unsplit") for r in self.records)
        out: dict[str, dict[str, int]] = {}
        for (label, split), n in sorted(c.items()):
            out.setdefault(label, {})[split] = n
        return out

    def with_records(self, records: Iterable[Record]) -> Manifest:
        return Manifest(list(records), self.root)

    # ----------------------------------------------------------------------------------------- CSV I/O
    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically; paths under the CSV's folder are stored relative to it (the folder can move)."""
        path = Path(path)
        base = path.parent.resolve()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in self.records:
            box = r.box or ("", "", "", "")
            w.writerow(
                [
                    _rel(r.path, base),
                    r.label,
                    r.split or "",
                    *(_fmt(v) for v in box),
                    _rel(r.mask, base) if r.mask else "",
                ]
            )
        return write_text(path, buf.getvalue())

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a file written by :meth:`to_csv` (relative paths resolve against the CSV's folder)."""
        path = Path(path)
        base = path.parent
        records = []
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                box = None
                if row.get("x") not in (None, ""):
                    box = (float(row["x"]), float(row["y"]), float(row["w"]), float(row["h"]))
                mask = base / row["mask"] if row.get("mask") else None
                records.append(
                    Record(
                        path=base / row["path"],
                        label=normalise_label(row["label"]),
                        split=normalise_split(row.get("split")),
                        box=box,
                        mask=mask,
                    )
                )
        return cls(records, base)


def _rel(p: Path, base: Path) -> str:
    p = Path(p).resolve()
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)  # absolute: a path relative to the current directory would be read against the CSV's


def _fmt(v: float | str) -> str:
    if v == "":
        return ""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def replace_record(r: Record, **changes: object) -> Record:
    return replace(r, **changes)  # type: ignore[arg-type]
