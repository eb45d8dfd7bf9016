"""Re-rendered variants of the synthetic birds (another background, two birds side by side) and the two
ground-truth metrics built on them: generator functions are deterministic and change only what they claim;
the metrics give hand-computed values on toy models; the evaluator scores them on a synthetic dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from birdlens.data.synth import class_catalog, generate_dataset, part_coverage, render_bird, sample_spec
from birdlens.data.synth.variants import (
    background_seed,
    pair_specs,
    render_on_background,
    render_pair,
    with_background,
)
from birdlens.explain.metrics import get_metric
from birdlens.explain.metrics.variants import common_mass_on_bird, first_bird_share, pair_partners

SIZE = 64


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _spec(cls: int = 0, i: int = 0):
    return sample_spec(class_catalog(6, 0)[cls], np.random.default_rng([3, cls, i]))


# ------------------------------------------------------------------------------------------- generator
def test_replacement_background_keeps_the_bird_and_changes_the_scene():
    spec = _spec()
    img, mask = render_bird(spec, SIZE)
    new, new_mask = render_on_background(spec, SIZE, 1)
    again, _ = render_on_background(spec, SIZE, 1)
    np.testing.assert_array_equal(new, again)  # a pure function of the stored spec and k
    np.testing.assert_array_equal(new_mask, mask)  # same bird, same pixels labelled
    full = part_coverage(spec, SIZE).sum(0) >= 1 - 1e-6  # output pixels entirely covered by the bird
    assert full.sum() > 50
    np.testing.assert_array_equal(new[full], img[full])  # the bird's own pixels are untouched
    assert (new[mask == 0] != img[mask == 0]).any(axis=-1).mean() > 0.5  # most of the scene is new
    assert with_background(spec, 1).background_seed != with_background(spec, 2).background_seed
    assert background_seed(spec, 1) != spec.background_seed
    with pytest.raises(ValueError, match="must be >= 1"):
        background_seed(spec, 0)


def test_pair_puts_each_bird_in_its_own_half_with_its_own_pixels():
    a, b = _spec(0, 1), _spec(3, 2)
    img, which = render_pair(a, b, SIZE)
    img2, which2 = render_pair(a, b, SIZE)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(which, which2)
    assert set(np.unique(which).tolist()) == {0, 1, 2}
    cols = np.nonzero(which)[1]
    assert cols[which[which > 0] == 1].max() < SIZE // 2 <= cols[which[which > 0] == 2].min()
    for k, placed in enumerate(pair_specs(a, b), start=1):
        alone, mask = render_bird(placed, SIZE)
        full = part_coverage(placed, SIZE).sum(0) >= 1 - 1e-6
        np.testing.assert_array_equal(img[full], alone[full])  # each bird is drawn exactly as alone
        np.testing.assert_array_equal(which == k, mask > 0)


def test_pair_partners_are_seeded_and_of_another_class():
    labels = [0, 0, 1, 1, 2, 2]
    p = pair_partners(labels, seed=4)
    assert p == pair_partners(labels, seed=4)
    assert all(labels[j] != labels[i] for i, j in enumerate(p))
    assert pair_partners([1, 1, 1]) == [-1, -1, -1]


# ------------------------------------------------------------------------------------------- metrics
def test_common_mass_and_bird_share_by_hand():
    a = torch.tensor([[[1.0, 1.0], [0.0, 2.0]]])  # normalised: .25 .25 0 .5
    b = torch.tensor([[[2.0, 0.0], [-1.0, 2.0]]])  # positive part normalised: .5 0 0 .5
    bird = torch.tensor([[[True, False], [False, True]]])
    assert common_mass_on_bird(a, b, bird).item() == pytest.approx(0.25 + 0.5)
    zero = torch.zeros(1, 2, 2)  # no positive mass: uniform .25 each
    assert common_mass_on_bird(zero, zero, bird).item() == pytest.approx(0.5)
    which = torch.tensor([[[1, 1], [2, 0]]])
    m = torch.tensor([[[3.0, 0.0], [1.0, 9.0]]])  # 3 on bird 1, 1 on bird 2 (9 on background ignored)
    assert first_bird_share(m, which).item() == pytest.approx(0.75)
    assert first_bird_share(torch.zeros(1, 2, 2), which).item() == pytest.approx(2 / 3)  # by area


class Weighted(nn.Module):
    """logit_0 = sum of channel 0 weighted by ``w``, logit_1 = 0: a model with a known probability."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x[:, 0] * self.w).flatten(1).sum(1)
        return torch.stack([z, torch.zeros_like(z)], 1)


def _input_map(model, images, targets):  # the explainer "map = channel 0 of the input"
    return images[:, 0].clone()


