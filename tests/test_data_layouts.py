"""Layout discovery: split folders, class folders, CUB-200-2011, CSV manifests, and the shared photos."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from _data_helpers import make_class_tree, make_cub, make_split_tree, save_image
from birdlens.data.layouts import LayoutError, detect_layout, discover, load_manifest
from birdlens.data.manifest import Manifest, Record


def _split_counts(m: Manifest) -> dict[str, int]:
    return dict(Counter(r.split for r in m))


def test_split_folders_with_aliases_spelling_and_missing_class(tmp_path: Path) -> None:
    root = make_split_tree(
        tmp_path,
        {
            "PARAKETT AUKLET": {"train": 3, "valid": 1, "test": 1},
            "robin ": {"train": 3, "valid": 1},  # missing from test, lower case, trailing space
        },
        split_dirs={"train": "train", "valid": "val", "test": "TEST"},
    )
    # the Kaggle double space in one split only
    (root / "val" / "PARAKETT AUKLET").rename(root / "val" / "PARAKETT  AUKLET")
    save_image(root / "masks" / "x" / "m.png", 1)  # a non-split top-level folder is ignored
    (root / "train" / "robin " / "notes.txt").write_text("ignored silently")
    d = discover(root)
    assert d.layout == "split-folders" and detect_layout(root) == "split-folders"
    assert d.manifest.classes == ["PARAKETT AUKLET", "ROBIN"]
    assert _split_counts(d.manifest) == {"train": 6, "valid": 2, "test": 1}
    notes = " | ".join(d.notes)
    assert "'PARAKETT AUKLET' is spelled differently" in notes and "'PARAKETT  AUKLET'" in notes
    assert "'ROBIN' is missing from test" in notes
    assert "masks" in notes
    assert d.missing_from_splits() == [
        {"class": "ROBIN", "present_in": ["train", "valid"], "missing_from": ["test"]}
    ]


def test_class_folders_get_a_seeded_stratified_split(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path / "ds", {"A": 20, "B": 10, "C": 3})
    m1 = load_manifest(root, seed=0)
    assert detect_layout(root) == "class-folders"
    counts = Counter((r.label, r.split) for r in m1)
    assert (counts["A", "train"], counts["A", "valid"], counts["A", "test"]) == (14, 3, 3)
    assert (counts["B", "train"], counts["B", "valid"], counts["B", "test"]) == (6, 2, 2)  # round(1.5) = 2
    assert (counts["C", "train"], counts["C", "valid"], counts["C", "test"]) == (1, 1, 1)
    # deterministic for a seed, different for another seed, configurable ratios
    assert [r.split for r in load_manifest(root, seed=0)] == [r.split for r in m1]
    assert [r.split for r in load_manifest(root, seed=1)] != [r.split for r in m1]
    m3 = load_manifest(root, seed=0, ratios=(0.8, 0.1, 0.1))
    assert Counter(r.split for r in m3 if r.label == "A") == {"train": 16, "valid": 2, "test": 2}
    with pytest.raises(ValueError, match="ratios"):
        load_manifest(root, ratios=(0.5, 0.5))


def test_cub_root_with_boxes_and_carved_valid(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "CUB_200_2011")
    d = discover(root)
    assert d.layout == "cub"
    assert d.manifest.classes == ["BLACK FOOTED ALBATROSS", "LAYSAN ALBATROSS"]
    assert _split_counts(d.manifest) == {"train": 6, "valid": 2, "test": 4}
    assert all(r.box == (10.0, 5.0, 40.0, 30.0) for r in d.manifest)
    assert any("carved" in n and "valid" in n for n in d.notes)
    # the extracted archive: the root is one level down, next to attributes.txt
    (tmp_path / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    assert discover(tmp_path).layout == "cub"


def test_csv_manifests_kaggle_columns_no_split_and_bad_rows(tmp_path: Path) -> None:
    make_split_tree(
        tmp_path,
        {
            "ABBOTTS BABBLER": {"train": 2, "valid": 1, "test": 1},
            "ALBATROSS": {"train": 2, "valid": 1, "test": 1},
        },
    )
    rows = ["class id,filepaths,labels,data set,scientific name"]
    for p in sorted(tmp_path.glob("*/*/*.jpg")):
        rows.append(f"0,{p.relative_to(tmp_path).as_posix()},{p.parent.name},{p.parts[-3]},x")
    rows.append("0,,NOLABEL,train,x")
    rows.append("0,train/X/1.jpg,X,holdout,x")
    (tmp_path / "birds.csv").write_text("\n".join(rows) + "\n")
    d = discover(tmp_path / "birds.csv")
    assert d.layout == "csv"
    assert _split_counts(d.manifest) == {"train": 4, "valid": 2, "test": 2}
    assert {s.reason.split(" (")[0] for s in d.skipped} == {
        "CSV row without a path or a label",
        "unknown split 'holdout'",
    }
    # path,label only: a split is made; UTF-8 BOM and upper-case headers accepted
    plain = ["\ufeffPath,Label"] + [
        f"{r.path.relative_to(tmp_path)},{r.label}".replace("/", "\\") for r in d.manifest
    ]  # Windows separators too
    (tmp_path / "plain.csv").write_text("\n".join(plain) + "\n", encoding="utf-8")
    d2 = discover(tmp_path / "plain.csv")
    assert (
        len(d2.manifest) == 8
        and all(r.split for r in d2.manifest)
        and all(r.path.is_file() for r in d2.manifest)
    )
    assert any("no split given" in n for n in d2.notes)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LayoutError, match="no recognised path and label columns"):
        discover(tmp_path / "bad.csv")


def test_folder_with_birdlens_manifest_csv_keeps_masks_and_boxes(tmp_path: Path) -> None:
    img = save_image(tmp_path / "train" / "A" / "1.png", 1)
    img2 = save_image(tmp_path / "test" / "B" / "2.png", 2)
    mask = save_image(tmp_path / "masks" / "train" / "A" / "1.png", 3)
    Manifest([Record(img, "A", "train", (1, 2, 3, 4), mask), Record(img2, "B", "test")], tmp_path).to_csv(
        tmp_path / "manifest.csv"
    )
    d = discover(tmp_path)
    assert d.layout == "csv"
    assert d.manifest[0].mask == mask and d.manifest[0].box == (1, 2, 3, 4)
    assert [r.path.resolve() for r in d.manifest] == [img.resolve(), img2.resolve()]


def test_unrecognised_and_missing_paths_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="no dataset layout recognised"):
        discover(tmp_path / "empty")
    with pytest.raises(LayoutError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(LayoutError, match=r"not a \.csv"):
        discover(tmp_path / "x.txt")


@pytest.mark.shared_data
def test_shared_bird_photos_are_found_exactly(shared_birds: Path) -> None:
    d = discover(shared_birds)
    assert len(d.manifest.classes) == 20
    assert _split_counts(d.manifest) == {"train": 840, "valid": 180, "test": 180}
    assert set(d.manifest.counts()["AMERICAN GOLDFINCH"].values()) == {42, 9}
    assert d.missing_from_splits() == [] and d.skipped == []
    # the same photos read as split folders (ignoring the CSV) give the same records
    from birdlens.data.layouts import read_split_folders

    folders = read_split_folders(shared_birds)
    assert sorted((r.path.resolve(), r.label, r.split) for r in folders.manifest) == sorted(
        (r.path.resolve(), r.label, r.split) for r in d.manifest
    )


def test_manifest_csv_outside_the_data_folder_reads_back_from_any_directory(
    tmp_path: Path, monkeypatch
) -> None:
    # a run directory's manifest with images given by a path relative to the working directory
    # (`birdlens train --data ../shared/...`): the images must be found again from the run directory
    save_image(tmp_path / "data" / "train" / "A" / "1.png", 1)
    monkeypatch.chdir(tmp_path)
    rel = Path("data") / "train" / "A" / "1.png"
    (tmp_path / "run").mkdir()
    Manifest([Record(rel, "A", "train")], tmp_path / "data").to_csv(tmp_path / "run" / "manifest.csv")
    monkeypatch.chdir(tmp_path / "run")
    back = Manifest.from_csv(tmp_path / "run" / "manifest.csv")
    assert back[0].path.is_file() and back[0].path.resolve() == (tmp_path / "data" / "train" / "A" / "1.png")


def test_csv_paths_are_read_as_written_when_such_a_file_exists(tmp_path: Path) -> None:
    # a POSIX file name may hold a backslash or edge spaces; a Windows CSV's backslashes are separators
    odd = [save_image(tmp_path / " A" / "lead.png", 1), save_image(tmp_path / "A" / "back\\slash.png", 2)]
    win = save_image(tmp_path / "B" / "win.png", 3)
    rows = ["path,label", " A/lead.png,A", "A/back\\slash.png,A", "B\\win.png,B"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    d = discover(tmp_path / "m.csv")
    assert [r.path for r in d.manifest] == [*odd, win]
    assert all(r.path.is_file() for r in d.manifest)
