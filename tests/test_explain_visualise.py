"""Class activation maximisation (issue 24): seeded, it raises the class logit far above the start, and bad
input (an unknown class, zero steps) is one error line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _trainutil import save_run, untrained_cnn
from birdlens.explain.base import InvalidParameterError
from birdlens.explain.targets import TargetError
from birdlens.explain.visualise import check_settings, visualise_class, write_visualisation
from birdlens.runs.trained import TrainedModel

CLASSES = ["Barn Owl", "Robin", "Wren"]


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return untrained_cnn(CLASSES, 32)


@pytest.fixture(scope="module")
def run_dir(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(trained, tmp_path_factory.mktemp("run"))


def test_same_seed_same_image_other_seed_differs(trained: TrainedModel) -> None:
    kw = {"steps": 12, "size": 32}
    a = visualise_class(trained.model, 1, [0.5] * 3, [0.5] * 3, seed=4, **kw)
    b = visualise_class(trained.model, 1, [0.5] * 3, [0.5] * 3, seed=4, **kw)
    c = visualise_class(trained.model, 1, [0.5] * 3, [0.5] * 3, seed=5, **kw)
    assert a.image.dtype == np.uint8 and a.image.shape == (32, 32, 3)
    assert np.array_equal(a.image, b.image) and a.curve == b.curve and a.final_logit == b.final_logit
    assert not np.array_equal(a.image, c.image)
    assert all(p.requires_grad for p in trained.model.parameters()) and not trained.model.training


def test_the_optimised_image_raises_the_class_logit_far_above_a_random_start() -> None:
    models = pytest.importorskip("birdlens.models")
    try:
        lite0 = models.create_model("efficientnet_lite0", pretrained=True).eval()
    except Exception as e:  # the bundled-weights package missing
        pytest.skip(f"Lite0 with bundled weights unavailable: {e}")
    target = 94  # ImageNet's hummingbird
    vis = visualise_class(lite0, target, [0.5] * 3, [0.5] * 3, steps=24, size=64, seed=0)
    with torch.no_grad():  # the logit on noise images: what chance gives
        noise = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        chance = lite0(noise)[:, target]
    spread = float(chance.std())
    assert vis.final_logit > vis.start_logit + 20 * spread
    assert vis.final_logit > float(chance.max()) + 20 * spread
    with torch.no_grad():  # the logit is that of the image as saved (uint8 pixels)
        x = torch.from_numpy(vis.image).permute(2, 0, 1)[None].float() / 255 * 2 - 1
        assert float(lite0(x)[0, target]) == pytest.approx(vis.final_logit, abs=1e-4)


def test_write_visualisation_writes_png_and_settings(trained: TrainedModel, tmp_path: Path) -> None:
    from PIL import Image

    rec = write_visualisation(trained, "robin", tmp_path, steps=4, seed=2)
    assert rec["class"] == "Robin" and rec["class_index"] == 1 and rec["image"] == "Robin.png"
    saved = json.loads((tmp_path / "Robin.json").read_text())
    assert (
        saved["settings"]["seed"] == 2 and saved["settings"]["steps"] == 4 and saved["settings"]["size"] == 32
    )
    assert np.asarray(Image.open(tmp_path / "Robin.png")).shape == (32, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Robin.json", "Robin.png"]  # no temp files left
    again = write_visualisation(trained, 1, tmp_path / "again", steps=4, seed=2)
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "again" / "Robin.png")),
        np.asarray(Image.open(tmp_path / "Robin.png")),
    )
    assert again["final_logit"] == saved["final_logit"]


def test_bad_input_is_refused_before_any_work(trained: TrainedModel, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="unknown target class 'Rbin': did you mean 'Robin'"):
        write_visualisation(trained, "Rbin", tmp_path / "x", steps=4)
    with pytest.raises(
        InvalidParameterError, match=r"steps must be >= 1 \(an integer in \[1, 10000\]\), got 0"
    ):
        write_visualisation(trained, "Robin", tmp_path / "x", steps=0)
    with pytest.raises(ValueError, match="unknown setting 'stpes'"):
        check_settings(stpes=3)
    assert not (tmp_path / "x").exists()


def test_cli_visualise_class(run_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from birdlens.cli import app

    runner = CliRunner()
    out = tmp_path / "out"
    base = ["explain", "--run", str(run_dir), "--out", str(out)]
    bad = runner.invoke(app, [*base, "--visualise-class", "Heron"])
    assert bad.exit_code == 2 and "--visualise-class: unknown target class 'Heron'" in bad.output
    zero = runner.invoke(app, [*base, "--visualise-class", "Wren", "--visualise-steps", "0"])
    assert zero.exit_code == 2 and "--visualise-steps must be >= 1" in zero.output
    assert "Traceback" not in bad.output + zero.output and not out.exists()
    ok = runner.invoke(app, [*base, "--visualise-class", "2", "--visualise-steps", "3", "--seed", "7"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((out / "visualise" / "Wren.json").read_text())["settings"]["seed"] == 7
    again = runner.invoke(app, [*base, "--visualise-class", "Wren", "--visualise-steps", "3"])
    assert again.exit_code == 2 and "--force" in again.output
    none = runner.invoke(app, base)
    assert none.exit_code == 2 and "--visualise-class" in none.output


class _Linear(nn.Module):
    """logit_c = <w_c, x> with smooth weights: the gradient of the logit is w_c, so ascent must make the image
    correlate with w_c (smooth, so that the 1/f spectrum and the jitter leave it visible)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.nn.functional.interpolate(
            torch.randn(2, 3, 2, 2, generator=g), size=(16, 16), mode="bilinear"
        )
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.w) / x[0].numel()


