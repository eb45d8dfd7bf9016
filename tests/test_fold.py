"""BatchNorm folding (birdlens.models.fold): exact by hand, safe when a pair must not be folded, and
invisible in the explanations that use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from birdlens.models.fold import fold_batchnorm


def _bn(ch: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(ch)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(ch, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(ch, generator=g))
        bn.running_mean.copy_(torch.randn(ch, generator=g))
        bn.running_var.copy_(torch.rand(ch, generator=g) + 0.1)
    return bn


def test_fold_single_pair_by_hand() -> None:
    conv = nn.Conv2d(1, 1, 1, bias=True)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
    bn = nn.BatchNorm2d(1, eps=0.0)
    with torch.no_grad():
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
        bn.running_mean.fill_(4.0)
        bn.running_var.fill_(9.0)
    model = nn.Sequential(conv, bn).eval()
    res = fold_batchnorm(model, torch.ones(1, 1, 2, 2))
    assert res.folded == 1
    folded_conv = res.model[0]
    # scale = 3 / sqrt(9) = 1: W' = 2, b' = 0.5 + (1 - 4) * 1 = -2.5; x=1 -> 2 - 2.5 = -0.5
    assert float(folded_conv.weight.detach()) == pytest.approx(2.0)
    assert float(folded_conv.bias.detach()) == pytest.approx(-2.5)
    assert isinstance(res.model[1], nn.Identity)
    assert torch.allclose(res.model(torch.ones(1, 1, 2, 2)), torch.full((1, 1, 2, 2), -0.5))
    assert float(model[0].weight.detach()) == 2.0  # the original is untouched


class Residual(nn.Module):
    """The conv output feeds both the BN and a skip connection: folding it would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), _bn(3, 1)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3, padding=1), _bn(4, 2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn(y) + y  # y used twice
        return self.fc(self.bn2(self.conv2(z)).mean((2, 3)))


def test_fold_never_changes_outputs_when_a_conv_output_is_reused() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(2, 3, 8, 8)
    res = fold_batchnorm(model, x)
    with torch.inference_mode():
        assert torch.allclose(res.model(x), model(x), atol=1e-5)
    # folding self.conv would change the skip branch too: the check batch sees it and the model is kept
    assert res.folded == 0 and res.model is model
    assert "differ" in res.reason and res.max_abs_diff > 1e-3


def test_fold_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).train(), torch.randn(1, 3, 4, 4))


def test_fold_lite0_matches_and_lime_is_unchanged() -> None:
    from birdlens.explain import make_explainer
    from birdlens.models import create_model

    model = create_model("efficientnet_lite0", pretrained=True).eval()
    g = torch.Generator().manual_seed(0)
    x = (
        torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(96, 96), mode="bilinear")
        * 2
        - 1
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = fold_batchnorm(model, x)
    assert res.folded > 40  # every conv in Lite0 is followed by a BatchNorm
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in res.model.modules())
    assert n_bn == 0
    with torch.inference_mode():
        assert torch.allclose(res.model(x), model(x), atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    kw = {"num_samples": 120, "seed": 3, "mean": [0.5] * 3, "std": [0.5] * 3, "segmentation": "slic"}
    fast = make_explainer("lime", model, **kw).explain(x[:1])
    plain = make_explainer("lime", model, fold_bn=False, **kw).explain(x[:1])
    assert fast.params["fold_bn"] == res.folded and "fold_bn" not in plain.params
    a, b = fast.scores["weights"][0].numpy(), plain.scores["weights"][0].numpy()
    np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    assert set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5])


def test_uncopyable_model_is_used_as_is() -> None:
    import threading

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 3, 1), _bn(3, 0))
            self.lock = threading.Lock()  # deepcopy raises on a lock

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    model = Holder().eval()
    res = fold_batchnorm(model, torch.randn(1, 3, 4, 4))
    assert res.folded == 0 and res.model is model and "cannot be copied" in res.reason


def test_watched_model_copy_shares_its_watch() -> None:
    from birdlens.app.tasks import TaskCancelled, Watch, watching

    watch = Watch(total=10)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), _bn(3, 0)).eval()
    with watching(model, watch) as wm:
        res = fold_batchnorm(wm, torch.randn(2, 3, 4, 4))
        assert res.folded == 1 and res.model is not wm
        seen = watch.seen
        with torch.inference_mode():
            res.model(torch.randn(3, 3, 4, 4))
        assert watch.seen == seen + 3  # the folded copy reports progress to the same watch
        assert dict(wm.named_modules()).keys() == {"", "0", "1"}  # layer paths as the model's own
    seen = watch.seen
    model(torch.randn(1, 3, 4, 4))
    assert watch.seen == seen  # the hook is gone after the block
    watch.cancel()
    with pytest.raises(TaskCancelled):
        res.model(torch.randn(1, 3, 4, 4))
