"""Find the dataset in whatever a user points at, and turn it into a :class:`Manifest`.

Detection order for a PATH (first match wins):

1. a ``.csv`` file: a CSV manifest (column aliases below);
2. a folder with a ``manifest.csv`` whose columns are recognised (birdlens' own, the shared photos' one);
3. a CUB-200-2011 root (``images.txt``, ``image_class_labels.txt``, ``classes.txt``, ``train_test_split.txt``,
   optional ``bounding_boxes.txt``); CUB has train/test only, so a seeded stratified valid split is carved
   out of train and a note says so;
4. split folders ``train/ valid|val|validation/ test/`` each holding class folders (other top-level folders,
   e.g. ``masks/``, are ignored);
5. one folder of class folders: a seeded stratified split is made (default 70/15/15);
6. a folder whose only sub-folder is one of the above (what archives and kagglehub unpack to).

Inside class folders only direct entries are read. Hidden/system files and non-image extensions are ignored
silently; an entry with an image extension is always listed, even a directory or a broken link, so that
validation reports it by name instead of it vanishing. Likewise a class folder without image files (or one
that cannot be read) is listed as skipped with its reason, never dropped in silence.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from birdlens.data.images import Skipped, is_ignored_name, is_image_candidate
from birdlens.data.manifest import SPLITS, Manifest, Record, normalise_label, normalise_split
from birdlens.data.splits import DEFAULT_RATIOS, carve_valid, check_ratios, stratified_split
from birdlens.data.staging import is_staging_path

PATH_COLUMNS = ("path", "filepaths", "filepath", "relative_path", "file", "filename", "image", "image_path")
LABEL_COLUMNS = ("label", "labels", "species", "class", "class_name", "category")
SPLIT_COLUMNS = ("split", "data set", "dataset", "subset", "set")
SPLIT_DIR_NAMES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}
CUB_FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt")


class LayoutError(ValueError):
    """The path holds no dataset birdlens can read; the message is one sentence saying what to do."""


@dataclass
class Discovery:
    """A discovered dataset: the manifest plus what a person should know about how it was read."""

    manifest: Manifest
    layout: str
    root: Path
    notes: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # label -> split -> raw spellings seen (e.g. {"PARAKETT AUKLET": {"valid": ["PARAKETT  AUKLET"]}})
    spellings: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def missing_from_splits(self) -> list[dict[str, object]]:
        """Classes present in some split but absent from another one, by name."""
        return missing_from_splits(self.manifest)


def missing_from_splits(manifest: Manifest) -> list[dict[str, object]]:
    splits = manifest.splits
    if len(splits) < 2:
        return []
    counts = manifest.counts()
    out: list[dict[str, object]] = []
    for label, per in counts.items():
        missing = [s for s in splits if per.get(s, 0) == 0]
        if missing:
            out.append(
                {
                    "class": label,
                    "present_in": [s for s in splits if per.get(s, 0) > 0],
                    "missing_from": missing,
                }
            )
    return out


# ------------------------------------------------------------------------------------------------ entry
def discover(
    path: str | os.PathLike[str], seed: int = 0, ratios: Sequence[float] = DEFAULT_RATIOS
) -> Discovery:
    """Detect the layout of ``path`` and read it (see the module doc for the order)."""
    ratios = check_ratios(ratios)
    p = Path(path).expanduser()
    if not p.exists():
        raise LayoutError(f"{p} does not exist: give a folder of images or a CSV manifest.")
    if is_staging_path(p):
        raise LayoutError(
            f"{p} is the unfinished output of an interrupted `birdlens data prepare`: run prepare again "
            "(it removes this folder) and use its --out folder."
        )
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise LayoutError(
                f"{p} is a file but not a .csv manifest: give a folder of images or a CSV file."
            )
        return _finish(read_csv_manifest(p), seed, ratios)
    return _discover_dir(p, seed, ratios, depth=0)


def load_manifest(
    path: str | os.PathLike[str], seed: int = 0, ratios: Sequence[float] = DEFAULT_RATIOS
) -> Manifest:
    """The :class:`Manifest` of a dataset on disk (use :func:`discover` to also get notes and skipped rows)."""
    return discover(path, seed=seed, ratios=ratios).manifest


def detect_layout(path: str | os.PathLike[str]) -> str | None:
    """Name of the layout at ``path`` (``csv``, ``cub``, ``split-folders``, ``class-folders``) or None."""
    p = Path(path)
    if p.is_file():
        return "csv" if p.suffix.lower() == ".csv" else None
    if not p.is_dir():
        return None
    if (p / "manifest.csv").is_file() and _csv_columns_ok(p / "manifest.csv"):
        return "csv"
    if all((p / f).is_file() for f in CUB_FILES):
        return "cub"
    if _split_dirs(p):
        return "split-folders"
    if _class_dirs(p):
        return "class-folders"
    sub = _only_subdir(p)
    return detect_layout(sub) if sub is not None else None


def _discover_dir(p: Path, seed: int, ratios: tuple[float, float, float], depth: int) -> Discovery:
    manifest_csv = p / "manifest.csv"
    if manifest_csv.is_file() and _csv_columns_ok(manifest_csv):
        return _finish(read_csv_manifest(manifest_csv), seed, ratios)
    if all((p / f).is_file() for f in CUB_FILES):
        return _finish(read_cub(p, seed, ratios), seed, ratios)
    splits = _split_dirs(p)
    if splits:
        return _finish(read_split_folders(p, splits), seed, ratios)
    classes = _class_dirs(p)
    if classes:
        return _finish(read_class_folders(p, classes), seed, ratios)
    sub = _only_subdir(p)
    if sub is not None and depth < 2:
        try:
            d = _discover_dir(sub, seed, ratios, depth + 1)
        except LayoutError:
            pass  # report the folder the user gave, not its sub-folder
        else:
            d.notes.insert(0, f"dataset found in the sub-folder {sub.name}/")
            return d
    hint = ""
    if manifest_csv.is_file():
        hint = " (its manifest.csv has no recognised path and label columns)"
    raise LayoutError(
        f"no dataset layout recognised in {p}{hint}: expected train/ valid/ test/ folders of class folders, "
        "one folder per class, a CUB-200-2011 root, or a CSV with path and label columns."
    )


def _finish(d: Discovery, seed: int, ratios: tuple[float, float, float]) -> Discovery:
    """Split what has no split, and name classes missing from a split."""
    recs = d.manifest.records
    unsplit = [i for i, r in enumerate(recs) if r.split is None]
    if unsplit:
        done = stratified_split([recs[i] for i in unsplit], ratios, seed)
        new = list(recs)
        for i, r in zip(unsplit, done, strict=True):
            new[i] = r
        d.manifest = Manifest(new, d.manifest.root)
        pct = "/".join(f"{round(x * 100)}" for x in ratios)
        what = "all images" if len(unsplit) == len(recs) else f"{len(unsplit)} images without a split"
        d.notes.append(
            f"no split given for {what}: made a stratified {pct} train/valid/test split (seed {seed})"
        )
    for label, per_split in sorted(d.spellings.items()):
        raw = {s for names in per_split.values() for s in names}
        if len(raw) > 1:
            where = "; ".join(
                f"{split}: {', '.join(repr(n) for n in sorted(set(names)))}"
                for split, names in sorted(per_split.items())
            )
            d.notes.append(f"class {label!r} is spelled differently across folders ({where}); merged")
    for m in missing_from_splits(d.manifest):
        d.notes.append(
            f"class {m['class']!r} is missing from {', '.join(m['missing_from'])} "  # type: ignore[arg-type]
            f"(present in {', '.join(m['present_in'])})"
        )  # type: ignore[arg-type]
    return d


# ------------------------------------------------------------------------------------------------ folders
def _subdirs(p: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(p) as it:
            return sorted(
                (
                    e
                    for e in it
                    if not is_ignored_name(e.name)
                    and e.is_dir(follow_symlinks=True)
                    and not is_image_candidate(e.name)
                ),
                key=lambda e: e.name,
            )
    except OSError:
        return []


def _has_images(p: Path) -> bool:
    try:
        with os.scandir(p) as it:
            return any(is_image_candidate(e.name) for e in it)
    except OSError:
        return False


def _split_dirs(p: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for e in _subdirs(p):
        key = SPLIT_DIR_NAMES.get(e.name.strip().lower())
        if key is not None and key not in found:
            found[key] = Path(e.path)
    return found


def _class_dirs(p: Path) -> list[Path]:
    return [Path(e.path) for e in _subdirs(p) if _has_images(Path(e.path))]


def _only_subdir(p: Path) -> Path | None:
    subs = _subdirs(p)
    return Path(subs[0].path) if len(subs) == 1 else None


def _scan_class_dir(d: Path) -> tuple[list[Path], str | None]:
    """Direct entries with an image name (files, and also directories/links so validation can report them).

    The second item is why the folder gives no images (empty, unreadable), for the report; None otherwise.
    """
    try:
        with os.scandir(d) as it:
            found = sorted((Path(e.path) for e in it if is_image_candidate(e.name)), key=lambda q: q.name)
    except OSError as e:
        return [], f"cannot read the folder ({e.strerror or e})"
    return found, None if found else "empty class folder (no image files)"


class _ClassFolders:
    """Records read from class folders, and the folders that gave none (reported, never dropped silently)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records: list[Record] = []
        self.spellings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.empty: list[tuple[Path, str, str]] = []  # folder, label, reason

    def read(self, d: Path, split: str | None) -> None:
        label = normalise_label(d.name)
        if not label:
            self.empty.append((d, "", "folder name is blank, so it names no class"))
            return
        self.spellings[label][split or "unsplit"].append(d.name)
        files, why = _scan_class_dir(d)
        if why is not None:
            self.empty.append((d, label, why))
        self.records.extend(Record(path=f, label=label, split=split) for f in files)

    def skipped(self) -> list[Skipped]:
        have = {r.label for r in self.records}
        out = []
        for d, label, why in self.empty:
            if label and label not in have:
                why += f": class {label!r} left out"
            elif label:
                why += f" in this split (class {label!r} has images elsewhere)"
            out.append(Skipped(f"{_rel_dir(d, self.root)}/", why))
        return out


