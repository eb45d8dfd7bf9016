"""Issue 26 #3: a damaged ``last.ckpt``, ``best.safetensors`` or ``meta.json`` is one error line naming the
file, what is wrong with it and how to recover (exit code 2), never a traceback or a bare "Aborted."."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from _trainutil import make_image_folder
from birdlens.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from birdlens.train import TrainConfig, train

    root = tmp_path_factory.mktemp("damaged")
    cfg = TrainConfig(
        data=str(make_image_folder(root / "birds")),
        out=str(root / "run"),
        model="simple_cnn",
        mode="finetune",
        image_size=32,
        epochs=1,
        batch_size=4,
        checkpoint_every_n_steps=2,
        patience=None,
        accelerator="cpu",
        quiet=True,
    )
    run = train(cfg, evaluate=False)
    assert (run / "last.ckpt").is_file() and (run / "best.safetensors").is_file()
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _one_error_line(res, path: Path, *hints: str) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and str(path) in lines[0], lines[0]
    assert "Traceback" not in res.output
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("damage", ["empty", "truncated", "hostile"])
def test_resume_from_a_damaged_last_ckpt_is_one_line(finetune_run: Path, tmp_path: Path, damage: str) -> None:
    run = _copy(finetune_run, tmp_path)
    ckpt = run / "last.ckpt"
    marker = tmp_path / "pickled-code-ran"
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "truncated":
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"state_dict": _Hostile(marker)}, ckpt)
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "-q", "--no-evaluate"])
    line = _one_error_line(res, ckpt, "delete it", "--force")
    assert "cannot be resumed from" in line
    assert not marker.exists(), "a hostile checkpoint ran its pickled code"


def test_deleting_the_damaged_last_ckpt_then_resuming_trains_again(
    finetune_run: Path, tmp_path: Path
) -> None:
    run = _copy(finetune_run, tmp_path)
    (run / "last.ckpt").unlink()  # what the error line says to do
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "-q", "--no-evaluate"])
    assert res.exit_code == 0, res.output
    assert (run / "last.ckpt").is_file() and (run / "best.safetensors").is_file()


@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_truncated_best_safetensors_is_one_line(finetune_run: Path, tmp_path: Path, command: str) -> None:
    run = _copy(finetune_run, tmp_path)
    best = run / "best.safetensors"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 2])
    image = next((finetune_run.parent / "birds" / "test").rglob("*.png"))
    args = {
        "predict": ["predict", "--run", str(run), str(image)],
        "evaluate": ["evaluate", "--run", str(run), "-q"],
        "serve": ["serve", "--run", str(run), "--port", "0"],
    }[command]
    _one_error_line(runner.invoke(app, args), best, "--force")


def test_damaged_meta_json_is_one_line(finetune_run: Path, tmp_path: Path) -> None:
    run = _copy(finetune_run, tmp_path)
    (run / "meta.json").write_text('{"model": "simple_cnn", "clas')
    _one_error_line(runner.invoke(app, ["predict", "--run", str(run), "x.png"]), run / "meta.json", "--force")
