"""Explainers on tiny models: values computed by hand, batching, seeding, hooks and memory, refusals."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from birdlens.explain import UnsupportedMethodError, list_methods, make_explainer
from birdlens.explain.hooks import count_hooks
from birdlens.explain.imaging import box_blur, resize_maps
from birdlens.explain.methods.lime import cosine_to_ones, sample_design

ALL = [
    "gradcam",
    "gradcam++",
    "layercam",
    "hirescam",
    "ig",
    "lime",
    "shap",
    "random",
    "saliency",
    "smoothgrad",
    "occlusion",
    "rise",
]
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
FAST = {
    "ig": {"steps": 8, **NORM},
    "lime": {"num_samples": 40, "segmentation": "slic", "segmentation_params": {"n_segments": 12}, **NORM},
    "shap": {"max_evals": 40, "blur_kernel": 8},
    "smoothgrad": {"num_samples": 4},
    "occlusion": {"window": 8, "stride": 8},
    "rise": {"num_masks": 16, "grid": 4},
}


class TinyNet(nn.Module):
    """conv-relu-conv-silu-pool-linear: the shape of a CNN classifier in 700 parameters."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.SiLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------- values by hand


class TwoConv(nn.Module):
    """conv1 (1x1, picks channels 0 and 1, ReLU) -> conv2 (1x1 identity) -> mean pool -> linear W."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, w.shape[0], bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.conv2.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.fc.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(a.mean(dim=(2, 3)))


def test_gradcam_by_hand() -> None:
    w = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    model = TwoConv(w)
    x = torch.rand(1, 3, 4, 4)
    exp = make_explainer("gradcam", model, layer="conv2").explain(x, target=0)
    a0, a1 = x[0, 0].numpy(), x[0, 1].numpy()
    # d y0 / d A_k(i, j) = W[0, k] / 16, so alpha_k = W[0, k] / 16 and cam = relu(sum_k alpha_k A_k)
    cam = np.maximum((2.0 * a0 - 1.0 * a1) / 16, 0)
    cam = (cam - cam.min()) / (1e-7 + (cam - cam.min()).max())
    cam = (cam - cam.min()) / (1e-7 + (cam - cam.min()).max())
    np.testing.assert_allclose(exp.maps[0].numpy(), cam, atol=1e-6)
    assert exp.params["layer"] == "conv2" and exp.params["layer_choice"] == "given"
    # HiResCAM on a global-average-pooled linear head is exactly W[c] . A / 16 before the ReLU
    raw = make_explainer("hirescam", model, layer="conv2").explain(x, target=1).scores["cam_lowres"][0]
    np.testing.assert_allclose(raw.numpy(), (0.5 * a0 + 3.0 * x[0, 1].numpy()) / 16, atol=1e-6)


def test_ig_linear_model_is_exact_and_complete() -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    x = images(2, 8)
    exp = make_explainer("ig", lin, steps=5, baseline="mean").explain(x, target=[1, 2])
    # for f(x) = w.x + b and a zero baseline, IG = x * w for any quadrature whose weights sum to 1
    wts = lin[1].weight.detach().view(3, 3, 8, 8)
    expected = torch.stack([(x[0] * wts[1]).sum(0), (x[1] * wts[2]).sum(0)])
    torch.testing.assert_close(exp.maps, expected, atol=1e-5, rtol=1e-5)
    assert float(exp.scores["completeness_error"].max()) < 1e-4


def test_ig_completeness_on_nonlinear_net_and_baselines() -> None:
    model = TinyNet()
    x = images(1)
    for baseline in ("black", "blurred", "mean"):
        exp = make_explainer("ig", model, steps=64, baseline=baseline, **NORM).explain(x)
        gap = float(exp.scores["logit"][0] - exp.scores["baseline_logit"][0])
        assert abs(float(exp.maps.sum()) - gap) == pytest.approx(
            float(exp.scores["completeness_error"][0]), abs=1e-4
        )
        assert float(exp.scores["relative_completeness_error"][0]) < 1e-2


def test_ig_memory_cap_bounds_model_batches() -> None:
    model = TinyNet()
    x = images(2)
    seen: list[int] = []
    h = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        capped = make_explainer("ig", model, steps=10, internal_batch_size=3, **NORM).explain(x)
    finally:
        h.remove()
    assert max(seen[1:]) <= 3  # seen[0]: the endpoint pass (image + baseline)
    uncapped = make_explainer("ig", model, steps=10, internal_batch_size=None, **NORM).explain(x)
    torch.testing.assert_close(capped.maps, uncapped.maps, atol=1e-6, rtol=1e-5)


def _grid_segments(image01: np.ndarray) -> np.ndarray:
    h, w = image01.shape[:2]
    return (np.arange(h)[:, None] // (h // 4)) * 4 + np.arange(w)[None, :] // (w // 4)


def test_lime_recovers_a_linear_model_exactly() -> None:
    # logit 1 is linear in the pixels, so with the mean-colour fill it is exactly linear in the superpixel
    # indicators: z -> c + sum_s z_s * beta_s with beta_s = sum_{p in s} v(p) (x(p) - fill(p)).
    torch.manual_seed(1)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    x = images(1, 16)
    exp = make_explainer(
        "lime", lin, num_samples=200, segmentation=_grid_segments, alpha=1e-9, score="logit", **NORM
    ).explain(x, target=1)
    seg = torch.from_numpy(_grid_segments(np.zeros((16, 16, 3))))
    v = lin[1].weight[1].detach().view(3, 16, 16)
    fill = torch.zeros_like(x[0])
    for s in range(16):
        fill[:, seg == s] = x[0][:, seg == s].mean(1, keepdim=True)
    beta = torch.stack([(v * (x[0] - fill))[:, seg == s].sum() for s in range(16)])
    torch.testing.assert_close(exp.scores["weights"][0], beta.float(), atol=1e-5, rtol=1e-4)
    assert float(exp.scores["r2"][0]) > 0.999999
    torch.testing.assert_close(exp.maps[0], beta.float()[seg], atol=1e-5, rtol=1e-4)


def test_lime_design_matches_lime_sampling_and_cosine_distance() -> None:
    from sklearn.metrics import pairwise_distances

    data = sample_design(7, 50, seed=3)
    expected = np.random.RandomState(3).randint(0, 2, 50 * 7).reshape(50, 7)
    expected[0] = 1
    np.testing.assert_array_equal(data, expected)
    data[5] = 0  # the empty row: cosine distance 1
    d_sk = pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    np.testing.assert_allclose(cosine_to_ones(data), d_sk, atol=1e-12)


def test_shap_additive_model_gives_exact_shapley_values() -> None:
    # For an additive model every Owen value is the feature's own effect v_j (x_j - blur_j); with a budget
    # large enough the recursion reaches every pixel-channel.
    torch.manual_seed(2)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4, 2))
    x = images(1, 4)[:, :, :2, :]
    exp = make_explainer("shap", lin, max_evals=100_000, blur_kernel=3, score="logit").explain(x, target=0)
    v = lin[1].weight[0].detach().view(3, 2, 4)
    expected = (v * (x[0] - box_blur(x[0], 3))).sum(0)
    torch.testing.assert_close(exp.maps[0], expected, atol=1e-5, rtol=1e-4)
    gap = float(exp.scores["full_value"][0] - exp.scores["base_value"][0])
    assert float(exp.maps.sum()) == pytest.approx(gap, abs=1e-5)


def test_shap_efficiency_holds_at_small_budget() -> None:
    exp = make_explainer("shap", TinyNet(), **FAST["shap"]).explain(images(1))
    gap = float(exp.scores["full_value"][0] - exp.scores["base_value"][0])
    assert float(exp.maps.sum()) == pytest.approx(gap, abs=1e-6)
    assert int(exp.scores["evals"][0]) <= 40


def test_box_blur_and_resize_match_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    img = np.random.RandomState(0).rand(20, 24, 3).astype(np.float32)
    for k in (1, 2, 5, 8, 15):
        ours = box_blur(torch.from_numpy(img).permute(2, 0, 1), k).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, cv2.blur(img, (k, k)), atol=1e-6)
    small = np.random.RandomState(1).rand(7, 7).astype(np.float32)
    ours = resize_maps(torch.from_numpy(small)[None], (32, 32))[0].numpy()
    np.testing.assert_allclose(ours, cv2.resize(small, (32, 32)), atol=1e-6)


# ---------------------------------------------------------------------------------------- the API


def test_list_methods_and_refusals() -> None:
    assert set(ALL) <= set(list_methods())
    for name in ("guided_backprop", "deeplift", "guided_gradcam", "deepshap", "lrp"):
        with pytest.raises(UnsupportedMethodError, match="SiLU"):
            make_explainer(name, TinyNet())
    with pytest.raises(UnsupportedMethodError, match="unknown"):
        make_explainer("nope", TinyNet())
    # the alternatives a refusal names are the methods whose class accepts any model, read off the classes
    with pytest.raises(UnsupportedMethodError) as refused:
        make_explainer("deeplift", TinyNet())
    offered = str(refused.value).rsplit("Use one of: ", 1)[1].rstrip(".").split(", ")
    assert "lrp" not in offered and "random" not in offered
    assert {"gradcam", "scorecam", "ig", "lime", "shap"} <= set(offered)
    assert set(offered) == {m for m in list_methods() if m not in ("lrp", "random")}
    # a seed may be passed to every method (deterministic ones ignore it); other unknown options fail loudly
    assert make_explainer("gradcam", TinyNet(), seed=3).explain(images(1)).maps.shape == (1, 32, 32)
    with pytest.raises(TypeError):
        make_explainer("gradcam", TinyNet(), num_samples=3)


@pytest.mark.parametrize("method", ALL)
def test_every_method_shape_target_and_batch_parity(method: str) -> None:
    model = TinyNet()
    explainer = make_explainer(method, model, **FAST.get(method, {}))
    x = images(16)
    batch = explainer.explain(x)
    assert batch.maps.shape == (16, 32, 32) and batch.maps.dtype == torch.float32
    assert torch.isfinite(batch.maps).all()
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert torch.equal(batch.target, pred)
    assert batch.method == method and batch.seconds > 0
    assert batch.scores["logit"].shape == (16,)
    for i in (0, 7, 15):
        one = explainer.explain(x[i : i + 1])
        torch.testing.assert_close(one.maps[0], batch.maps[i], atol=1e-5, rtol=1e-4)
        assert int(one.target[0]) == int(batch.target[i])
    # an explicit target is honoured
    forced = explainer.explain(x[:2], target=3)
    assert forced.target.tolist() == [3, 3]


@pytest.mark.parametrize("method", ["lime", "shap", "random", "rise", "smoothgrad"])
def test_same_seed_same_maps_other_seed_differs(method: str) -> None:
    model = TinyNet()
    x = images(2)
    a = make_explainer(method, model, seed=5, **FAST.get(method, {})).explain(x)
    b = make_explainer(method, model, seed=5, **FAST.get(method, {})).explain(x)
    assert torch.equal(a.maps, b.maps)
    assert a.params["seed"] == 5
    if method != "shap":  # shap's seed only breaks exact ties in the priority queue
        c = make_explainer(method, model, seed=6, **FAST.get(method, {})).explain(x)
        assert not torch.equal(a.maps, c.maps)


def test_output_selector_for_tuple_and_dict_models() -> None:
    base = TinyNet()

    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = base

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.mean(), self.net(x)

    class DictOut(TupleOut):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
            return {"aux": x.mean(), "logits": self.net(x)}

    x = images(2)
    ref = make_explainer("gradcam", base).explain(x)
    t = make_explainer("gradcam", TupleOut(), output=1).explain(x)
    d = make_explainer("gradcam", DictOut()).explain(x)  # "logits" key found by default
    c = make_explainer("gradcam", DictOut(), output=lambda o: o["logits"]).explain(x)
    for e in (t, d, c):
        torch.testing.assert_close(e.maps, ref.maps)
    assert t.params["layer"] == "net.features" and ref.params["layer"] == "features"
    with pytest.raises(ValueError, match="output="):
        make_explainer("gradcam", TupleOut(), output=0).explain(x)


def test_layer_trace_override_and_record() -> None:
    model = TinyNet()
    auto = make_explainer("gradcam", model).explain(images(1))
    assert auto.params["layer"] == "features" and auto.params["layer_choice"] == "trace"
    given = make_explainer("gradcam", model, layer=model.features[0]).explain(images(1))
    assert given.params["layer"] == "features.0"
    by_path = make_explainer("gradcam", model, layer="features.0").explain(images(1))
    torch.testing.assert_close(given.maps, by_path.maps)


def test_registry_layer_used_when_model_name_known() -> None:
    models = pytest.importorskip("birdlens.models")
    if not hasattr(models, "get_model_info") or not hasattr(models, "create_model"):
        pytest.skip("birdlens.models registry not available yet")
    info = models.get_model_info("tf_efficientnet_lite0")
    model = models.create_model("tf_efficientnet_lite0", num_classes=3, pretrained=False)
    exp = make_explainer("gradcam", model, model_name="tf_efficientnet_lite0").explain(
        torch.randn(1, 3, 64, 64)
    )
    assert exp.params["layer"] == info.cam_layer and exp.params["layer_choice"] == "registry"


def test_lime_bf16_mode_runs_and_agrees() -> None:
    model = TinyNet()
    x = images(1)
    a = make_explainer("lime", model, **FAST["lime"]).explain(x)
    b = make_explainer("lime", model, precision="bf16", **FAST["lime"]).explain(x)
    assert b.params["precision"] == "bf16"
    corr = np.corrcoef(a.scores["weights"][0].numpy(), b.scores["weights"][0].numpy())[0, 1]
    assert corr > 0.9


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() pokes deprecated torch.distributed aliases
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_thousand_calls_leak_no_hooks_and_no_memory() -> None:
    model = TinyNet()
    flags = [p.requires_grad for p in model.parameters()]
    explainer = make_explainer("gradcam", model)
    x = images(2, 16)
    for _ in range(20):
        explainer.explain(x)
    gc.collect()
    tensors0, rss0 = _live_tensors(), _rss_bytes()
    for i in range(1000):
        exp = explainer.explain(x)
        if i == 500:  # an exception inside a call must not leave the hook behind either
            with pytest.raises(ValueError):
                explainer.explain(x, target=[0, 1, 2])
    del exp
    gc.collect()
    assert count_hooks(model) == 0
    assert [p.requires_grad for p in model.parameters()] == flags
    assert _live_tensors() <= tensors0
    assert _rss_bytes() - rss0 < 8 * 2**20
