"""Occlusion and RISE: values by hand on toy models, parity with captum's Occlusion, seeded masks, bad input,
and cross-image batching equal to explaining each image alone (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from birdlens.explain import make_explainer
from birdlens.explain.base import InvalidParameterError, method_class, validate_params
from birdlens.explain.methods.rise import rise_masks

NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class Linear(nn.Module):
    """logit_k = sum_{c,y,x} W[k, c, y, x] * x[c, y, x]: occluding a window removes exactly its terms."""

    def __init__(self, size: int, classes: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * size * size, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def photos(n: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- occlusion
def test_occlusion_by_hand_on_a_linear_model() -> None:
    size, window, stride = 6, 3, 2  # corners 0 and 2 per side: row/column 5 is covered by no window
    model = Linear(size)
    x = photos(1, size)
    exp = make_explainer("occlusion", model, window=window, stride=stride, score="logit", fold_bn=False)
    got = exp.explain(x, target=1).maps[0].numpy()
    w = model.fc.weight[1].detach().view(3, size, size).numpy()
    contrib = (w * x[0].numpy()).sum(0)  # each pixel's share of the logit, summed over colours
    total, count = np.zeros((size, size)), np.zeros((size, size))
    for y in (0, 2):
        for xx in (0, 2):
            drop = contrib[y : y + 3, xx : xx + 3].sum()  # f(x) - f(x with the window set to 0)
            total[y : y + 3, xx : xx + 3] += drop
            count[y : y + 3, xx : xx + 3] += 1
    want = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got[5].tolist() == [0.0] * size and got[:, 5].tolist() == [0.0] * size


@pytest.mark.parametrize("baseline", ["zero", "black"])
def test_occlusion_equals_captum(baseline: str) -> None:
    from captum.attr import Occlusion

    model = SmallCNN().eval()
    x = photos(2)
    exp = make_explainer("occlusion", model, window=8, stride=4, baseline=baseline, data_config=NORM)
    ours = exp.explain(x)
    prob = lambda v: torch.softmax(model(v), 1)  # noqa: E731  (score="prob", the default)
    base = (
        0.0
        if baseline == "zero"
        else (-torch.tensor(NORM["mean"]) / torch.tensor(NORM["std"])).view(1, 3, 1, 1)
    )
    ref = Occlusion(prob).attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=base, target=ours.target
    )
    assert torch.equal(ref[:, 0], ref[:, 1]) and torch.equal(ref[:, 0], ref[:, 2])  # one value per pixel
    scale = float(ref.abs().max())
    assert scale > 1e-4
    torch.testing.assert_close(ours.maps, ref[:, 0].float(), rtol=0, atol=1e-5 * scale)


def test_occlusion_and_rise_refuse_bad_input_with_the_option_named() -> None:
    model = SmallCNN()
    for method, params, msg in [
        ("occlusion", {"window": 0}, "occlusion: window must be >= 1"),
        ("occlusion", {"stride": -2}, "occlusion: stride must be >= 1"),
        ("occlusion", {"baseline": "grey"}, "baseline must be one of 'zero', 'black', 'blurred'"),
        ("rise", {"num_masks": 0}, "rise: num_masks must be >= 1"),
        ("rise", {"keep": -0.5}, "rise: keep must be >= 0.01"),
    ]:
        with pytest.raises(InvalidParameterError, match=msg):
            validate_params(method, params)
        with pytest.raises(InvalidParameterError, match=msg):  # a library call gets the same error
            make_explainer(method, model, **params)
    with pytest.raises(InvalidParameterError, match=r"window must be <= the image side \(32 px\), got 40"):
        make_explainer("occlusion", model, window=40).explain(photos(1))


# ---------------------------------------------------------------------------------------------- RISE
def test_rise_masks_are_seeded_per_row_and_follow_the_paper() -> None:
    a = rise_masks(3, 0, 10, (20, 20), 4, 0.5)
    split = torch.cat([rise_masks(3, 0, 3, (20, 20), 4, 0.5), rise_masks(3, 3, 10, (20, 20), 4, 0.5)])
    assert torch.equal(a, split) and a.shape == (10, 20, 20)  # mask i depends on (seed, i) only
    assert not torch.equal(a, rise_masks(4, 0, 10, (20, 20), 4, 0.5))
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    many = rise_masks(0, 0, 400, (21, 21), 7, 0.3)
    assert abs(float(many.mean()) - 0.3) < 0.02  # E[M] = keep
    # a cell kept everywhere gives ones; kept nowhere gives zeros
    assert torch.equal(rise_masks(0, 0, 2, (9, 9), 3, 1.0), torch.ones(2, 9, 9))


class PickPixel(nn.Module):
    """logit 0 = the red value at pixel (2, 5); logit 1 = 1 - that."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 2, 5]
        return torch.stack([v, 1 - v], 1)


