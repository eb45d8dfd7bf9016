"""Contrastive explanations ("why A and not B"): the score ``logit[A] - logit[B]``, checked by hand on toy
models, against pytorch-grad-cam with a custom target, and through ``explain`` / ``birdlens explain``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM as ReferenceGradCAM

from birdlens.explain.base import UnsupportedMethodError, class_score, list_methods, make_explainer
from birdlens.explain.methods.perturb import target_values
from birdlens.explain.run import explain_images
from birdlens.explain.targets import RUNNER_UP, TargetError, resolve_contrast, runner_up
from test_explain_targets import CLASSES, SIZE, _explain_toy, as_input, photo_dir, toy_model, toy_trained


def test_contrastive_gradcam_equals_the_hand_computed_gradcam_of_the_logit_difference() -> None:
    model = toy_model()
    x = torch.randn(2, 3, SIZE, SIZE)
    exp = make_explainer("gradcam", model, layer="1", channels_last=False).explain(x, 2, contrast=0)
    acts = torch.relu(model[0](x)).detach()  # [2, 4, h, w]
    w = model[4].weight.detach()
    alpha = (w[2] - w[0]) / (SIZE * SIZE)  # d (logit_2 - logit_0) / d A_k, averaged over the map
    raw = torch.einsum("k,bkhw->bhw", alpha, acts)
    torch.testing.assert_close(exp.scores["cam_lowres"], raw, rtol=0, atol=1e-6)
    cam = raw.clamp_min(0)
    lo, hi = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    torch.testing.assert_close(exp.maps, (cam - lo) / (hi - lo), rtol=0, atol=1e-5)
    logits = model(x).detach()
    assert exp.params["contrast"] == 0 and exp.scores["contrast"].tolist() == [0, 0]
    torch.testing.assert_close(exp.scores["logit_difference"], logits[:, 2] - logits[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(exp.scores["contrast_logit"], logits[:, 0], rtol=0, atol=1e-5)


def test_contrastive_gradcam_matches_pytorch_grad_cam_with_a_difference_target() -> None:
    model = toy_model(3)
    x = torch.randn(2, 3, SIZE, SIZE)
    ours = make_explainer("gradcam", model, layer="1", channels_last=False).explain(x, 1, contrast=[2, 0])
    pairs = [(1, 2), (1, 0)]
    targets = [lambda out, a=a, b=b: out[a] - out[b] for a, b in pairs]
    with ReferenceGradCAM(model=model, target_layers=[model[1]]) as ref:
        want = ref(input_tensor=x, targets=targets)
    np.testing.assert_allclose(ours.numpy(), want, rtol=0, atol=1e-5)
    assert ours.params["contrast"] == [2, 0] and ours.select(1).params["contrast"] == 0


def test_ig_of_a_difference_is_the_difference_of_igs_and_stays_complete() -> None:
    model = toy_model(1)
    x = torch.randn(2, 3, SIZE, SIZE)
    ig = make_explainer("ig", model, steps=8, channels_last=False, mean=[0.5] * 3, std=[0.5] * 3)
    both = ig.explain(x, 1, contrast=2)
    a, b = ig.explain(x, 1), ig.explain(x, 2)
    torch.testing.assert_close(both.maps, a.maps - b.maps, rtol=0, atol=1e-5)
    attr = both.scores["attributions"].flatten(1).sum(1)
    gap = both.scores["logit_difference"] - (both.scores["baseline_logit"] - b.scores["baseline_logit"])
    assert float((attr - gap).abs().max()) < 1e-2  # 8 Gauss-Legendre nodes on a ReLU net: small error
    torch.testing.assert_close(both.scores["completeness_error"], (attr - gap).abs(), rtol=1e-3, atol=1e-5)


def test_perturbation_scores_are_the_logit_difference_and_lime_is_linear_in_them() -> None:
    model = toy_model(2)
    x = torch.randn(5, 3, SIZE, SIZE)
    logits = model(x).detach()
    lime = make_explainer("lime", model, num_samples=30, score="prob", mean=[0.5] * 3, std=[0.5] * 3)
    got = target_values(lime, x, 1, "prob", "fp32", contrast=0)
    torch.testing.assert_close(got, (logits[:, 1] - logits[:, 0]).double(), rtol=0, atol=1e-5)
    # the LIME fit is linear in the scores: with one design, "1 and not 0" = "1" - "0" on the logits
    params = {
        "num_samples": 30,
        "score": "logit",
        "segmentation": "slic",
        "segmentation_params": {"n_segments": 5},
    }
    lime = make_explainer("lime", model, seed=0, mean=[0.5] * 3, std=[0.5] * 3, **params)
    both = lime.explain(x[:2], 1, contrast=0)
    torch.testing.assert_close(
        both.maps, lime.explain(x[:2], 1).maps - lime.explain(x[:2], 0).maps, atol=1e-4, rtol=0
    )
    # score="prob" with a contrast is the same logit difference: a probability cannot say "and not B"
    prob = make_explainer("lime", model, seed=0, mean=[0.5] * 3, std=[0.5] * 3, **{**params, "score": "prob"})
    torch.testing.assert_close(prob.explain(x[:2], 1, contrast=0).maps, both.maps, rtol=0, atol=1e-6)


def test_shap_contrast_values_sum_to_the_difference_of_the_end_points() -> None:
    model = toy_model(4)
    x = torch.randn(1, 3, SIZE, SIZE)
    shap = make_explainer("shap", model, max_evals=40, blur_kernel=8, mean=[0.5] * 3, std=[0.5] * 3)
    exp = shap.explain(x, 2, contrast=1)
    logits = model(x).detach()
    assert float(exp.scores["full_value"][0]) == pytest.approx(float(logits[0, 2] - logits[0, 1]), abs=1e-5)
    total = float(exp.maps[0].sum())
    assert total == pytest.approx(float(exp.scores["full_value"][0] - exp.scores["base_value"][0]), abs=1e-4)


@pytest.mark.parametrize("method", list_methods())
def test_every_method_takes_a_contrast_and_records_it(method: str) -> None:
    model = toy_model()
    x = torch.randn(2, 3, SIZE, SIZE)
    small = {
        "lime": {"num_samples": 12},
        "shap": {"max_evals": 12, "blur_kernel": 8},
        "ig": {"steps": 2},
        "rise": {"num_masks": 8},
        "smoothgrad": {"num_samples": 3},
        "occlusion": {"window": 4, "stride": 4},
        "scorecam": {"batch_size": 4},
    }.get(method, {})
    explainer = make_explainer(method, model, mean=[0.5] * 3, std=[0.5] * 3, **small)
    if not type(explainer).contrastive:
        with pytest.raises(
            UnsupportedMethodError, match=f"{explainer.name} cannot explain 'why A and not B'"
        ):
            explainer.explain(x, contrast=RUNNER_UP)
        return
    exp = explainer.explain(x, contrast=RUNNER_UP)
    logits = model(x).detach()
    assert exp.target.tolist() == logits.argmax(1).tolist()
    assert exp.scores["contrast"].tolist() == runner_up(logits, logits.argmax(1)).tolist()
    assert exp.maps.shape == (2, SIZE, SIZE) and torch.isfinite(exp.maps).all()
    assert explainer.contrast is None  # the contrast is the call's, not the explainer's
    with pytest.raises(ValueError, match="contrast class 1 is the class explained in image 0"):
        explainer.explain(x, 1, contrast=1)


@pytest.mark.parametrize(
    ("method", "params"),
    [("occlusion", {"window": 4, "stride": 4}), ("rise", {"num_masks": 16, "grid": 3})],
)
def test_occlusion_and_rise_of_a_logit_difference_are_the_difference_of_their_maps(
    method: str, params: dict[str, int]
) -> None:
    """Both maps are linear in the per-row score, so scoring ``logit_A - logit_B`` gives map(A) - map(B)."""
    model = toy_model(2)
    x = torch.randn(2, 3, SIZE, SIZE)
    explainer = make_explainer(method, model, score="logit", channels_last=False, **params)
    both = explainer.explain(x, 1, contrast=0)
    a, b = explainer.explain(x, 1), explainer.explain(x, 0)
    torch.testing.assert_close(both.maps, a.maps - b.maps, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "xgradcam"])
def test_cams_of_a_contrast_match_pytorch_grad_cam_with_a_difference_target(method: str) -> None:
    from pytorch_grad_cam import AblationCAM, ScoreCAM, XGradCAM

    model = toy_model(4)
    x = torch.randn(2, 3, SIZE, SIZE)
    ours = make_explainer(method, model, layer="1", channels_last=False).explain(x, 1, contrast=[2, 0])
    targets = [lambda out, a=a, b=b: out[a] - out[b] for a, b in [(1, 2), (1, 0)]]
    reference = {"scorecam": ScoreCAM, "ablationcam": AblationCAM, "xgradcam": XGradCAM}[method]
    with reference(model=model, target_layers=[model[1]]) as ref:
        want = ref(input_tensor=x, targets=targets)
    np.testing.assert_allclose(ours.numpy(), want, rtol=0, atol=1e-5)


def test_saliency_of_a_contrast_is_the_gradient_of_the_logit_difference() -> None:
    model = toy_model(3)
    x = torch.randn(2, 3, SIZE, SIZE)
    exp = make_explainer("saliency", model, channels_last=False).explain(x, 2, contrast=1)
    pts = x.clone().requires_grad_(True)
    out = model(pts)
    (g,) = torch.autograd.grad((out[:, 2] - out[:, 1]).sum(), pts)
    torch.testing.assert_close(exp.maps, g.abs().amax(1), rtol=0, atol=1e-6)


def test_runner_up_and_contrast_names() -> None:
    logits = torch.tensor([[0.0, 3.0, 3.0], [5.0, 1.0, 2.0]])
    assert runner_up(logits, torch.tensor([1, 0])).tolist() == [2, 2]
    assert runner_up(logits, torch.tensor([0, 2])).tolist() == [1, 0]  # ties: the lower index
    assert resolve_contrast("Runner-Up", CLASSES) == RUNNER_UP and resolve_contrast("wren", CLASSES) == 1
    assert resolve_contrast("runner-up", ["runner-up", "b"]) == 0  # a class of that name wins
    with pytest.raises(TargetError, match="unknown contrast class 'wrenn': did you mean 'wren'"):
        resolve_contrast("wrenn", CLASSES)
    with pytest.raises(TargetError, match="contrast index 5 is out of range"):
        resolve_contrast(5, CLASSES)
    assert float(class_score(logits, torch.tensor([1, 0]), torch.tensor([0, 1]))[1]) == 4.0


def test_explain_images_with_a_contrast_writes_the_contrastive_maps(tmp_path: Path) -> None:
    trained = toy_trained()
    out = tmp_path / "out"
    params = {"lime": {"num_samples": 16, "batch_size": 8}}
    man = explain_images(
        trained, [str(photo_dir(tmp_path))], ["gradcam", "lime"], out, contrast="runner-up", quiet=True,
        method_params=params,
    )  # fmt: skip
    assert man["contrast"] == "runner-up" and "contrast" not in man["methods"]["gradcam"]["params"]
    for rec in man["images"]:
        x = as_input(rec["source"])
        logits = trained.model(x[None]).detach()
        pred = int(logits.argmax())
        second = int(runner_up(logits, torch.tensor([pred]))[0])
        assert rec["contrast_class"] == CLASSES[second] and rec["target"] == pred
        want = make_explainer("gradcam", trained.model, layer=None).explain(x[None], pred, contrast=second)
        np.testing.assert_allclose(np.load(out / rec["maps"]["gradcam"]), want.numpy()[0], rtol=0, atol=1e-6)
        lime = make_explainer("lime", trained.model, data_config=trained.data_config, **params["lime"])
        alone = lime.explain(x[None], pred, contrast=second).numpy()[0]
        np.testing.assert_allclose(np.load(out / rec["maps"]["lime"]), alone, rtol=0, atol=1e-5)


def test_a_contrast_survives_the_run_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``resume`` (and so sharding, which writes the same parts) explains with the same contrast."""
    import birdlens.explain.run as run_module

    trained = toy_trained()
    src = str(photo_dir(tmp_path))
    panels: list[list[str | None]] = []
    real = run_module._write_panels

    def record(rows, out, methods):  # type: ignore[no-untyped-def]
        panels.append([r.contrast for r in rows])
        return real(rows, out, methods)

    monkeypatch.setattr(run_module, "_write_panels", record)
    plain = explain_images(trained, [src], ["gradcam"], tmp_path / "a", contrast="runner-up", quiet=True)
    parts = explain_images(
        trained, [src], ["gradcam"], tmp_path / "b", contrast="runner-up", quiet=True, resume=True
    )
    assert parts["contrast"] == "runner-up"
    assert panels[0] == panels[1] and None not in panels[0]  # the panel says "and not: B" both ways
    for p, q in zip(plain["images"], parts["images"], strict=True):
        assert p["contrast_class"] == q["contrast_class"] is not None
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / p["maps"]["gradcam"]), np.load(tmp_path / "b" / q["maps"]["gradcam"])
        )