def test_background_independence_on_a_toy_model():
    bird = torch.zeros(1, 2, 2, dtype=torch.long)
    bird[0, 0, 0] = 1  # the bird is the top-left pixel
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    bg = x.clone()[:, None]  # one replacement background: the three background pixels change
    bg[0, 0, 0] = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    ctx = {"part_masks": bird, "background_images": bg, "explain_fn": _input_map}
    t = torch.tensor([0])
    # a model that looks only at the bird: p unchanged; maps .25 each vs (1/4, 3/4, 0, 0): common on bird .25
    on_bird = Weighted(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    v = get_metric("background_independence")(on_bird, x, x[:, 0], t, **ctx)
    assert v[0] == pytest.approx(0.25)
    # a map that sits on the bird in both images scores 1
    fixed = lambda m, imgs, tt: (torch.arange(4).view(1, 2, 2) == 0).float().repeat(imgs.shape[0], 1, 1)  # noqa: E731
    v = get_metric("background_independence")(
        on_bird, x, fixed(None, x, t), t, **{**ctx, "explain_fn": fixed}
    )
    assert v[0] == pytest.approx(1.0)
    # a model that reads the background moves by sigmoid(3)-sigmoid(1) > tol: the image is not scored
    reads_bg = Weighted(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    assert sig(3) - sig(1) > 0.1
    assert np.isnan(get_metric("background_independence")(reads_bg, x, x[:, 0], t, **ctx)[0])
    assert get_metric("background_independence", tol=0.5)(reads_bg, x, x[:, 0], t, **ctx)[0] == pytest.approx(
        0.25
    )


def test_target_sensitivity_on_toy_explainers():
    which = torch.tensor([[[1, 1, 0, 2]]])  # bird 1 = two left pixels, bird 2 = the right pixel
    pair = torch.zeros(1, 3, 1, 4)
    x, t = torch.zeros(1, 3, 1, 4), torch.tensor([0])
    ctx = {"pair_images": pair, "pair_masks": which, "pair_targets": torch.tensor([[0, 1]])}

    def own_bird(model, imgs, targets):  # class 0's map on bird 1, class 1's on bird 2
        return torch.stack([(which[0] == (1 if int(c) == 0 else 2)).float() for c in targets])

    def swapped(model, imgs, targets):
        return own_bird(model, imgs, 1 - targets)

    def partial(model, imgs, targets):  # class 0: 3 on bird 1 / 1 on bird 2 (.75); class 1: uniform (.5)
        rows = [torch.tensor([[3.0, 0.0, 5.0, 1.0]]) if int(c) == 0 else torch.ones(1, 4) for c in targets]
        return torch.stack(rows)

    m = get_metric("target_sensitivity")
    maps = torch.zeros(1, 1, 4)
    assert m(None, x, maps, t, explain_fn=own_bird, **ctx)[0] == pytest.approx(1.0)
    assert m(None, x, maps, t, explain_fn=swapped, **ctx)[0] == pytest.approx(-1.0)
    assert m(None, x, maps, t, explain_fn=partial, **ctx)[0] == pytest.approx(0.75 - 2 / 3)
    blind = lambda model, imgs, targets: torch.rand(1, 1, 4).repeat(imgs.shape[0], 1, 1)  # noqa: E731
    assert m(None, x, maps, t, explain_fn=blind, **ctx)[0] == pytest.approx(0.0)


def test_metrics_declare_their_facts_and_refuse_missing_ground_truth_in_one_line():
    for name in ("background_independence", "target_sensitivity"):
        metric = get_metric(name)
        assert metric.higher_is_better and metric.category.value == "ground_truth"
        with pytest.raises(ValueError) as err:
            metric(None, torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1), explain_fn=_input_map)
        msg = str(err.value)
        assert "\n" not in msg and name in msg and "synthetic-bird dataset" in msg
    with pytest.raises(ValueError, match="tol"):
        get_metric("background_independence", tol=2.0)


# ------------------------------------------------------------------------------------------- evaluator
def test_evaluator_scores_both_metrics_on_synthetic_birds_only(tmp_path):
    from _trainutil import untrained_cnn
    from birdlens.explain.metrics.evaluate import evaluate_explanations

    synth = generate_dataset(tmp_path / "birds", classes=3, per_class=8, size=SIZE, seed=0, quiet=True)
    trained = untrained_cnn(synth.classes, SIZE)
    kw = dict(n=4, seed=0, n_steps=4, sanity_n=0, stability_n=0, figures=False, quiet=True, n_resamples=200)
    res = evaluate_explanations(trained, synth, ["gradcam"], variants_n=3, **kw)
    assert res["methods"]["gradcam"]["target_sensitivity"]["n"] == 3  # the first variants_n images
    for method in ("gradcam", "random (baseline)", "centre (baseline)"):
        for metric in ("background_independence", "target_sensitivity"):
            stats = res["methods"][method][metric]
            assert set(stats) >= {"mean", "ci95", "n", "higher_is_better"}, (method, metric)
    # a content-free map cannot depend on the target: exactly 0 for both baselines
    assert res["methods"]["random (baseline)"]["target_sensitivity"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert res["methods"]["centre (baseline)"]["target_sensitivity"]["mean"] == pytest.approx(0.0, abs=1e-12)
    # without the generator's files beside the images, both are skipped (not an error)
    (tmp_path / "birds" / "specs.jsonl").unlink()
    plain = evaluate_explanations(trained, synth, ["gradcam"], **kw)
    assert "background_independence" not in plain["methods"]["gradcam"]
    assert "target_sensitivity" not in plain["methods"]["gradcam"]
