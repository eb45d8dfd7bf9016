"""Planted shortcuts (birdlens.data.shortcuts): cue masks, p respected, test split decorrelated, bad input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _trainutil import make_image_folder
from birdlens.cli import app
from birdlens.data.layouts import load_manifest
from birdlens.data.shortcuts import (
    BorderCue,
    Cue,
    PatchCue,
    TintCue,
    cue_kinds,
    cue_mask,
    make_cue,
    plant_shortcut,
    read_shortcut,
    register_cue,
)


def test_patch_mask_is_the_hand_computed_square() -> None:
    m = PatchCue(size=0.14, margin=0.04).mask(50, 50)  # side round(7.0) = 7, offset round(2.0) = 2
    expected = np.zeros((50, 50), bool)
    expected[2:9, 2:9] = True
    assert np.array_equal(m, expected)
    br = PatchCue(size=0.14, margin=0.04, corner="bottom-right").mask(50, 60)
    assert br[41:48, 51:58].all() and br.sum() == 49


def test_border_and_tint_are_global() -> None:
    m = BorderCue(width=0.1).mask(40, 40)  # 4 px frame: 40*40 - 32*32 pixels
    assert m.sum() == 40 * 40 - 32 * 32 and not m[4:36, 4:36].any()
    img = np.full((8, 8, 3), 100, np.uint8)
    out, mt = TintCue(strength=0.25, colour=(200, 0, 0)).apply(img)
    assert mt.all() and tuple(out[0, 0]) == (125, 75, 75)  # 0.75 * 100 + 0.25 * (200, 0, 0)


def test_patch_paints_only_inside_its_mask() -> None:
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out, m = PatchCue().apply(img)
    assert np.array_equal(out[~m], img[~m]) and (out[m] != img[m]).any()
    assert set(map(tuple, out[m].reshape(-1, 3))) <= {(255, 0, 255), (0, 0, 0)}


def test_a_user_cue_registers_and_an_empty_mask_is_refused() -> None:
    @register_cue
    @dataclass
    class Nothing(Cue):
        kind: ClassVar[str] = "nothing-test"

        def mask(self, height: int, width: int) -> np.ndarray:
            return np.zeros((height, width), bool)

    assert "nothing-test" in cue_kinds() and {"patch", "border", "tint"} <= set(cue_kinds())
    with pytest.raises(ValueError, match="mask is empty"):
        make_cue("nothing-test").apply(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="choose one of"):
        make_cue("sparkles")


def _data(tmp_path: Path, n: int = 20) -> Path:
    return make_image_folder(tmp_path / "src", n_classes=3, train=n, valid=n // 2, test=n, size=32)


def test_plant_respects_p_saves_masks_and_decorrelates_test(tmp_path: Path) -> None:
    m = load_manifest(_data(tmp_path))
    res = plant_shortcut(m, tmp_path / "out", PatchCue(), ["CLASS A"], p=0.5, test_p=0.5, seed=3)
    info = json.loads((tmp_path / "out" / "shortcut.json").read_text())
    assert info["classes"] == ["CLASS A"] and info["cue"]["kind"] == "patch"
    by = {(v["split"], v["label"]) for v in info["images"].values()}
    # train/valid: only the planted class; test: every class (the cue says nothing about the class there)
    assert {lab for s, lab in by if s != "test"} == {"CLASS A"}
    assert {lab for s, lab in by if s == "test"} == {"CLASS A", "CLASS B", "CLASS C"}
    n_a = sum(1 for r in m if r.label == "CLASS A" and r.split != "test")  # 30
    cued_a = sum(1 for v in info["images"].values() if v["split"] != "test")
    assert abs(cued_a - 0.5 * n_a) <= 4 * np.sqrt(0.25 * n_a)  # binomial(30, 0.5) within 4 sd
    assert len(res.manifest) == len(m) and (tmp_path / "out" / "manifest.csv").is_file()
    cue = read_shortcut(tmp_path / "out")["cue"]
    for rel, v in info["images"].items():
        mask = cue_mask(tmp_path / "out", v["cue_mask"])
        assert np.array_equal(mask, cue.mask(32, 32))
        after = np.asarray(Image.open(tmp_path / "out" / rel).convert("RGB"))
        before = np.asarray(Image.open(tmp_path / "src" / rel).convert("RGB"))
        assert np.array_equal(after[~mask], before[~mask]) and not np.array_equal(after[mask], before[mask])


def test_p_one_cues_every_train_image_of_the_class_and_none_of_the_others(tmp_path: Path) -> None:
    m = load_manifest(_data(tmp_path, n=6))
    res = plant_shortcut(m, tmp_path / "out", BorderCue(), ["class b"], p=1.0, test_p=0.0)
    cued = set(res.images)
    for r in m:
        rel = Path(r.path).relative_to(tmp_path / "src").as_posix()
        assert (rel in cued) == (r.label == "CLASS B" and r.split != "test")


def test_bad_input_is_one_error_and_nothing_written(tmp_path: Path) -> None:
    src = _data(tmp_path, n=4)
    m = load_manifest(src)
    no_train = m.with_records(r for r in m if r.split != "train")
    for manifest, classes, p, match in (
        (no_train, ["CLASS A"], 0.9, "no train split"),
        (m, ["NOPE"], 0.9, "not in the data"),
        (m, ["CLASS A"], 1.5, "probabilities"),
    ):
        with pytest.raises(ValueError, match=match):
            plant_shortcut(manifest, tmp_path / "out", PatchCue(), classes, p=p)
        assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(empty)
    with pytest.raises(ValueError, match="is empty"):
        cue_mask(tmp_path, "empty.png")


def test_cli_plant_and_synth_shortcut(tmp_path: Path) -> None:
    runner = CliRunner()
    src = _data(tmp_path, n=4)
    bad = runner.invoke(app, ["data", "plant-shortcut", str(src), "--out", str(tmp_path / "o"), "--cue", "x"])
    assert bad.exit_code == 2 and "choose one of" in bad.output and not (tmp_path / "o").exists()
    bad = runner.invoke(
        app, ["data", "plant-shortcut", str(src), "--out", str(tmp_path / "o"), "--classes", "Z"]
    )
    assert bad.exit_code == 2 and "--classes" in bad.output and not (tmp_path / "o").exists()
    ok = runner.invoke(
        app, ["data", "plant-shortcut", str(src), "--out", str(tmp_path / "o"), "--n-classes", "1", "-q"]
    )
    assert ok.exit_code == 0, ok.output
    assert len(read_shortcut(tmp_path / "o")["classes"]) == 1
    args = [
        "data",
        "synth",
        "--out",
        str(tmp_path / "s"),
        "--classes",
        "3",
        "--per-class",
        "6",
        "--size",
        "32",
    ]
    res = runner.invoke(app, [*args, "--shortcut", "border", "--shortcut-classes", "1", "-q"])
    assert res.exit_code == 0, res.output
    info = read_shortcut(tmp_path / "s")
    assert isinstance(info["cue"], BorderCue) and len(info["classes"]) == 1
    assert load_manifest(tmp_path / "s").split("train").records[0].mask is not None
    assert runner.invoke(app, [*args, "--shortcut", "patch", "--force", "-q"]).exit_code == 0
