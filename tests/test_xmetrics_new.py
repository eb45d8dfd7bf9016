"""ROAD, infidelity, max/avg-sensitivity, local Lipschitz, sparseness, complexity and random logit: hand-computed
values on toy inputs, parity with the reference libraries at the same draws, and the bad-input errors.

Tolerances: the references compute in float32 (Quantus, captum, pytorch-grad-cam); birdlens in float64 from the
same float32 maps and model outputs, so values agree to a relative 1e-5 (measured ~1e-7)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from birdlens.explain.metrics import Category, get_metric, metric_info
from birdlens.explain.metrics.draws import image_rngs
from birdlens.explain.metrics.infidelity import infidelity_scores, pixel_noise
from birdlens.explain.metrics.random_logit import off_classes, off_picks
from birdlens.explain.metrics.road import linear_impute, road_scores
from birdlens.explain.metrics.robustness import input_noise

RTOL = 1e-5
NEW = (
    "road_morf",
    "road_lerf",
    "infidelity",
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz",
    "sparseness",
    "complexity",
    "random_logit",
)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 5),
    ).eval()
    x = torch.randn(3, 3, 16, 16)
    t = torch.tensor([0, 2, 4])
    return model, x, t, saliency(model, x, t)


def saliency(model, images, targets):
    x = images.detach().clone().float().requires_grad_(True)
    model(x).gather(1, torch.as_tensor(targets).view(-1, 1)).sum().backward()
    return x.grad.abs().sum(1)


def quantus_saliency(model, inputs, targets, **kwargs):
    return saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()[:, None]


PER_IMAGE = {"normalise_axes": (1, 2, 3)}  # Quantus' max-normalisation per image, as birdlens does


def test_every_new_metric_declares_direction_and_category():
    cats = {metric_info(m)["category"] for m in NEW}
    assert cats == {"faithfulness", "robustness", "complexity", "randomisation"}
    assert Category.COMPLEXITY.value == "complexity"
    assert metric_info("road_morf")["higher_is_better"] is False
    assert metric_info("road_lerf")["higher_is_better"] is True
    assert metric_info("sparseness")["higher_is_better"] is True


# ----------------------------------------------------------------------------------------- hand values
def test_sparseness_and_complexity_by_hand():
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[3.0, -3.0], [0.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]])
    gini = get_metric("sparseness")(None, torch.zeros(3, 3, 2, 2), maps, torch.zeros(3, dtype=torch.long))
    # one-hot of 4: sorted [0,0,0,1] -> 3 / 4; two equal of 4: (1 + 3) / (4 * 2); uniform: 0
    np.testing.assert_allclose(gini, [0.75, 0.5, 0.0], atol=1e-6)
    ent = get_metric("complexity")(None, torch.zeros(3, 3, 2, 2), maps, torch.zeros(3, dtype=torch.long))
    np.testing.assert_allclose(ent, [0.0, math.log(2), math.log(4)], atol=1e-9)


def test_linear_imputation_by_hand():
    img = torch.arange(9.0).view(1, 3, 3)
    keep = np.ones((3, 3), dtype=bool)
    keep[1, 1] = False
    out = linear_impute(img, keep)
    # the centre is the weighted mean of its 8 neighbours: 1/6 direct, 1/12 diagonal
    direct, diag = (1 + 3 + 5 + 7) / 6, (0 + 2 + 6 + 8) / 12
    assert out[0, 1, 1].item() == pytest.approx(direct + diag, abs=1e-6)
    assert torch.equal(out.view(-1)[keep.reshape(-1)], img.view(-1)[keep.reshape(-1)])
    # a corner pixel: weights renormalise over its 3 in-bounds neighbours
    keep = np.ones((3, 3), dtype=bool)
    keep[0, 0] = False
    want = (1 * 1 / 6 + 3 * 1 / 6 + 4 * 1 / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert linear_impute(img, keep)[0, 0, 0].item() == pytest.approx(want, abs=1e-6)


class _Linear(torch.nn.Module):
    """logit 0 = w . x, logit 1 = 0: the score change under any perturbation is w . I exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        z = (x * self.w).flatten(1).sum(1)
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_infidelity_by_hand_on_a_linear_model():
    torch.manual_seed(1)
    w = torch.randn(3, 4, 4)
    model, x, t = _Linear(w), torch.randn(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)
    exact = w.sum(0).expand(2, 4, 4)  # per-pixel map: the channel sum of the weights
    pert = pixel_noise(x, 5, 0.3, 0)
    zero = infidelity_scores(model, x, exact, t, pert, normalize=False, score="logit")
    np.testing.assert_allclose(zero, 0.0, atol=1e-9)
    twice = infidelity_scores(model, x, 2 * exact, t, pert, normalize=False, score="logit")
    wi = (pert.double() * exact[:, None].double()).flatten(2).sum(-1)  # w . I per draw
    np.testing.assert_allclose(twice, (wi**2).mean(1).numpy(), rtol=RTOL)  # the model runs in float32
    # normalised: the scale is fitted, so twice the map is as faithful as the map
    np.testing.assert_allclose(infidelity_scores(model, x, 2 * exact, t, pert, score="logit"), 0.0, atol=1e-9)