def test_ascent_on_a_linear_model_moves_the_image_towards_the_class_weights() -> None:
    model = _Linear()
    vis = visualise_class(model, 0, [0.5] * 3, [0.5] * 3, steps=40, size=16, jitter=0, freq_penalty=0.0)
    img = torch.from_numpy(vis.image).permute(2, 0, 1).float() / 255 - 0.5
    corr = torch.corrcoef(torch.stack([img.flatten(), model.w[0].detach().flatten()]))[0, 1]
    assert vis.final_logit > vis.start_logit and corr > 0.3


def test_the_study_report_shows_the_visualisation_beside_training_images(tmp_path: Path) -> None:
    from PIL import Image

    from birdlens.data.synth import generate_dataset
    from birdlens.study.config import ExplainConfig
    from birdlens.study.pipeline import explain_stage
    from birdlens.study.report_stage import _explain_section
    from birdlens.study.stages import StageContext

    synth = generate_dataset(tmp_path / "birds", classes=2, per_class=6, size=32, seed=0, quiet=True)
    run = save_run(untrained_cnn(list(synth.classes), 32), tmp_path / "model")
    cfg = ExplainConfig(methods=["gradcam"], n_images=1, visualise=[1], visualise_steps=3)
    assert ExplainConfig().visualise == []  # off unless asked: old stage keys stay as they were
    ctx = StageContext(
        name="explain:cnn",
        dir=tmp_path / "run" / "explain" / "cnn",
        run_dir=tmp_path / "run",
        config={**cfg.model_dump(), "split": "test", "seed": 0},
        inputs={"model:cnn": {"run": str(run)}, "data": {"dataset": str(synth.root)}},
        resume=False,
        quiet=True,
    )
    summary = explain_stage(ctx)
    (vis,) = summary["visualised"]
    assert vis["class"] == synth.classes[1] and len(vis["train_images"]) == 3
    assert all(f"/train/{synth.classes[1]}/" in p for p in vis["train_images"])
    figure = np.asarray(Image.open(vis["figure"]))
    assert figure.shape[0] == 32 and figure.shape[1] == 4 * 32 + 3 * 6  # the image and 3 photos, 6 px apart
    html = _explain_section(tmp_path / "run", {"explain:cnn": summary})
    assert f"What maximises the logit of {synth.classes[1]}" in html and html.count("<img") == 2