def _rel_dir(d: Path, root: Path) -> str:
    try:
        return d.relative_to(root).as_posix()
    except ValueError:
        return str(d)


def read_split_folders(root: Path, splits: dict[str, Path] | None = None) -> Discovery:
    """Layout (a): ``train/ valid/ test/`` (any alias) each with one folder per class."""
    splits = splits or _split_dirs(root)
    found = _ClassFolders(root)
    notes: list[str] = []
    for split in SPLITS:
        if split not in splits:
            continue
        for e in _subdirs(splits[split]):
            found.read(Path(e.path), split)
    present = {d.name.lower() for d in (Path(e.path) for e in _subdirs(root))}
    others = sorted(n for n in present if n not in SPLIT_DIR_NAMES)
    if others:
        notes.append(f"ignored top-level folder(s) that are not splits: {', '.join(others)}")
    absent = [s for s in SPLITS if s not in splits]
    if absent:
        notes.append(f"no {'/'.join(absent)} folder: that split is empty")
    return Discovery(
        Manifest(found.records, root),
        "split-folders",
        root,
        notes,
        found.skipped(),
        spellings={k: dict(v) for k, v in found.spellings.items()},
    )


def read_class_folders(root: Path, class_dirs: list[Path] | None = None) -> Discovery:
    """Layout (b): one folder per class, no split yet (``_finish`` makes one).

    Sub-folders of ``root`` without images are reported as skipped classes, not dropped in silence.
    """
    class_dirs = class_dirs if class_dirs is not None else _class_dirs(root)
    found = _ClassFolders(root)
    for d in class_dirs:
        found.read(d, None)
    chosen = set(class_dirs)
    for e in _subdirs(root):
        if Path(e.path) not in chosen:
            found.read(Path(e.path), None)
    return Discovery(
        Manifest(found.records, root),
        "class-folders",
        root,
        skipped=found.skipped(),
        spellings={k: dict(v) for k, v in found.spellings.items()},
    )