def test_a_contrast_equal_to_the_explained_class_gives_the_plain_map(tmp_path: Path) -> None:
    trained = toy_trained()
    x = as_input(str(next((photo_dir(tmp_path)).rglob("*.png"))))
    pred = CLASSES[int(trained.model(x[None]).argmax())]
    man = explain_images(
        trained, [str(tmp_path / "src")], ["gradcam"], tmp_path / "o", contrast=pred, quiet=True
    )
    rec = next(r for r in man["images"] if r["predicted"] == pred)
    assert rec["contrast_class"] is None and man["contrast"] == pred


def test_cli_contrast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    res = _explain_toy(tmp_path, monkeypatch, out, ["--contrast", "jay"])
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["contrast"] == "jay"
    assert {r["contrast_class"] for r in man["images"]} <= {"jay", None}


@pytest.mark.parametrize(
    ("value", "message"),
    [("eagle", "unknown contrast class 'eagle'"), ("9", "contrast index 9 is out of range")],
)
def test_cli_unknown_contrast_is_one_line_exit_2_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    out = tmp_path / "out"
    res = _explain_toy(tmp_path, monkeypatch, out, ["--contrast", value])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_contrast_with_a_method_that_cannot_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    res = _explain_toy(tmp_path, monkeypatch, out, ["--contrast", "jay", "--methods", "gradcam,eigencam"])
    assert res.exit_code == 2, res.output
    assert "eigencam cannot explain 'why A and not B'" in res.output and "Traceback" not in res.output
    assert not out.exists()
