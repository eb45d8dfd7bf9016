"""LRP (zennit): conservation and relevances by hand on a toy ReLU network, equal to raw zennit with the same
composite and canonizers on the simple CNN, VGG and ResNet, and refused on networks its rules do not cover."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from birdlens.explain import UnsupportedMethodError, make_explainer
from birdlens.explain.base import InvalidParameterError
from birdlens.explain.methods.lrp import COMPOSITES, make_composite


class Toy(nn.Module):
    """flatten -> W1 (12 -> 5) -> ReLU -> W2 (5 -> 3), no biases: relevance can only be conserved."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(12, 5, bias=False)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.flat(x))))


def _eps(z: np.ndarray, eps: float) -> np.ndarray:
    return z + eps * np.where(z >= 0, 1.0, -1.0)  # zennit's stabiliser: sign(0) = +1


def test_conservation_and_relevances_by_hand() -> None:
    model, eps = Toy(), 1e-6
    x = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(2)) + 0.1
    w1, w2 = model.fc1.weight.detach().double().numpy(), model.fc2.weight.detach().double().numpy()
    a0 = x.flatten().double().numpy()
    z1 = w1 @ a0
    a1 = np.maximum(z1, 0)
    z2 = w2 @ a1
    c = int(np.argmax(z2))
    r2 = np.zeros(3)
    r2[c] = z2[c]  # the output relevance is the target's logit
    r1 = a1 * (w2.T @ (r2 / _eps(z2, eps)))  # epsilon rule on fc2; the ReLU passes relevance on
    r0 = a0 * (w1.T @ (r1 / _eps(z1, eps)))  # epsilon rule on fc1 (composite epsilon_plus: dense = epsilon)
    got = make_explainer("lrp", model, composite="epsilon_plus", epsilon=eps).explain(x)
    assert int(got.target[0]) == c
    np.testing.assert_allclose(got.scores["attributions"][0].flatten().numpy(), r0, rtol=1e-4, atol=1e-7)
    # conservation: what reaches the input is the logit less what the epsilons absorbed ...
    kept = (r1 * z1 / _eps(z1, eps)).sum()  # r1 already carries fc2's share: z2[c] * z2[c] / (z2[c] + eps)
    assert abs(r0.sum() - kept) < 1e-12 and abs(kept - z2[c]) < 1e-3 * abs(z2[c])
    # ... so with a vanishing epsilon the input relevances add up to the logit (no biases absorb any)
    tiny = make_explainer("lrp", model, composite="epsilon_plus", epsilon=1e-12).explain(x)
    assert abs(float(tiny.scores["relevance_sum"][0]) - z2[c]) < 1e-6 * abs(z2[c])
    # the flat rule on the first layer spreads each unit's relevance evenly over its 12 inputs
    flat = make_explainer("lrp", model, composite="epsilon_plus_flat", epsilon=eps).explain(x)
    np.testing.assert_allclose(
        flat.scores["attributions"][0].flatten().numpy(), np.full(12, r1.sum() / 12), rtol=1e-4
    )
    np.testing.assert_allclose(flat.maps[0].numpy(), np.full((2, 2), 3 * r1.sum() / 12), rtol=1e-4)


def _raw_zennit(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, composite: str, canonizers: list
) -> torch.Tensor:
    from zennit.attribution import Gradient

    with Gradient(model, make_composite(composite, 1e-6, canonizers)) as attributor:
        _, rel = attributor(x, lambda out: torch.nn.functional.one_hot(target, out.shape[1]) * out)
    return rel


@pytest.mark.parametrize("composite", COMPOSITES)
def test_simple_cnn_equals_raw_zennit(composite: str) -> None:
    from zennit.canonizers import SequentialMergeBatchNorm

    from birdlens.models import create_model

    model = create_model("simple_cnn", num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = make_explainer("lrp", model, composite=composite).explain(x)
    ref = _raw_zennit(model, x, ours.target, composite, [SequentialMergeBatchNorm()])
    torch.testing.assert_close(
        ours.scores["attributions"], ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max())
    )
    torch.testing.assert_close(ours.maps, ref.sum(1), rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_vgg_equals_raw_zennit() -> None:
    from timm.models.vgg import VGG
    from zennit.canonizers import SequentialMergeBatchNorm

    torch.manual_seed(0)
    model = VGG(
        cfg=[16, "M", 32, "M", 32, "M"], num_classes=3
    ).eval()  # timm's VGG19 modules, fewer and narrower
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours = make_explainer("lrp", model).explain(x)
    ref = _raw_zennit(model, x, ours.target, "epsilon_plus_flat", [SequentialMergeBatchNorm()])
    torch.testing.assert_close(
        ours.scores["attributions"], ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max())
    )


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_timm_resnet_equals_zennit_on_torchvision_resnet(arch: str) -> None:
    """timm's ResNet blocks get the residual Sum zennit's ResNetCanonizer gives torchvision's (same weights)."""
    torchvision = pytest.importorskip("torchvision")
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=4).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so merging them matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    tv = getattr(torchvision.models, arch)(num_classes=4).eval()
    tv.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    exp = make_explainer("lrp", model, composite="epsilon_alpha2_beta1_flat")
    with torch.no_grad():
        before = model(x)
    ours = exp.explain(x)
    ref = _raw_zennit(tv, x, ours.target, "epsilon_alpha2_beta1_flat", [ResNetCanonizer()])
    torch.testing.assert_close(
        ours.scores["attributions"], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max())
    )
    # the canonizers are undone: the model computes what it computed before
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_refused_where_its_rules_do_not_hold() -> None:
    silu = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with pytest.raises(
        UnsupportedMethodError, match=r"'lrp' is refused on this model \(it has a SiLU activation\)"
    ):
        make_explainer("lrp", silu)
    with pytest.raises(
        UnsupportedMethodError, match="skip connection that birdlens has no LRP canonizer for"
    ):
        make_explainer("lrp", timm.create_model("efficientnet_lite0", num_classes=2))
    with pytest.raises(InvalidParameterError, match="lrp: composite must be one of 'epsilon_plus_flat'"):
        make_explainer("lrp", Toy(), composite="gamma")
    with pytest.raises(InvalidParameterError, match="lrp: batch_size must be >= 1"):
        make_explainer("lrp", Toy(), batch_size=0)


def test_batched_equals_one_at_a_time_and_nothing_is_left_on_the_model() -> None:
    from birdlens.explain.hooks import count_hooks

    model = timm.create_model("resnet18", num_classes=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exp = make_explainer("lrp", model, batch_size=2)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    batched = exp.explain(x).maps
    alone = torch.cat([exp.explain(x[i : i + 1]).maps for i in range(3)])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6 * float(alone.abs().max()))
    assert count_hooks(model) == 0 and all(
        m.inplace for m in model.modules() if hasattr(m, "inplace") and isinstance(m, nn.ReLU)
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
