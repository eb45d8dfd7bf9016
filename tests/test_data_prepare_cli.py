"""``birdlens data prepare`` / ``inspect`` end to end (typer CliRunner) on tiny datasets built here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _data_helpers import make_cub, make_split_tree, save_image
from birdlens.data.cli import data_app
from birdlens.data.images import load_resized
from birdlens.data.layouts import discover
from birdlens.data.prepare import OutputExists, prepare_dataset

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(data_app, list(args))  # the sub-app alone: no need to import every area's CLI
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


def test_prepare_selects_resizes_and_writes_a_readable_dataset(tmp_path: Path) -> None:
    src = make_split_tree(
        tmp_path / "src",
        {
            "BIG": {"train": 8, "valid": 2, "test": 2},
            "MID": {"train": 6, "valid": 2, "test": 2},
            "SMALL": {"train": 3, "valid": 1, "test": 1},
        },
        size=(90, 60),
    )
    (src / "train" / "BIG" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    shutil.copy(src / "train/MID/000.jpg", src / "test/MID/leak.jpg")
    code, out = _run(
        "prepare",
        str(src),
        "--top",
        "2",
        "--per-class",
        "10",
        "--seed",
        "0",
        "--size",
        "48",
        "--dedupe",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0, out
    assert "wrote 20 images of 2 classes" in out
    d = discover(tmp_path / "out")
    assert d.layout == "csv" and d.manifest.classes == ["BIG", "MID"]
    counts = d.manifest.counts()
    assert counts["BIG"] == {"train": 7, "valid": 2, "test": 1}  # 8/2/2 subsampled to 10, shares kept
    assert sum(counts["MID"].values()) == 10 and "leak.jpg" not in {r.path.name for r in d.manifest}
    for r in d.manifest:
        assert r.path.parent.parent.name == r.split and Image.open(r.path).size == (48, 48)
    rep = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert rep["prepared"]["n_written"] == 20 and rep["n_images"] == 20
    assert [s["path"] for s in rep["skipped"]] == ["train/BIG/broken.jpg"]
    assert rep["dedupe_dropped"] == ["test/MID/leak.jpg"]
    # refuses to overwrite, then --force replaces
    code, out = _run("prepare", str(src), "--out", str(tmp_path / "out"))
    assert code == 2 and "not empty" in out and "--force" in out
    code, _ = _run(
        "prepare", str(src), "--top", "3", "--size", "32", "--out", str(tmp_path / "out"), "--force"
    )
    assert code == 0 and len(discover(tmp_path / "out").manifest.classes) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folders left
    with pytest.raises(OutputExists, match="inside the source"):
        prepare_dataset(src, src / "prepared")


def test_prepare_moves_cub_boxes_into_the_new_frame(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "CUB_200_2011")  # 80x60 images, box (10, 5, 40, 30)
    res = prepare_dataset(root, tmp_path / "out", size=30)
    # resize 60 -> 30 (scale 0.5), centre crop drops 10 px each side of x: box -> (0, 2.5, 20, 15)
    assert {r.box for r in res.manifest} == {(0.0, 2.5, 20.0, 15.0)}


def test_prepare_keeps_masks_aligned(tmp_path: Path) -> None:
    from birdlens.data.manifest import Manifest, Record

    recs = []
    for i, label in enumerate(["A", "A", "B", "B"]):
        img = save_image(tmp_path / "src" / "train" / label / f"{i}.png", i, (80, 40))
        mask = np.zeros((40, 80), np.uint8)
        mask[:, 40:] = 5
        mpath = tmp_path / "src" / "masks" / f"{i}.png"
        mpath.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(mpath)
        recs.append(Record(img, label, "train", mask=mpath))
    Manifest(recs, tmp_path / "src").to_csv(tmp_path / "src" / "manifest.csv")
    res = prepare_dataset(tmp_path / "src", tmp_path / "out", size=20)
    for r, src in zip(res.manifest, recs, strict=True):
        m = np.asarray(Image.open(r.mask))
        assert m.shape == (20, 20) and (m[:, :10] == 0).all() and (m[:, 10:] == 5).all()
        # lossless sources stay lossless: exactly the resized source pixels
        assert r.path.suffix == ".png"
        assert np.array_equal(np.asarray(Image.open(r.path)), np.asarray(load_resized(src.path, 20)))


def test_inspect_json_and_exit_codes(tmp_path: Path) -> None:
    src = make_split_tree(
        tmp_path / "src", {"A": {"train": 2, "valid": 1, "test": 1}, "B": {"train": 2, "valid": 1, "test": 1}}
    )
    (src / "train" / "A" / "empty.png").write_bytes(b"")
    code, out = _run("inspect", str(src), "--json", str(tmp_path / "r.json"), "--quiet")
    assert code == 0, out
    assert "usable" in out and "empty file" in out and "Traceback" not in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["n_images"] == 8 and rep["n_classes"] == 2
    assert rep["classes"]["A"] == {"train": 2, "valid": 1, "test": 1, "total": 4}
    assert rep["skipped"] == [{"path": "train/A/empty.png", "reason": "empty file (0 bytes)"}]
    assert rep["duplicates"] == [] and rep["leaks"] == []

    # not usable: one sentence, non-zero exit, no traceback
    (tmp_path / "nothing").mkdir()
    code, out = _run("inspect", str(tmp_path / "nothing"))
    assert code == 2 and "no dataset layout recognised" in out and "Traceback" not in out
    bad = tmp_path / "allbad"
    for c in ("A", "B"):
        (bad / "train" / c).mkdir(parents=True)
        (bad / "train" / c / "x.jpg").write_text("not a jpeg")
    code, out = _run("inspect", str(bad))
    assert code == 2 and "all 2 image files" in out and "failed validation" in out
    code, out = _run("download", "nowhere", "--out", str(tmp_path / "dl"))
    assert code == 2 and "unknown source" in out


@pytest.mark.shared_data
def test_inspect_shared_birds(shared_birds: Path, tmp_path: Path) -> None:
    code, out = _run("inspect", str(shared_birds), "--json", str(tmp_path / "r.json"), "--quiet")
    assert code == 0, out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert (
        rep["n_images"] == 1200
        and rep["n_classes"] == 20
        and rep["splits"] == {"train": 840, "valid": 180, "test": 180}
    )
    assert rep["skipped"] == [] and rep["leaks"] == []  # the README's duplicate checks agree


def test_data_commands_are_registered_in_the_birdlens_cli() -> None:
    from birdlens.cli import app

    res = runner.invoke(app, ["data", "--help"])
    assert res.exit_code == 0
    for cmd in ("inspect", "prepare", "download", "synth"):
        assert cmd in res.output