def test_sensitivity_and_lipschitz_by_hand():
    x = torch.rand(2, 3, 4, 4) + 0.5
    t = torch.zeros(2, dtype=torch.long)

    def first_channel(model, images, targets):
        return images[:, 0]

    eps = input_noise(x, 3, "uniform", 0.2, 9).double()
    ratio = eps[:, :, 0].flatten(2).norm(dim=-1) / x[:, 0].double().flatten(1).norm(dim=-1)  # [S, B]
    model = torch.nn.Identity()
    mx = get_metric("max_sensitivity", n_samples=3, seed=9)(model, x, x[:, 0], t, explain_fn=first_channel)
    av = get_metric("avg_sensitivity", n_samples=3, seed=9)(model, x, x[:, 0], t, explain_fn=first_channel)
    np.testing.assert_allclose(mx, ratio.amax(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(av, ratio.mean(0).numpy(), rtol=1e-5)

    def constant(model, images, targets):
        return torch.ones(images.shape[0], 4, 4)

    ll = get_metric("local_lipschitz", n_samples=3)(model, x, torch.ones(2, 4, 4), t, explain_fn=constant)
    np.testing.assert_allclose(ll, 0.0, atol=1e-12)


def test_random_logit_by_hand():
    t = torch.tensor([0, 1, 2, 3] * 50)
    other = off_classes(t, off_picks(torch.randn(200, 3, 2, 2), 4, seed=0))
    assert not torch.any(other == t)
    assert set(other.tolist()) == {0, 1, 2, 3}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8)

    def class_blind(model, images, targets):
        return maps[: images.shape[0]]

    out = get_metric("random_logit")(model, x, maps, torch.tensor([0, 1]), explain_fn=class_blind)
    np.testing.assert_allclose(out, 1.0, atol=1e-9)


def test_road_by_hand_on_a_mean_colour_model():
    # logit 0 = mean of the image: imputing a constant image reproduces the constant, so nothing changes
    class MeanModel(torch.nn.Module):
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([m, -m], 1)

    x = torch.full((2, 3, 8, 8), 0.7)
    maps = torch.rand(2, 8, 8)
    t = torch.zeros(2, dtype=torch.long)
    for order in ("morf", "lerf"):
        np.testing.assert_allclose(
            road_scores(MeanModel(), x, maps, t, order=order, noise=0.0), 0.0, atol=1e-6
        )


# ----------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_matches_pytorch_grad_cam(toy, order, monkeypatch):
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, x, t, maps = toy
    cls = ROADMostRelevantFirstAverage if order == "morf" else ROADLeastRelevantFirstAverage
    targets = [ClassifierOutputSoftmaxTarget(int(i)) for i in t]
    mine = get_metric(f"road_{order}", noise=0.0)(model, x, maps, t)
    ref = noise_free_road(order)(x, maps.numpy(), targets, model)
    np.testing.assert_allclose(mine, ref, rtol=RTOL, atol=1e-7)
    # with noise: the reference draws torch.randn_like per (percentile, image); give it birdlens' draws
    rngs, calls = image_rngs(x, 5), [0]

    def draws(like):
        i = calls[0] % x.shape[0]  # percentile-major, then image: image i's draws come in percentile order
        calls[0] += 1
        return torch.from_numpy(rngs[i].standard_normal(tuple(like.shape), dtype=np.float32))

    monkeypatch.setattr(torch, "randn_like", draws)
    ref = cls()(x, maps.numpy(), targets, model)
    monkeypatch.undo()
    mine = get_metric(f"road_{order}", seed=5)(model, x, maps, t)
    assert calls[0] == 9 * x.shape[0]
    np.testing.assert_allclose(mine, ref, rtol=RTOL, atol=1e-7)


def noise_free_road(order):
    """The reference's ROAD averager with a noise-free imputer."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        AveragerAcrossThresholds,
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    remove = RemoveMostRelevantFirst if order == "morf" else RemoveLeastRelevantFirst
    return AveragerAcrossThresholds(
        lambda p: PerturbationConfidenceMetric(remove(p, NoisyLinearImputer(noise=0.0)))
    )


def test_infidelity_matches_captum(toy):
    from captum.metrics import infidelity

    model, x, t, maps = toy
    s = 6
    pert = pixel_noise(x, s, 0.1, 4)

    def perturb(inputs):
        noise = pert.flatten(0, 1)[:, None].expand_as(inputs)
        return noise, inputs - noise

    def forward(inputs):
        return model(inputs).softmax(-1)

    for normalize in (True, False):
        ref = infidelity(
            forward,
            perturb,
            x,
            maps[:, None].expand_as(x) / 3,
            target=t,
            n_perturb_samples=s,
            normalize=normalize,
        )
        mine = get_metric("infidelity", n_samples=s, noise=0.1, seed=4, normalize=normalize)(
            model, x, maps, t
        )
        np.testing.assert_allclose(mine, ref.numpy(), rtol=RTOL)


@pytest.mark.parametrize(
    ("name", "cls", "kwargs"),
    [
        ("max_sensitivity", "MaxSensitivity", {"lower_bound": 0.2}),
        ("avg_sensitivity", "AvgSensitivity", {"lower_bound": 0.2}),
        (
            "local_lipschitz",
            "LocalLipschitzEstimate",
            {"perturb_std": 0.1, "normalise_func_kwargs": PER_IMAGE},
        ),
    ],
)
def test_robustness_matches_quantus(toy, name, cls, kwargs):
    quantus = pytest.importorskip("quantus")
    model, x, t, maps = toy
    kind, level = ("normal", 0.1) if name == "local_lipschitz" else ("uniform", 0.2)
    eps = input_noise(x, 4, kind, level, 3).numpy().reshape(4, x.shape[0], -1)
    step = [0]

    def same_draws(arr, indices, **_):  # Quantus' perturb_func contract, fed birdlens' draws step by step
        out = (arr + eps[step[0]]).astype(arr.dtype)
        step[0] += 1
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(quantus, cls)(nr_samples=4, disable_warnings=True, perturb_func=same_draws, **kwargs)(
            model=model,
            x_batch=x.numpy(),
            y_batch=t.numpy(),
            a_batch=maps.numpy()[:, None].copy(),
            explain_func=quantus_saliency,
            device="cpu",
        )
    assert step[0] == 4
    mine = get_metric(name, n_samples=4, seed=3)(model, x, maps, t, explain_fn=saliency)
    np.testing.assert_allclose(mine, ref, rtol=RTOL)


@pytest.mark.parametrize(("name", "cls"), [("sparseness", "Sparseness"), ("complexity", "Complexity")])
def test_complexity_metrics_match_quantus(toy, name, cls):
    quantus = pytest.importorskip("quantus")
    model, x, t, maps = toy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(quantus, cls)(disable_warnings=True, normalise_func_kwargs=PER_IMAGE)(
            model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=maps.numpy()[:, None].copy()
        )
    np.testing.assert_allclose(get_metric(name)(model, x, maps, t), ref, rtol=RTOL)


def test_random_logit_matches_quantus(toy, monkeypatch):
    quantus = pytest.importorskip("quantus")
    model, x, t, maps = toy
    picks = off_picks(x, 5, 7)
    monkeypatch.setattr(np.random, "randint", lambda lo, hi, n: picks)  # Quantus' one draw, given birdlens'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = quantus.RandomLogit(
            num_classes=5, seed=7, disable_warnings=True, normalise_func_kwargs=PER_IMAGE
        )(
            model=model,
            x_batch=x.numpy(),
            y_batch=t.numpy(),
            a_batch=maps.numpy()[:, None].copy(),
            explain_func=quantus_saliency,
            device="cpu",
        )
    monkeypatch.undo()
    mine = get_metric("random_logit", seed=7, flat=True)(model, x, maps, t, explain_fn=saliency)
    np.testing.assert_allclose(mine, ref, rtol=RTOL, atol=1e-7)


# ----------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("max_sensitivity", {"n_samples": 0}, "max_sensitivity.n_samples must be an integer >= 1, got 0"),
        ("avg_sensitivity", {"radius": -0.1}, "avg_sensitivity.radius must be a number >= 0, got -0.1"),
        ("local_lipschitz", {"std": -1.0}, "local_lipschitz.std must be a number >= 0"),
        ("infidelity", {"n_samples": 0}, "infidelity.n_samples must be an integer >= 1"),
        ("infidelity", {"noise": -0.5}, "infidelity.noise must be a number >= 0"),
        ("road_morf", {"noise": -0.01}, "road_morf.noise must be a number >= 0"),
        ("road_lerf", {"percentiles": []}, "road_lerf.percentiles must be a non-empty list"),
        ("road_morf", {"score": "margin"}, "road_morf.score must be one of prob, logit"),
    ],
)
def test_bad_options_are_one_clear_error(name, params, message):
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        get_metric(name, **params)
