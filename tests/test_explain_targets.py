"""``--target`` / ``--top-k`` and sigmoid (multi-label) heads, checked by hand on toy models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from birdlens.explain.base import explainer_for, make_explainer
from birdlens.explain.methods.perturb import target_values
from birdlens.explain.run import explain_images
from birdlens.explain.targets import (
    TargetError,
    check_target_options,
    class_slug,
    resolve_target,
    top_k_classes,
)
from birdlens.runs.layout import CheckpointError
from birdlens.runs.trained import TrainedModel, head_of

CLASSES = ["finch", "wren", "jay"]
SIZE = 16


def toy_model(seed: int = 0) -> nn.Sequential:
    """conv -> ReLU -> global mean -> linear: logit_c = sum_k W[c, k] * mean(A_k) + b_c, so Grad-CAM's channel
    weights are W[c, k] / (h * w) exactly."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )  # fmt: skip


def toy_trained(head: str | None = None, model: nn.Module | None = None) -> TrainedModel:
    from birdlens.models import DataConfig

    dc = DataConfig(
        input_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0
    )
    meta = {"image_size": SIZE, **({"head": head} if head else {})}
    return TrainedModel(model or toy_model(), list(CLASSES), dc, "toy", "1", meta)


def photo_dir(tmp_path: Path) -> Path:
    rng = np.random.RandomState(1)
    folder = tmp_path / "src" / "wren"
    folder.mkdir(parents=True)
    for k in range(2):
        Image.fromarray(rng.randint(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"p{k}.png")
    return tmp_path / "src"


def as_input(path: str) -> torch.Tensor:
    """The photo as the toy model sees it (already SIZE px; normalised with mean = std = 0.5)."""
    photo = np.array(Image.open(path).convert("RGB"))
    return (torch.from_numpy(photo).permute(2, 0, 1).float() / 255 - 0.5) / 0.5


def test_resolve_target_by_name_or_index_with_clear_errors() -> None:
    assert resolve_target("jay", CLASSES) == 2
    assert resolve_target("JAY", CLASSES) == 2
    assert resolve_target(1, CLASSES) == 1
    assert resolve_target("0", CLASSES) == 0
    assert resolve_target("1", ["0", "2", "1"]) == 2 and resolve_target(1, ["0", "2", "1"]) == 1
    with pytest.raises(TargetError, match=r"index 3 is out of range: the model has 3 classes \(0..2\)"):
        resolve_target(3, CLASSES)
    with pytest.raises(TargetError, match="index -1 is out of range"):
        resolve_target("-1", CLASSES)
    with pytest.raises(TargetError, match="did you mean 'wren'"):
        resolve_target("wrenn", CLASSES)
    with pytest.raises(TargetError, match=r"'eagle'.*\['finch', 'wren', 'jay'\]"):
        resolve_target("eagle", CLASSES)
    for k in (0, 4):
        with pytest.raises(TargetError, match="top_k must be an integer from 1 to 3"):
            check_target_options(None, k, CLASSES)
    with pytest.raises(TargetError, match="not both"):
        check_target_options("jay", 2, CLASSES)
    assert top_k_classes(torch.tensor([0.5, 2.0, 0.5]), 3) == [1, 0, 2]  # ties: lower index first
    assert class_slug(["blue jay", "blue/jay", "Wren's"], 2) == "Wren_s"
    assert [class_slug(["blue jay", "blue/jay"], i) for i in (0, 1)] == ["blue_jay_0", "blue_jay_1"]


def test_gradcam_of_a_chosen_class_equals_the_hand_computed_map() -> None:
    model = toy_model()
    x = torch.randn(1, 3, SIZE, SIZE)
    exp = make_explainer("gradcam", model, layer="1", channels_last=False).explain(x, 2)
    acts = torch.relu(model[0](x))[0]  # [4, h, w]
    alpha = model[4].weight[2] / (SIZE * SIZE)  # d logit_2 / d A_k, averaged over the map
    raw = torch.einsum("k,khw->hw", alpha, acts).detach()
    assert int(exp.target[0]) == 2
    torch.testing.assert_close(exp.scores["cam_lowres"][0], raw, rtol=0, atol=1e-6)
    cam = raw.clamp_min(0)
    torch.testing.assert_close(exp.maps[0], (cam - cam.min()) / (cam.max() - cam.min()), rtol=0, atol=1e-5)
    assert exp.scores["logit"][0] == pytest.approx(float(model(x)[0, 2].detach()), abs=1e-5)


def test_a_sigmoid_head_scores_each_label_by_its_own_logit() -> None:
    trained = toy_trained("sigmoid")
    assert trained.multi_label and head_of({}) == "softmax"
    with pytest.raises(CheckpointError, match="head 'softmx'"):
        head_of({"head": "softmx"})
    x = torch.randn(5, 3, SIZE, SIZE)
    logits = trained.model(x).detach()
    lime = explainer_for(trained, "lime", num_samples=20, score="prob")
    assert lime.multi_label and lime.params["multi_label"] is True
    got = target_values(lime, x, 1, "prob", "fp32")
    torch.testing.assert_close(got, logits[:, 1].sigmoid().double(), rtol=0, atol=1e-6)
    scores = lime.target_scores(logits, torch.full((5,), 1))
    torch.testing.assert_close(scores["prob"], logits[:, 1].sigmoid(), rtol=0, atol=1e-6)
    torch.testing.assert_close(trained.predict_proba(x), logits.sigmoid(), rtol=0, atol=1e-6)
    single = explainer_for(toy_trained(), "lime", num_samples=20, score="prob")
    assert "multi_label" not in single.params
    torch.testing.assert_close(
        single.target_scores(logits, torch.full((5,), 1))["prob"], logits.softmax(1)[:, 1]
    )


def test_a_sigmoid_labels_map_ignores_the_other_labels() -> None:
    """Shifting another label's bias changes a softmax probability, never a sigmoid label's: LIME on the
    probability of label 1 gives the same map for both models only when no softmax is applied."""
    a, b = toy_model(), toy_model()
    with torch.no_grad():
        b[4].bias[0] += 3.0
    x = torch.randn(1, 3, SIZE, SIZE)
    params = {
        "num_samples": 40,
        "score": "prob",
        "segmentation": "slic",
        "segmentation_params": {"n_segments": 6},
    }
    maps = [
        explainer_for(toy_trained("sigmoid", m), "lime", seed=0, **params).explain(x, 1).maps for m in (a, b)
    ]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-6)
    soft = [explainer_for(toy_trained(None, m), "lime", seed=0, **params).explain(x, 1).maps for m in (a, b)]
    assert not torch.allclose(soft[0], soft[1], atol=1e-6)


