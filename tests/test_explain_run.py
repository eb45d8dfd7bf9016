"""``explain_images`` and ``birdlens explain``: files, manifest, panel; a tiny model, tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from birdlens.explain.run import explain_images
from birdlens.explain.viz import heatmap_overlay, lime_overlay, signed_overlay

PARAMS = {
    "lime": {"num_samples": 30, "segmentation": "slic", "segmentation_params": {"n_segments": 10}},
    "shap": {"max_evals": 30, "blur_kernel": 8},
    "ig": {"steps": 4},
}


def tiny_trained() -> SimpleNamespace:
    from birdlens.models import DataConfig

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip
    dc = DataConfig(
        input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0
    )
    return SimpleNamespace(
        model=model,
        classes=["finch", "wren", "jay"],
        data_config=dc,
        model_name="tiny",
        cam_layer="2",
        meta={},
    )


def photos(tmp_path: Path) -> list:
    rng = np.random.RandomState(0)
    arrays = [rng.randint(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(2)]
    folder = tmp_path / "src" / "wren"
    folder.mkdir(parents=True)
    Image.fromarray(arrays[0]).save(folder / "a.png")
    return [str(tmp_path / "src"), arrays[1]]


def test_explain_images_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    man = explain_images(
        tiny_trained(),
        photos(tmp_path),
        ["gradcam", "lime", "shap", "ig"],
        out,
        labels=[None, 2],
        seed=3,
        method_params=PARAMS,
        quiet=True,
    )
    assert (out / "panel.png").is_file() and (out / "manifest.json").is_file()
    disk = json.loads((out / "manifest.json").read_text())
    assert disk["seed"] == 3 and disk["images"] == json.loads(json.dumps(man["images"]))
    assert disk["methods"]["gradcam"]["params"]["layer"] == "2"
    assert (
        disk["methods"]["lime"]["params"]["seed"] == 3
        and disk["methods"]["lime"]["params"]["num_samples"] == 30
    )
    assert disk["methods"]["shap"]["seconds_per_image"] > 0
    assert disk["environment"]["packages"]["torch"]
    first, second = disk["images"]
    assert first["true"] == "wren" and second["true"] == "jay"  # folder name / given index
    for rec in disk["images"]:
        for m in ("gradcam", "lime", "shap", "ig"):
            arr = np.load(out / rec["maps"][m])
            assert arr.shape == (32, 32) and arr.dtype == np.float32
            with Image.open(out / rec["overlays"][m]) as im:
                assert im.size == (32, 32)
    with pytest.raises(FileExistsError):
        explain_images(tiny_trained(), photos(tmp_path / "again"), ["gradcam"], out, quiet=True)


def test_cli_explain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import birdlens.runs.trained as checkpoint
    from birdlens.cli import app

    monkeypatch.setattr(checkpoint, "load_trained", lambda run, which="best", device="cpu": tiny_trained())
    src = photos(tmp_path)[0]
    out = tmp_path / "cli"
    args = [
        "explain",
        "--run",
        str(tmp_path),
        "--methods",
        "gradcam,random",
        src,
        "--out",
        str(out),
        "--quiet",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "manifest.json").is_file() and (out / "random").is_dir()
    res = CliRunner().invoke(app, [*args[:4], "guided_backprop", *args[5:], "--force"])
    assert res.exit_code == 2 and "SiLU" in res.output


def test_overlays_are_images_of_the_photo_size() -> None:
    img = np.full((20, 30, 3), 128, np.uint8)
    m = np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30)
    for ov in (heatmap_overlay(img, m), signed_overlay(img, m)):
        assert ov.shape == (20, 30, 3) and ov.dtype == np.uint8
    # zero evidence leaves the (desaturated) photo; strong evidence for/against is red/blue
    s = signed_overlay(img, m)
    assert s[0, 0, 2] > s[0, 0, 0] and s[-1, -1, 0] > s[-1, -1, 2]
    seg = np.arange(600).reshape(20, 30) // 100
    lo = lime_overlay(img, seg, np.array([0.5, -1, 0.2, 0, 0, 0.9]), top_k=2)
    assert (lo[seg == 1] < 128).all()  # not in the top 2: dimmed
    assert (lo[seg == 5] == 128).sum() > 0  # in the top 2: the photo itself


def test_explain_in_batches_equals_image_by_image(tmp_path: Path) -> None:
    # cross-image batching: 3 images per call of lime/shap/ig write the same maps and records as 1 per call
    rng = np.random.RandomState(1)
    arrays = [rng.randint(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    methods = ["gradcam", "lime", "shap", "ig"]
    runs = {}
    for b in (1, 3):
        trained = tiny_trained()
        calls: list[int] = []

        def count(m: nn.Module, a: tuple, c: list[int] = calls) -> None:
            if isinstance(m, nn.Conv2d) and m.in_channels == 3:  # the first layer: one per model call
                c.append(a[0].shape[0])

        h = torch.nn.modules.module.register_module_forward_pre_hook(count)
        try:
            man = explain_images(
                trained, arrays, methods, tmp_path / f"b{b}", method_params=PARAMS, quiet=True, batch_images=b
            )
        finally:
            h.remove()
        runs[b] = (man, calls)
    (one, one_calls), (three, three_calls) = runs[1], runs[3]
    # the same rows in fewer model calls: LIME's and SHAP's batches were filled across images
    assert sum(three_calls) == sum(one_calls) and len(three_calls) < len(one_calls)
    for r1, r3 in zip(one["images"], three["images"], strict=True):
        for key in ("predicted", "probability", "target", "lime_weights", "ig_completeness_error"):
            assert r1[key] == r3[key], key
        for m in methods:
            a1, a3 = np.load(tmp_path / "b1" / r1["maps"][m]), np.load(tmp_path / "b3" / r3["maps"][m])
            assert np.array_equal(a1, a3), m


def test_cli_batch_images_must_be_positive(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from birdlens.cli import app

    args = [
        "explain",
        "--run",
        str(tmp_path),
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--batch-images",
        "0",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--batch-images" in res.output and not (tmp_path / "o").exists()


def test_the_prediction_pass_feeds_the_image_to_the_models_device() -> None:
    """A run loaded with ``--device cuda`` gets its photos on the GPU: the photos are prepared on the CPU, so
    the pass that finds the prediction moves each one to the model's device (a ``meta`` stand-in here)."""
    from birdlens.explain.run import _asked, _RunState

    class OnMeta(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.empty(1, device="meta"))
            self.seen: list[torch.device] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(x.device)
            return torch.tensor([[0.0, 2.0, 1.0]]).expand(x.shape[0], 3)

    trained = SimpleNamespace(model=OnMeta(), classes=["finch", "wren", "jay"])
    asked = _asked(trained, torch.zeros(3, 8, 8), _RunState(["gradcam"], top_k=2))
    assert trained.model.seen == [torch.device("meta")]
    assert asked.targets == [1, 2] and asked.logits.device == torch.device("cpu")