# ------------------------------------------------------------------------------------------------ CSV
def _find_column(fields: Sequence[str], aliases: Sequence[str]) -> str | None:
    norm = {re.sub(r"[\s_]+", " ", f.strip().lower()): f for f in fields}
    for a in aliases:
        key = re.sub(r"[\s_]+", " ", a)
        if key in norm:
            return norm[key]
    return None


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return []


def _csv_columns_ok(path: Path) -> bool:
    header = _csv_header(path)
    return _find_column(header, PATH_COLUMNS) is not None and _find_column(header, LABEL_COLUMNS) is not None


def read_csv_manifest(path: Path) -> Discovery:
    """Layout (d): a CSV with path and label columns (aliases accepted), optional split, box and mask.

    Relative paths resolve against the CSV's folder. A row that cannot be used (no path, no label, an unknown
    split name) is skipped and reported with its line number.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse_csv(f, path)
    except OSError as e:
        raise LayoutError(f"cannot read {path} ({e.strerror}): check the file's permissions.") from None


def _csv_file(raw: str, base: Path) -> Path:
    """The file a CSV path cell names: as written when that exists (a file name may hold spaces or a
    backslash), else stripped, with a Windows CSV's backslashes read as separators."""
    if os.path.lexists(base / raw):
        return base / raw
    rel = raw.strip()
    if "\\" in rel and os.sep == "/":
        rel = rel.replace("\\", "/")  # a CSV written on Windows
    return base / rel  # an absolute path stays itself