def test_top_k_writes_a_map_per_class_named_by_the_class(tmp_path: Path) -> None:
    trained = toy_trained()
    out = tmp_path / "out"
    man = explain_images(trained, [str(photo_dir(tmp_path))], ["gradcam"], out, top_k=2, quiet=True)
    assert man["top_k"] == 2 and len(man["images"]) == 2
    gradcam = explainer_for(trained, "gradcam")
    for rec in man["images"]:
        assert "maps" not in rec
        x = as_input(rec["source"])
        logits = trained.model(x[None])[0].detach()
        order = torch.argsort(logits, descending=True)[:2].tolist()
        assert [t["target"] for t in rec["targets"]] == order
        assert [t["rank"] for t in rec["targets"]] == [1, 2]
        for t in rec["targets"]:
            assert t["target_class"] == CLASSES[t["target"]]
            assert t["maps"]["gradcam"] == f"gradcam/{rec['name']}__{t['target_class']}.npy"
            assert (out / t["overlays"]["gradcam"]).is_file()
            want = gradcam.explain(x[None], t["target"]).maps[0].numpy()
            np.testing.assert_allclose(np.load(out / t["maps"]["gradcam"]), want, rtol=0, atol=1e-6)
            assert t["probability"] == pytest.approx(float(logits.softmax(0)[t["target"]]), abs=1e-6)
    assert (out / "panel.png").is_file()


def test_target_by_name_keeps_the_default_layout(tmp_path: Path) -> None:
    trained = toy_trained("sigmoid")
    out = tmp_path / "out"
    man = explain_images(trained, [str(photo_dir(tmp_path))], ["gradcam"], out, target="Jay", quiet=True)
    rec = man["images"][0]
    assert man["target"] == 2 and rec["target"] == 2 and rec["target_class"] == "jay"
    assert rec["maps"] == {"gradcam": f"gradcam/{rec['name']}.npy"}
    x = as_input(rec["source"])
    logits = trained.model(x[None])[0].detach()
    assert rec["probability"] == pytest.approx(float(logits.sigmoid().max()), abs=1e-6)
    want = explainer_for(trained, "gradcam").explain(x[None], 2).maps[0].numpy()
    np.testing.assert_allclose(np.load(out / rec["maps"]["gradcam"]), want, rtol=0, atol=1e-6)


