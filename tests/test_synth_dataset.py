"""Synthetic dataset on disk: layout, determinism, manifest, specs, parts.json, CLI and contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from birdlens.data.manifest import Manifest
from birdlens.data.synth import (
    PARTS,
    class_catalog,
    contact_sheet,
    differing_parts,
    generate_dataset,
    load_parts,
    load_spec,
    load_specs,
    render_bird,
)
from birdlens.data.synth.cli import synth_command

SMALL = {"classes": 3, "per_class": 7, "size": 64, "seed": 0, "quiet": True}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    return out, generate_dataset(out, **SMALL, workers=1)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest(dataset: tuple[Path, Manifest]) -> None:
    out, manifest = dataset
    names = [c.name for c in class_catalog(3, 0)]
    assert len(manifest) == 21 and manifest.classes == sorted(names)
    # 7 per class -> 5 / 1 / 1 (70/15/15 rounded), every split present for every class
    assert manifest.counts() == {n: {"test": 1, "train": 5, "valid": 1} for n in names}
    for split in ("train", "valid", "test"):
        for name in names:
            assert len(list((out / split / name).glob("*.png"))) == {"train": 5}.get(split, 1)
    again = Manifest.from_csv(out / "manifest.csv")
    assert [(r.path.resolve(), r.label, r.split, r.mask.resolve(), r.box) for r in again] == [
        (r.path.resolve(), r.label, r.split, r.mask.resolve(), r.box) for r in manifest
    ]
    for r in again:
        assert r.path.is_file() and r.mask is not None and r.mask.is_file()
        with Image.open(r.path) as im:
            assert im.mode == "RGB" and im.size == (64, 64)
        with Image.open(r.mask) as m:
            assert m.mode == "L"
            mask = np.asarray(m)
        # the box is the bird's extent in the mask
        ys, xs = np.nonzero(mask)
        assert r.box == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_files_on_disk_are_the_rendered_specs(dataset: tuple[Path, Manifest]) -> None:
    out, manifest = dataset
    specs = load_specs(out)
    assert len(specs) == len(manifest)
    for r in list(manifest)[::4]:
        spec = load_spec(out, r.path)  # absolute path
        assert spec == load_spec(out, r.path.relative_to(out))  # or relative to the dataset
        assert spec.class_name == r.label
        img, mask = render_bird(spec, 64)
        assert np.array_equal(np.asarray(Image.open(r.path)), img)
        assert np.array_equal(np.asarray(Image.open(r.mask)), mask)
    with pytest.raises(KeyError):
        load_spec(out, "train/NOPE/0.png")


def test_parts_json_is_consistent(dataset: tuple[Path, Manifest]) -> None:
    out, manifest = dataset
    info = load_parts(out)
    assert info["parts"] == list(PARTS)
    assert info["part_ids"] == {"background": 0, **{p: i + 1 for i, p in enumerate(PARTS)}}
    classes = {c["name"]: c for c in info["classes"]}
    assert sorted(classes) == manifest.classes
    for a in classes.values():
        assert set(a["key_parts"]) <= set(a["any_parts"]) <= set(PARTS)
        assert a["key_parts"] and "body" not in a["key_parts"]
        for b in classes.values():
            if a is b:
                continue
            diff = info["pairwise"][a["name"]][b["name"]]
            assert diff == info["pairwise"][b["name"]][a["name"]]
            assert tuple(diff) == differing_parts(a["attributes"], b["attributes"])
    # every spec's attributes are its class's attributes
    for spec in load_specs(out).values():
        assert spec.attributes == classes[spec.class_name]["attributes"]
    lines = (out / "specs.jsonl").read_text().splitlines()
    assert len(lines) == len(manifest) and json.loads(lines[0])["mask"].startswith("masks/")


def test_same_seed_same_bytes_other_seed_other_bytes(dataset: tuple[Path, Manifest], tmp_path: Path) -> None:
    out, _ = dataset
    same = generate_dataset(tmp_path / "same", **SMALL, workers=2)  # process count must not matter
    assert len(same) == 21
    a, b = _tree(out), _tree(tmp_path / "same")
    a.pop("parts.json"), b.pop("parts.json")  # it records timing and worker count
    assert a.keys() == b.keys() and a == b
    other = generate_dataset(tmp_path / "other", **{**SMALL, "seed": 1})
    assert {r.label for r in other} != {r.label for r in same}
    c = _tree(tmp_path / "other")
    shared = [k for k in c if k.endswith(".png") and k in a]
    assert all(a[k] != c[k] for k in shared)


def test_refuses_non_empty_folder_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="force"):
        generate_dataset(out, classes=2, per_class=2, size=32, quiet=True)
    generate_dataset(out, classes=2, per_class=3, size=32, quiet=True, force=True)
    first = {p.name for p in out.rglob("*.png")}
    generate_dataset(out, classes=2, per_class=2, size=32, quiet=True, force=True, seed=4)
    second = {p.relative_to(out) for p in out.rglob("*.png")}
    # the old dataset is replaced, not mixed in; the user's own file is kept
    assert (out / "notes.txt").read_text() == "mine"
    assert len(second) == 2 * 2 * 2 and first
    assert len(Manifest.from_csv(out / "manifest.csv")) == 4


def test_force_never_deletes_data_it_did_not_write(tmp_path: Path) -> None:
    photo = tmp_path / "real" / "train" / "ROBIN" / "1.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"a real photo")
    with pytest.raises(FileExistsError, match="not a synthetic"):
        generate_dataset(tmp_path / "real", classes=2, per_class=2, size=32, quiet=True, force=True)
    assert photo.read_bytes() == b"a real photo"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="splits"):
        generate_dataset("/nonexistent/never", classes=2, per_class=2, splits=(0.5, 0.5, 0.5), quiet=True)
    with pytest.raises(ValueError, match="size"):
        generate_dataset("/nonexistent/never", classes=2, per_class=2, size=8, quiet=True)


def test_cli_and_contact_sheet(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("synth")(synth_command)
    app.command("noop")(lambda: None)  # a second command keeps "synth" a sub-command, as under `data`
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "synth",
        "--out",
        str(out),
        "--classes",
        "2",
        "--per-class",
        "3",
        "--size",
        "48",
        "--quiet",
        "--sheet",
        str(tmp_path / "sheet.png"),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "wrote 6 images of 2 classes" in res.output
    assert len(Manifest.from_csv(out / "manifest.csv")) == 6
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.width > 300 and im.height > 2 * 48
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "not empty" in res.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    p = contact_sheet(tmp_path / "sheet2.png", out, per_class=2, thumb=40, show_mask=False)
    with Image.open(p) as im:
        assert im.size == (300 + 2 * 44 + 4, 28 + 2 * 44 + 4)