def test_rise_by_hand() -> None:
    # an all-ones image masked towards 0: f(x * M_i) = M_i(2, 5), so S(v) = sum_i M_i(2, 5) M_i(v) / (N p)
    n, keep = 60, 0.4
    exp = make_explainer("rise", PickPixel(), num_masks=n, grid=3, keep=keep, seed=7, score="logit")
    got = exp.explain(torch.ones(1, 3, 12, 12), target=0).maps[0].double()
    m = rise_masks(7, 0, n, (12, 12), 3, keep).double()
    want = (m[:, 2, 5].view(-1, 1, 1) * m).sum(0) / (n * keep)
    torch.testing.assert_close(got, want.float().double(), rtol=1e-6, atol=1e-6)
    # a constant score c gives c * mean(M) / p
    const = exp.explain(torch.ones(1, 3, 12, 12), target=1).maps[0].double()  # 1 - M_i(2,5) ...
    want1 = ((1 - m[:, 2, 5]).view(-1, 1, 1) * m).sum(0) / (n * keep)
    torch.testing.assert_close(const, want1, rtol=1e-5, atol=1e-6)


def test_rise_same_seed_same_map_other_seed_differs() -> None:
    model, x = SmallCNN(), photos(2)
    a = make_explainer("rise", model, num_masks=20, seed=1).explain(x)
    b = make_explainer("rise", model, num_masks=20, seed=1).explain(x)
    c = make_explainer("rise", model, num_masks=20, seed=2).explain(x)
    assert torch.equal(a.maps, b.maps) and not torch.equal(a.maps, c.maps) and a.params["seed"] == 1
    assert method_class("rise").stochastic and not method_class("occlusion").stochastic


# ---------------------------------------------------------------------------------------------- batching
@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("efficientnet_lite0", num_classes=5).eval()


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("occlusion", {"window": 32, "stride": 16}),  # 1 + 9 rows per image in batches of 4: a lone tail row
        ("occlusion", {"window": 24, "stride": 20, "batch_size": 3, "baseline": "blurred"}),
        ("rise", {"num_masks": 13, "grid": 4}),
        ("rise", {"num_masks": 9, "batch_size": 2, "score": "logit"}),
    ],
    ids=["occ", "occ-blur", "rise", "rise-logit"],
)
def test_batched_equals_per_image_loop(lite0: nn.Module, method: str, params: dict) -> None:
    assert method_class(method).batched
    explainer = make_explainer(method, lite0, data_config=NORM, **params)
    x = photos(3, 64)
    batched = explainer.explain(x)
    alone = [explainer.explain(x[i : i + 1]) for i in range(3)]
    assert torch.equal(batched.maps, torch.cat([a.maps for a in alone]))
    assert torch.equal(batched.target, torch.cat([a.target for a in alone]))


# ---------------------------------------------------------------------------------------------- the CLI
def test_the_cli_takes_their_options_and_refuses_a_zero_budget(tmp_path) -> None:
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from _trainutil import save_run, untrained_cnn
    from birdlens.cli import app

    run = save_run(untrained_cnn(["a", "b", "c"], 64), tmp_path / "run")
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    args = ["explain", str(img), "--run", str(run), "--methods", "occlusion,rise", "--quiet"]
    bad = CliRunner().invoke(app, [*args, "--param", "rise.num_masks=0", "--out", str(tmp_path / "bad")])
    assert (
        bad.exit_code == 2 and "rise: num_masks must be >= 1 (an integer in [1, 20000]), got 0" in bad.output
    )
    assert "Traceback" not in bad.output and not (tmp_path / "bad" / "manifest.json").exists()
    out = tmp_path / "out"
    opts = ["--param", "occlusion.window=16", "--param", "rise.num_masks=20", "--out", str(out)]
    ok = CliRunner().invoke(app, [*args, *opts])
    assert ok.exit_code == 0, ok.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["methods"]["occlusion"]["params"]["window"] == 16
    assert man["methods"]["rise"]["params"]["num_masks"] == 20
    assert (out / "rise" / "in_a.npy").is_file()
