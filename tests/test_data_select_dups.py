"""Selection (top-N, per-class K, minimum), duplicates and leaks, and the data report's content."""

from __future__ import annotations

import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from _data_helpers import make_split_tree
from birdlens.data.duplicates import dedupe, find_duplicates, hamming_pairs
from birdlens.data.manifest import Manifest, Record
from birdlens.data.report import build_data_report, scan_data
from birdlens.data.select import allocate, select
from birdlens.data.validate import validate_manifest


def _fake(counts: dict[str, dict[str, int]]) -> Manifest:
    recs = [
        Record(Path(f"/x/{s}/{c}/{i}.jpg"), c, s)
        for c, per in counts.items()
        for s, n in per.items()
        for i in range(n)
    ]
    return Manifest(recs, Path("/x"))


def test_top_n_ties_by_name_minimum_and_per_class_stratified() -> None:
    m = _fake(
        {
            "ZEBRA FINCH": {"train": 70, "valid": 15, "test": 15},
            "AUK": {"train": 7, "valid": 2, "test": 1},
            "BEE EATER": {"train": 7, "valid": 2, "test": 1},
            "CROW": {"train": 30},
            "DODO": {"train": 2},
        }
    )
    with pytest.warns(UserWarning, match="DODO"):
        sel = select(m, top=3, per_class=20, min_per_class=5, seed=0)
    assert sel.manifest.classes == ["AUK", "CROW", "ZEBRA FINCH"]  # AUK beats BEE EATER on the name tie
    assert "minimum" in sel.dropped_classes["DODO"] and "top 3" in sel.dropped_classes["BEE EATER"]
    got = Counter((r.label, r.split) for r in sel.manifest)
    assert (got["ZEBRA FINCH", "train"], got["ZEBRA FINCH", "valid"], got["ZEBRA FINCH", "test"]) == (
        14,
        3,
        3,
    )
    assert got["CROW", "train"] == 20 and got["AUK", "train"] == 7
    assert sel.subsampled == {"ZEBRA FINCH": (100, 20), "CROW": (30, 20)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = select(m, top=3, per_class=20, min_per_class=5, seed=0)
        other = select(m, top=3, per_class=20, min_per_class=5, seed=1)
    assert again.kept == sel.kept and other.kept != sel.kept
    # largest remainder: 3.5 / 1.0 / 0.5 -> 3 / 1 / 0, the spare goes to the first split on a tie
    assert allocate({"train": 7, "valid": 2, "test": 1}, 5) == {"train": 4, "valid": 1, "test": 0}


def test_hamming_pairs_matches_brute_force() -> None:
    import random

    rng = random.Random(0)
    base = [rng.getrandbits(64) for _ in range(300)]
    hashes = base + [h ^ (1 << rng.randrange(64)) for h in base[:20]] + [base[0] ^ 0b111]
    got = {(i, j) for i, j, _ in hamming_pairs(hashes, 3, block=37)}
    want = {
        (i, j)
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if bin(hashes[i] ^ hashes[j]).count("1") <= 3
    }
    assert got == want and len(want) >= 21


def _dataset_with_copies(tmp_path: Path) -> Path:
    root = make_split_tree(
        tmp_path / "ds", {"A": {"train": 4, "valid": 2, "test": 2}, "B": {"train": 4, "valid": 2, "test": 2}}
    )
    shutil.copy(root / "train/A/000.jpg", root / "test/A/copy_of_train.jpg")  # exact leak
    shutil.copy(root / "train/B/000.jpg", root / "train/B/same_split_copy.jpg")  # exact, same split
    img = Image.open(root / "train/B/001.jpg")
    img.resize((48, 36)).save(root / "valid/B/resized.png")  # near leak (resized + re-encoded)
    return root


def test_duplicates_leaks_and_dedupe(tmp_path: Path) -> None:
    root = _dataset_with_copies(tmp_path)
    scan = scan_data(root)
    rep = scan.report()
    kinds = sorted((Path(r["a"]).name, Path(r["b"]).name, r["kind"], r["leak"]) for r in rep["duplicates"])
    assert kinds == [
        ("000.jpg", "copy_of_train.jpg", "exact", True),
        ("000.jpg", "same_split_copy.jpg", "exact", False),
        ("001.jpg", "resized.png", "near", True),
    ]
    assert len(rep["leaks"]) == 2 and all(r["leak"] for r in rep["leaks"])
    # --dedupe: the later split's copy goes, the train original stays
    deduped = scan_data(root, dedupe_splits=True)
    names = {r.path.name for r in deduped.manifest}
    assert (
        "copy_of_train.jpg" not in names and "resized.png" not in names and "same_split_copy.jpg" not in names
    )
    assert {"000.jpg", "001.jpg"} <= names
    assert len(deduped.manifest) == len(scan.manifest) - 3
    assert sorted(Path(p).name for p in deduped.report()["dedupe_dropped"]) == [
        "copy_of_train.jpg",
        "resized.png",
        "same_split_copy.jpg",
    ]
    # one photo filed under two classes is flagged as a label conflict
    shutil.copy(root / "valid/A/000.jpg", root / "valid/B/misfiled.jpg")
    conflict = [r for r in scan_data(root).report()["duplicates"] if r["label_conflict"]]
    assert [(Path(r["b"]).name, r["leak"]) for r in conflict] == [("misfiled.jpg", False)]
    # near search can be switched off; exact pairs remain
    val = validate_manifest(scan.validation.manifest)
    assert {p.kind for p in find_duplicates(val.manifest, val.infos, None)} == {"exact"}


def test_dedupe_keeps_the_earliest_split_of_an_exact_group(tmp_path: Path) -> None:
    root = make_split_tree(
        tmp_path / "ds", {"A": {"train": 2, "valid": 1, "test": 1}, "B": {"train": 2, "valid": 1, "test": 1}}
    )
    src = root / "train/A/001.jpg"
    shutil.copy(src, root / "test/A/aaa_first_in_order.jpg")
    shutil.copy(src, root / "valid/A/zzz.jpg")
    val = validate_manifest(
        Manifest(sorted(scan_data(root).validation.manifest.records, key=lambda r: r.path.name), root)
    )
    kept, _, dropped = dedupe(val.manifest, val.infos, find_duplicates(val.manifest, val.infos))
    assert sorted(r.path.name for r in dropped) == ["aaa_first_in_order.jpg", "zzz.jpg"]
    assert src in {r.path for r in kept}


def test_report_keys_and_problems(tmp_path: Path) -> None:
    root = _dataset_with_copies(tmp_path)
    rep = build_data_report(root, top=1, per_class=5)
    for key in ("n_images", "n_classes", "classes", "skipped", "duplicates", "leaks"):
        assert key in rep
    assert rep["n_classes"] == 1 and rep["n_images"] == 5 and not rep["usable"]
    assert "only one class" in rep["problem"]
    assert list(rep["classes"]) == ["B"] and rep["classes"]["B"]["total"] == 5  # B has 10 images, A 9
    good = build_data_report(root)
    assert good["usable"] and good["problem"] is None and good["n_classes"] == 2
    assert good["classes"]["A"] == {"train": 4, "valid": 2, "test": 3, "total": 9}
    assert good["image_sizes"]["modes"] == {"RGB": 19}