def _explain_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: Path, extra: list[str]) -> Any:
    """``birdlens explain`` (Grad-CAM, quiet) of the toy photos with the toy run, plus ``extra`` options."""
    from typer.testing import CliRunner

    import birdlens.runs.trained as checkpoint
    from birdlens.cli import app

    monkeypatch.setattr(checkpoint, "load_trained", lambda run, which="best", device="cpu": toy_trained())
    args = [
        "explain",
        str(photo_dir(tmp_path)),
        "--run",
        str(tmp_path),
        "--methods",
        "gradcam",
        "--out",
        str(out),
    ]
    return CliRunner().invoke(app, [*args, "--quiet", *extra])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "wrenn"], "did you mean 'wren'"),
        (["--target", "7"], "index 7 is out of range"),
        (["--top-k", "0"], "top_k must be an integer from 1 to 3"),
        (["--top-k", "4"], "top_k must be an integer from 1 to 3"),
        (["--target", "jay", "--top-k", "2"], "not both"),
    ],
)
def test_cli_bad_target_is_one_line_exit_2_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    res = _explain_toy(tmp_path, monkeypatch, out, extra)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_top_k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    res = _explain_toy(tmp_path, monkeypatch, out, ["--top-k", "3"])
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["images"][0]["targets"]) == 3
    assert len(list((out / "gradcam").glob("*.npy"))) == 6


def test_the_web_app_lists_a_sigmoid_heads_label_probabilities() -> None:
    from birdlens.app.service import ModelService

    trained = toy_trained("sigmoid")
    service = ModelService(trained, "toy")
    try:
        rng = np.random.RandomState(2)
        prep = service.prepare(Image.fromarray(rng.randint(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)))
        out = service._predict(prep, 3)
        with torch.inference_mode():
            want = trained.model(prep.x)[0].float().sigmoid()
        assert [s.prob for s in out.top] == pytest.approx(sorted(want.tolist(), reverse=True), abs=1e-6)
    finally:
        service.close()


@pytest.mark.parametrize("options", [{"top_k": 2}, {"target": "jay"}])
def test_cross_image_batches_explain_the_classes_asked_as_one_image_at_a_time(
    tmp_path: Path, options: dict
) -> None:
    """The batched methods explain the k-th class of every image of a group in one call: the maps equal
    explaining each image alone for that class."""
    trained = toy_trained()
    photos = [str(photo_dir(tmp_path))]
    params = {"lime": {"num_samples": 24, "batch_size": 8}, "ig": {"steps": 4}}
    runs = {
        b: explain_images(
            trained,
            photos,
            ["lime", "ig"],
            tmp_path / f"b{b}",
            method_params=params,
            quiet=True,
            batch_images=b,
            **options,
        )
        for b in (1, 8)
    }
    recs = {b: [t for rec in m["images"] for t in rec.get("targets", [rec])] for b, m in runs.items()}
    assert [t["target"] for t in recs[1]] == [t["target"] for t in recs[8]]
    for one, many in zip(recs[1], recs[8], strict=True):
        for m in ("lime", "ig"):
            a, b = np.load(tmp_path / "b1" / one["maps"][m]), np.load(tmp_path / "b8" / many["maps"][m])
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(np.abs(a).max()))


def test_softmax_measures_refuse_a_multi_label_run(tmp_path: Path) -> None:
    """explain-eval's curves and evaluate's accuracy assume one class per image: on a sigmoid head they would
    be silently wrong, so both refuse it and say why."""
    from birdlens.evaluate.run import evaluate_run
    from birdlens.explain.metrics.evaluate import evaluate_explanations

    with pytest.raises(ValueError, match=r"explain-eval .* sigmoid \(multi-label\) head"):
        evaluate_explanations(toy_trained("sigmoid"), None, ["gradcam"], n=1)
    with pytest.raises(ValueError, match=r"evaluate .* sigmoid \(multi-label\) head"):
        evaluate_run(tmp_path, trained=toy_trained("sigmoid"))
