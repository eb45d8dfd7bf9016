"""Saliency and SmoothGrad: values by hand on toy models, parity with captum's Saliency and NoiseTunnel at the
same noise draws, seeding, bad input, and several images per call equal to one at a time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from birdlens.explain import make_explainer
from birdlens.explain.base import InvalidParameterError, validate_params


class Quadratic(nn.Module):
    """logit_k = a_k * sum(x^2): d logit_k / dx = 2 a_k x, known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, -0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x**2).flatten(1).sum(1, keepdim=True) * self.a


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def photos(n: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_saliency_by_hand_and_equal_to_captum() -> None:
    from captum.attr import Saliency

    x = photos(2)
    got = make_explainer("saliency", Quadratic()).explain(x, target=1)
    want = (2 * 0.5 * x).abs()  # |d(-0.5 sum x^2)/dx| = |x|
    torch.testing.assert_close(got.scores["attributions"], want)
    torch.testing.assert_close(got.maps, want.amax(1))
    model = SmallCNN()
    ours = make_explainer("saliency", model).explain(x)
    ref = Saliency(model).attribute(x, target=ours.target, abs=True)
    torch.testing.assert_close(ours.scores["attributions"], ref, rtol=1e-5, atol=1e-7)


def test_smoothgrad_by_hand() -> None:
    # |d logit_0 / dx| = |2 (x + sigma n_r)| averaged over the draws n_r the explainer names
    x = photos(1)
    exp = make_explainer("smoothgrad", Quadratic(), num_samples=4, noise_level=0.2, seed=3)
    got = exp.explain(x, target=0)
    sigma = 0.2 * float(x.max() - x.min())
    want = sum((2 * (x[0] + sigma * exp.noise(r, (3, 16, 16)))).abs() for r in range(4)) / 4
    torch.testing.assert_close(got.scores["attributions"][0], want)
    torch.testing.assert_close(got.maps[0], want.amax(0))


def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    from captum.attr import NoiseTunnel, Saliency

    model = SmallCNN()
    x = photos(2)
    exp = make_explainer("smoothgrad", model, num_samples=6, noise_level=0.1, seed=5)
    ours = exp.explain(x)
    draws = torch.stack([exp.noise(r, (3, 16, 16)) for r in range(6)])
    for i in range(2):
        sigma = 0.1 * float(x[i].max() - x[i].min())
        monkeypatch.setattr(torch, "normal", lambda mean, std: std * draws)  # captum's one noise draw
        ref = NoiseTunnel(Saliency(model)).attribute(
            x[i : i + 1], nt_type="smoothgrad", nt_samples=6, stdevs=sigma, target=int(ours.target[i])
        )
        monkeypatch.undo()
        torch.testing.assert_close(ours.scores["attributions"][i : i + 1], ref, rtol=1e-5, atol=1e-7)


def test_smoothgrad_of_ig_without_noise_is_ig() -> None:
    model, x = SmallCNN(), photos(2)
    ig = make_explainer("ig", model, steps=6, data_config={"mean": [0.5] * 3, "std": [0.5] * 3}).explain(x)
    sg = make_explainer(
        "smoothgrad",
        model,
        base="ig",
        base_params={"steps": 6},
        num_samples=3,
        noise_level=0.0,
        data_config={"mean": [0.5] * 3, "std": [0.5] * 3},
    ).explain(x)
    torch.testing.assert_close(sg.scores["attributions"], ig.scores["attributions"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sg.maps, ig.maps.abs(), rtol=1e-5, atol=1e-6)
    assert sg.params["base"] == "ig" and sg.params["base_params"]["steps"] == 6


def test_smoothgrad_is_seeded_and_batched_images_equal_one_at_a_time() -> None:
    model, x = SmallCNN(), photos(3)
    a = make_explainer("smoothgrad", model, num_samples=30, seed=1)  # 90 rows: calls span images
    b = make_explainer("smoothgrad", model, num_samples=30, seed=2)
    batched = a.explain(x)
    alone = torch.cat([a.explain(x[i : i + 1]).maps for i in range(3)])
    torch.testing.assert_close(batched.maps, alone, rtol=1e-5, atol=1e-7)
    assert torch.equal(batched.maps, a.explain(x).maps) and not torch.equal(batched.maps, b.explain(x).maps)
    sal = make_explainer("saliency", model, batch_size=2)
    torch.testing.assert_close(
        sal.explain(x).maps,
        torch.cat([sal.explain(x[i : i + 1]).maps for i in range(3)]),
        rtol=1e-5,
        atol=1e-7,
    )


def test_bad_noise_and_budget_are_one_clear_error() -> None:
    for params, msg in [
        ({"noise_level": -0.1}, r"smoothgrad: noise_level must be >= 0 \(a number in \[0, 1\]\), got -0.1"),
        ({"num_samples": 0}, r"smoothgrad: num_samples must be >= 1 \(an integer in \[1, 1000\]\), got 0"),
        (
            {"base": "scorecam"},
            "smoothgrad: base must be one of 'gradcam', 'gradcam\\+\\+', 'layercam', 'hirescam', 'xgradcam', "
            "'saliency', 'ig', 'lrp', got 'scorecam'",
        ),
    ]:
        with pytest.raises(InvalidParameterError, match=msg):
            validate_params("smoothgrad", params)
        with pytest.raises(InvalidParameterError, match=msg):
            make_explainer("smoothgrad", SmallCNN(), **params)
    with pytest.raises(InvalidParameterError, match=r"ig: steps must be >= 1"):  # the base's options too
        make_explainer("smoothgrad", SmallCNN(), base="ig", base_params={"steps": 0})


def test_the_bases_are_the_methods_computed_from_gradients() -> None:
    from birdlens.explain.base import list_methods, method_class
    from birdlens.explain.methods.smoothgrad import smoothable_bases

    bases = smoothable_bases()
    assert set(bases) == {m for m in list_methods() if method_class(m).uses_gradients}
    assert bases == ("gradcam", "gradcam++", "layercam", "hirescam", "xgradcam", "saliency", "ig", "lrp")
    assert validate_params("smoothgrad", {"base": "gradcam"}) == {"base": "gradcam"}


def noisy_copies(exp: object, x: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` noisy copies of each image SmoothGrad ``exp`` explains, ``[B, n, C, H, W]``."""
    sigma = exp.noise_level * (x.flatten(1).amax(1) - x.flatten(1).amin(1))  # type: ignore[attr-defined]
    draws = torch.stack([exp.noise(r, tuple(x.shape[1:])) for r in range(n)])  # type: ignore[attr-defined]
    return x[:, None] + sigma.view(-1, 1, 1, 1, 1) * draws[None]


def test_smoothgrad_of_gradcam_equals_captum_noise_tunnel_of_layer_gradcam(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from captum.attr import LayerGradCam, NoiseTunnel

    from birdlens.explain.imaging import minmax_per_image, resize_maps

    model, x = SmallCNN(), photos(2)
    exp = make_explainer("smoothgrad", model, base="gradcam", layer="net.3", num_samples=5, seed=4)
    ours = exp.explain(x)
    assert ours.params["base"] == "gradcam" and ours.params["layer"] == "net.3"
    draws = torch.stack([exp.noise(r, (3, 16, 16)) for r in range(5)])
    for i in range(2):
        sigma = 0.15 * float(x[i].max() - x[i].min())
        monkeypatch.setattr(torch, "normal", lambda mean, std: std * draws)  # captum's one noise draw
        ref = NoiseTunnel(LayerGradCam(model, model.net[3])).attribute(
            x[i : i + 1], nt_type="smoothgrad", nt_samples=5, stdevs=sigma, target=int(ours.target[i])
        )
        monkeypatch.undo()
        torch.testing.assert_close(ours.scores["cam_lowres"][i], ref[0, 0], rtol=1e-5, atol=1e-6)
        # upsampled as our Grad-CAM shows one CAM: ReLU, min-max, bilinear to the input, ReLU, min-max
        want = minmax_per_image(resize_maps(minmax_per_image(ref[:, 0].clamp_min(0)), (16, 16)).clamp_min(0))
        torch.testing.assert_close(ours.maps[i], want[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("base", ["gradcam++", "layercam", "hirescam", "xgradcam", "lrp"])
def test_smoothgrad_of_any_gradient_base_is_the_mean_of_its_maps_one_by_one(base: str) -> None:
    model, x = SmallCNN(), photos(2)
    exp = make_explainer("smoothgrad", model, base=base, layer="net.3", num_samples=4, seed=7)
    ours = exp.explain(x)
    alone = make_explainer(base, model, **({} if base == "lrp" else {"layer": "net.3"}))
    key = alone.smoothed_score
    copies = noisy_copies(exp, x, 4)
    for i in range(2):
        per_copy = [alone.explain(copies[i, r : r + 1], target=int(ours.target[i])) for r in range(4)]
        mean = torch.stack([e.scores[key][0] for e in per_copy]).mean(0)
        torch.testing.assert_close(ours.scores[key][i], mean, rtol=1e-5, atol=1e-6)
        want = alone.map_of(mean[None], (16, 16))[0]
        torch.testing.assert_close(ours.maps[i], want.abs() if alone.signed else want, rtol=1e-5, atol=1e-5)
    assert ours.maps.min() >= 0  # unsigned, as SmoothGrad's class says