def _parse_csv(f: TextIO, path: Path) -> Discovery:
    base = path.parent
    records: list[Record] = []
    skipped: list[Skipped] = []
    spellings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    try:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
    except (csv.Error, UnicodeDecodeError) as e:
        raise LayoutError(f"{path} is not a readable CSV ({e}): save it as UTF-8 CSV.") from None
    c_path, c_label = _find_column(fields, PATH_COLUMNS), _find_column(fields, LABEL_COLUMNS)
    c_split = _find_column(fields, SPLIT_COLUMNS)
    if c_path is None or c_label is None:
        raise LayoutError(
            f"{path} has no recognised path and label columns (found: {', '.join(fields) or 'none'}): "
            f"name them path,label[,split] (or filepaths,labels,data set)."
        )
    c_box = [_find_column(fields, (k,)) for k in ("x", "y", "w", "h")]
    c_mask = _find_column(fields, ("mask", "mask_path"))
    try:
        for line, row in enumerate(reader, start=2):
            raw_path = row.get(c_path) or ""
            rel = raw_path.strip()
            raw_label = row.get(c_label) or ""
            label = normalise_label(raw_label)
            where = f"{path.name}:{line}"
            if not rel or not label:
                skipped.append(Skipped(where, "CSV row without a path or a label"))
                continue
            try:
                split = normalise_split(row.get(c_split)) if c_split else None
            except ValueError:
                skipped.append(
                    Skipped(where, f"unknown split {row.get(c_split)!r} (use train, valid or test)")
                )
                continue
            box = None
            if all(c_box) and all((row.get(c) or "").strip() for c in c_box):  # type: ignore[arg-type]
                try:
                    box = tuple(float(row[c]) for c in c_box)  # type: ignore[index]
                except ValueError:
                    box = None
            mask_rel = (row.get(c_mask) or "").strip() if c_mask else ""
            records.append(
                Record(
                    path=_csv_file(raw_path, base),
                    label=label,
                    split=split,
                    box=box,
                    mask=(base / mask_rel) if mask_rel else None,
                )
            )  # type: ignore[arg-type]
            spellings[label][split or "unsplit"].append(raw_label.strip())
    except (csv.Error, UnicodeDecodeError) as e:
        raise LayoutError(f"{path} is not a readable CSV ({e}): save it as UTF-8 CSV.") from None
    return Discovery(
        Manifest(records, base),
        "csv",
        base,
        [f"read the CSV manifest {path.name}"],
        skipped,
        spellings={k: dict(v) for k, v in spellings.items()},
    )


# ------------------------------------------------------------------------------------------------ CUB
def _read_table(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2:
                out[parts[0]] = (
                    parts[1].split()
                    if path.name != "images.txt" and path.name != "classes.txt"
                    else [parts[1]]
                )
    return out


def cub_class_name(raw: str) -> str:
    """``'001.Black_footed_Albatross'`` -> ``'BLACK FOOTED ALBATROSS'``."""
    name = re.sub(r"^\d+\.", "", raw.strip())
    return normalise_label(name.replace("_", " "))


def read_cub(root: Path, seed: int = 0, ratios: Sequence[float] = DEFAULT_RATIOS) -> Discovery:
    """Layout (c): CUB-200-2011, boxes attached; valid carved from train (CUB only has train/test)."""
    r = check_ratios(ratios)
    try:
        images = _read_table(root / "images.txt")
        labels = _read_table(root / "image_class_labels.txt")
        classes = _read_table(root / "classes.txt")
        is_train = _read_table(root / "train_test_split.txt")
        boxes = _read_table(root / "bounding_boxes.txt") if (root / "bounding_boxes.txt").is_file() else {}
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutError(
            f"cannot read the CUB-200-2011 index files in {root} ({e}): re-extract the archive."
        ) from None
    records: list[Record] = []
    skipped: list[Skipped] = []
    for img_id, (rel,) in sorted(images.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
        cls = labels.get(img_id, [None])[0]
        if cls is None or cls not in classes:
            skipped.append(Skipped(f"images/{rel}", "CUB image without a class in image_class_labels.txt"))
            continue
        flag = is_train.get(img_id, [None])[0]
        split = "train" if flag == "1" else "test" if flag == "0" else None
        box = None
        if img_id in boxes:
            try:
                box = tuple(float(v) for v in boxes[img_id][:4])
            except ValueError:
                box = None
        records.append(
            Record(path=root / "images" / rel, label=cub_class_name(classes[cls][0]), split=split, box=box)
        )  # type: ignore[arg-type]
    fraction = r[1] / (r[0] + r[1])
    records = carve_valid(records, fraction, seed)
    notes = [
        f"CUB-200-2011 has only train/test: carved a stratified {fraction:.0%} of train into valid "
        f"(seed {seed})"
    ]
    if not boxes:
        notes.append("no bounding_boxes.txt: records have no boxes")
    return Discovery(Manifest(records, root), "cub", root, notes, skipped)
