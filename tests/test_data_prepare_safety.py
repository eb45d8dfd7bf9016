"""Issue 26 (6, 7): ``prepare`` output folders follow the umask, a killed run's leftovers are cleaned and never
read as a dataset, class names map to one safe folder each, and empty class folders are reported."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _data_helpers import make_split_tree
from birdlens.data.layouts import LayoutError, discover
from birdlens.data.prepare import prepare_dataset


def _two_classes(root: Path) -> Path:
    return make_split_tree(
        root, {"A": {"train": 3, "valid": 1, "test": 1}, "B": {"train": 3, "valid": 1, "test": 1}}
    )


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_prepared_root_follows_the_umask_when_it_replaces_a_folder(tmp_path: Path, umask_022: None) -> None:
    src = _two_classes(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    (out / "old.txt").write_text("an earlier output")
    prepare_dataset(src, out, size=16, force=True, near_threshold=None, progress=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_dir()} == {0o755}


_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import birdlens.data.prepare as prep
    calls = []
    real = prep.load_resized
    def dies_on_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer or `kill -9` does: no clean-up runs
        return real(*a, **k)
    prep.load_resized = dies_on_the_third
    prep.prepare_dataset(sys.argv[1], sys.argv[2], size=16, near_threshold=None, progress=False)
    """
)


def test_a_killed_prepare_leaves_nothing_that_is_read_or_kept(tmp_path: Path) -> None:
    src = _two_classes(tmp_path / "src")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BIRDLENS_QUIET": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _KILLED, str(src), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == -9, res.stderr[-2000:]
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert len(left) == 1 and not out.exists()  # the precondition: a half-written staging folder
    with pytest.raises(LayoutError, match="unfinished output of an interrupted `birdlens data prepare`"):
        discover(left[0])
    with pytest.raises(LayoutError, match="unfinished output"):
        discover(left[0] / "train")
    again = prepare_dataset(src, out, size=16, near_threshold=None, progress=False)
    assert again.report["prepared"]["removed_stale"] == [left[0].name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert len(again.manifest) == 10


def test_a_running_prepares_staging_folder_is_not_removed(tmp_path: Path) -> None:
    src = _two_classes(tmp_path / "src")
    busy = tmp_path / f".out.partial-{os.getppid()}-abcd1234"  # a live process (our parent)
    busy.mkdir()
    res = prepare_dataset(src, tmp_path / "out", size=16, near_threshold=None, progress=False)
    assert busy.is_dir() and res.report["prepared"]["removed_stale"] == []


def _csv_dataset(root: Path, labels: dict[str, str]) -> Path:
    """A CSV whose rows relabel the images of ``_two_classes``: folder name -> CSV label."""
    _two_classes(root)
    rows = ["path,label,split"]
    rows += [
        f"{p.relative_to(root).as_posix()},{labels[p.parent.name]},{p.parts[-3]}"
        for p in sorted(root.glob("*/*/*.jpg"))
    ]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root / "list.csv"


def test_a_dot_dot_label_gets_its_own_safe_folder_with_a_note(tmp_path: Path) -> None:
    csv_path = _csv_dataset(tmp_path / "src", {"A": "..", "B": ".hidden"})
    out = tmp_path / "out"
    res = prepare_dataset(csv_path, out, size=16, near_threshold=None, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "data_report.json",
        "manifest.csv",
        "test",
        "train",
        "valid",
    ]
    for split in ("train", "valid", "test"):
        assert sorted(p.name for p in (out / split).iterdir()) == ["_HIDDEN", "__"]
        assert not [p for p in (out / split).iterdir() if p.is_file()]
    assert res.manifest.classes == ["..", ".HIDDEN"]  # the labels themselves are kept
    assert res.report["prepared"]["class_folders"] == {"..": "__", ".HIDDEN": "_HIDDEN"}
    assert any("class '..' is written to the folder '__'" in n for n in res.report["notes"])


def test_two_labels_that_map_to_one_folder_are_an_error_naming_both(tmp_path: Path) -> None:
    from birdlens.data.report import DataUnusable

    csv_path = _csv_dataset(tmp_path / "src", {"A": "A/B", "B": "A_B"})
    with pytest.raises(DataUnusable, match=r"classes 'A/B' and 'A_B' both map to the folder name 'A_B'"):
        prepare_dataset(csv_path, tmp_path / "out", size=16, near_threshold=None, progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_empty_class_folders_are_reported_as_skipped_classes(tmp_path: Path) -> None:
    from _data_helpers import make_class_tree
    from birdlens.data.report import scan_data

    flat = make_class_tree(tmp_path / "flat", {"A": 4, "B": 4})
    (flat / "EMPTY").mkdir()
    (flat / "NOTES ONLY").mkdir()
    (flat / "NOTES ONLY" / "readme.txt").write_text("no pictures here")
    rep = scan_data(flat, near_threshold=None, progress=False).report()
    assert rep["skipped"] == [
        {"path": "EMPTY/", "reason": "empty class folder (no image files): class 'EMPTY' left out"},
        {"path": "NOTES ONLY/", "reason": "empty class folder (no image files): class 'NOTES ONLY' left out"},
    ]
    split = _two_classes(tmp_path / "split")
    (split / "train" / "GONE").mkdir()
    (split / "test" / "B").rename(split / "test-B")  # B has images in train and valid only
    (split / "test" / "B").mkdir()
    rep = scan_data(split, near_threshold=None, progress=False).report()
    assert rep["n_skipped"] == 2 and rep["usable"]
    assert {s["path"]: s["reason"] for s in rep["skipped"]} == {
        "train/GONE/": "empty class folder (no image files): class 'GONE' left out",
        "test/B/": "empty class folder (no image files) in this split (class 'B' has images elsewhere)",
    }


def test_prepare_cli_says_which_classes_were_renamed_and_what_was_cleaned(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from birdlens.data.cli import data_app

    csv_path = _csv_dataset(tmp_path / "src", {"A": "..", "B": "B"})
    (tmp_path / ".out.partial-abc_1234").mkdir()  # left by a birdlens before pid-named staging folders
    res = CliRunner().invoke(data_app, ["prepare", str(csv_path), "--out", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "note: class '..' is written to the folder '__' (safe folder name)" in res.output
    assert "note: removed 1 folder(s) an interrupted prepare left: .out.partial-abc_1234" in res.output
    assert not (tmp_path / ".out.partial-abc_1234").exists()
