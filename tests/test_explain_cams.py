"""XGradCAM, Eigen-CAM, Score-CAM and Ablation-CAM (issue 24): hand-computed toy values, parity with
pytorch-grad-cam on the same layer (a small random-init SiLU/ReLU CNN and Lite0 with its bundled weights on a
real bird photo), cross-image batching, facts and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from birdlens.explain import make_explainer
from birdlens.explain.base import InvalidParameterError, method_class, validate_params
from birdlens.explain.hooks import count_hooks

NEW = ["xgradcam", "eigencam", "scorecam", "ablationcam"]


class SmallCNN(nn.Module):
    """conv-SiLU-pool-conv-ReLU-pool-linear, random init: a SiLU network the gradient-free CAMs must serve."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Toy(nn.Module):
    """The CAM layer is the ReLU of the input's first two channels; then mean pool and ``fc`` (weights W)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.pick = nn.Conv2d(3, 2, 1, bias=False)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2, w.shape[0], bias=False)
        with torch.no_grad():
            self.pick.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.fc.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.pick(x)).mean(dim=(2, 3)))


W = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def toy_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 6, 6, generator=g) * 2 - 0.5  # mostly positive: a positive target logit
    return x


def raw(method: str, model: nn.Module, x: torch.Tensor, target: int, **kw) -> np.ndarray:
    e = make_explainer(method, model, layer="act", channels_last=False, fold_bn=False, **kw)
    return e.explain(x, target=target).scores["cam_lowres"][0].double().numpy()


# ---------------------------------------------------------------------------------------- values by hand


def test_xgradcam_by_hand() -> None:
    # logit = sum_k W[t,k] mean(A_k): dlogit/dA_k = W[t,k]/hw, so the weight sum(g*A)/sum(A) is W[t,k]/hw
    x = toy_input()
    a = torch.relu(x[0, :2]).double().numpy()
    hw = a.shape[1] * a.shape[2]
    for t in (0, 1):
        sums = a.sum((1, 2))
        w = np.array([W[t, k].item() / hw * sums[k] / (sums[k] + 1e-7) for k in range(2)])
        np.testing.assert_allclose(raw("xgradcam", Toy(W), x, t), np.tensordot(w, a, 1), rtol=1e-5, atol=1e-7)


def test_eigencam_by_hand() -> None:
    # activations u_k * s(i, j) + c_k: centred, the matrix is rank one with right singular vector u / |u|,
    # so the projection is |u| (s - mean s), its sign chosen so that its largest magnitude is positive
    g = torch.Generator().manual_seed(2)
    s = torch.rand(5, 7, generator=g, dtype=torch.float64)
    s[1, 2] = -3.0  # the largest magnitude is negative in s: the map must come out as -|u| (s - mean s)
    u = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    x = (u.view(3, 1, 1) * s + torch.tensor([2.0, 3.0, 0.0], dtype=torch.float64).view(3, 1, 1))[None].float()
    model = Toy(W)
    ours = raw("eigencam", model, x, 0)
    expect = -(s - s.mean()).numpy()  # |u| = 1
    np.testing.assert_allclose(ours, expect, atol=1e-5)
    assert ours.max() >= -ours.min()
    # class-agnostic: the same map for every target
    np.testing.assert_array_equal(ours, raw("eigencam", model, x, 1))


def test_scorecam_by_hand() -> None:
    # masks m_k = (A_k - min) / (max - min + 1e-8) (the layer is at input size: no upsampling); the image
    # masked by m_k gives the layer ReLU(x_j * m_k) and the logit sum_j W[t,j] mean(ReLU(x_j) m_k)
    x = toy_input()
    a = torch.relu(x[0, :2]).double().numpy()
    for t in (0, 1):
        scores = []
        for k in range(2):
            m = (a[k] - a[k].min()) / (a[k].max() - a[k].min() + 1e-8)
            scores.append(sum(W[t, j].item() * (a[j] * m).mean() for j in range(2)))
        w = np.exp(scores) / np.exp(scores).sum()
        np.testing.assert_allclose(raw("scorecam", Toy(W), x, t), np.tensordot(w, a, 1), rtol=1e-5, atol=1e-7)


def test_ablationcam_by_hand() -> None:
    # the ReLU output has minimum 0, so channel k is set to 0: the logit drops by W[t,k] mean(A_k), and the
    # weight is that drop over the logit
    x = toy_input()
    a = torch.relu(x[0, :2]).double().numpy()
    assert a.min() == 0
    for t in (0, 1):
        y = sum(W[t, k].item() * a[k].mean() for k in range(2))
        w = np.array([W[t, k].item() * a[k].mean() / y for k in range(2)])
        np.testing.assert_allclose(
            raw("ablationcam", Toy(W), x, t, batch_size=1), np.tensordot(w, a, 1), rtol=1e-5, atol=1e-7
        )


def test_ablation_below_the_minimum_where_activations_are_negative() -> None:
    from birdlens.explain.methods.ablationcam import ablated

    acts = torch.tensor([[[[0.0, 1.0]], [[2.0, 3.0]]], [[[-1.0, 1.0]], [[2.0, 3.0]]]])  # [2, 2, 1, 2]
    out = ablated(acts, torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1]), 1)
    assert out[0, 1].tolist() == [[0.0, 0.0]] and out[0, 0].tolist() == [[0.0, 1.0]]
    assert out[1, 0].tolist() == [[-1.0 - 1e7] * 2] and out[2, 1].tolist() == [[-1.0 - 1e7] * 2]
    nhwc = ablated(acts.permute(0, 2, 3, 1), torch.tensor([0]), torch.tensor([1]), 3)
    assert nhwc[0, ..., 1].tolist() == [[0.0, 0.0]] and nhwc[0, ..., 0].tolist() == [[0.0, 1.0]]


# ---------------------------------------------------------------------------------------- pytorch-grad-cam


def _reference(method: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, target: list[int], bs: int):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method == "ablationcam":
        cam = pgc.AblationCAM(model=model, target_layers=[layer], batch_size=bs)
    else:
        cls = {"xgradcam": pgc.XGradCAM, "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM}[method]
        cam = cls(model=model, target_layers=[layer])
        cam.batch_size = bs  # Score-CAM's batch of masked images (its default 16)
    with cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target])


def _check_parity(method: str, model: nn.Module, layer: str, x: torch.Tensor, monkeypatch) -> np.ndarray:
    pytest.importorskip("pytorch_grad_cam")
    if method == "eigencam":  # pytorch-grad-cam's own sign rule (its plain SVD's sign is LAPACK's choice)
        import pytorch_grad_cam.eigen_cam as ec
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

        monkeypatch.setattr(ec, "get_2d_projection", get_2d_projection_with_sign_correction)
    bs = 16
    kw = {"batch_size": bs} if method in ("scorecam", "ablationcam") else {}
    # fold_bn=False: the same model in the same batches of masked inputs as pytorch-grad-cam
    ours = make_explainer(method, model, layer=layer, fold_bn=False, **kw).explain(x)
    ref = _reference(method, model, model.get_submodule(layer), x, ours.target.tolist(), bs)
    assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5
    return ref


@pytest.mark.parametrize("method", NEW)
def test_parity_with_pytorch_grad_cam_on_a_small_cnn(method: str, monkeypatch) -> None:
    _check_parity(method, SmallCNN().eval(), "features.4", images(2), monkeypatch)


def test_eigencam_projection_is_pytorch_grad_cams_up_to_its_sign() -> None:
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, x = SmallCNN().eval(), images(3)
    ours = make_explainer("eigencam", model, layer="features.4").explain(x).scores["cam_lowres"].numpy()
    with torch.no_grad():
        ref = get_2d_projection(model.features(x).numpy())
    for o, r in zip(ours, ref, strict=True):
        assert min(np.abs(o - r).max(), np.abs(o + r).max()) <= 1e-5 * np.abs(r).max()


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    models = pytest.importorskip("birdlens.models")
    try:
        return models.create_model("efficientnet_lite0", pretrained=True).eval()
    except Exception as e:  # the bundled-weights package missing
        pytest.skip(f"Lite0 with bundled weights unavailable: {e}")


@pytest.fixture(scope="module")
def bird(shared_birds) -> torch.Tensor:
    """One real photo at 64 px, normalised for Lite0 (mean = std = 0.5)."""
    from PIL import Image

    f = sorted((shared_birds / "test").glob("*/*.jpg"))[0]
    arr = np.asarray(Image.open(f).convert("RGB").resize((64, 64)), dtype=np.float32) / 255
    return (torch.from_numpy(arr).permute(2, 0, 1)[None] - 0.5) / 0.5


@pytest.mark.parametrize("method", NEW)
def test_parity_with_pytorch_grad_cam_on_lite0(
    lite0: nn.Module, bird: torch.Tensor, method: str, monkeypatch
):
    ref = _check_parity(method, lite0, "bn2", bird, monkeypatch)
    if method in ("scorecam", "ablationcam"):  # by default the forwards run through the BN-folded copy
        ours = make_explainer(method, lite0).explain(bird)
        assert ours.params["fold_bn"] > 0
        assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5


# ---------------------------------------------------------------------------------------- batching, facts


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_batched_across_images_equals_each_image_alone(method: str) -> None:
    model = SmallCNN().eval()
    x = images(3)
    e = make_explainer(method, model, layer="features.4", batch_size=5)  # 16 channels: batches span images
    batch = e.explain(x)
    alone = [e.explain(x[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(batch.maps, torch.cat([a.maps for a in alone]), rtol=0, atol=1e-5)
    assert torch.equal(batch.target, torch.cat([a.target for a in alone]))
    assert batch.params["batch_size"] == 5 and count_hooks(model) == 0


def test_facts_live_on_the_classes() -> None:
    for m in NEW:
        cls = method_class(m)
        assert cls.needs_layer and cls.in_app and not cls.stochastic  # offered by the web app (issue 24)
    assert method_class("scorecam").heavy and method_class("ablationcam").heavy
    assert method_class("scorecam").batched and method_class("ablationcam").batched
    assert not method_class("eigencam").uses_gradients and method_class("xgradcam").uses_gradients
    assert method_class("score-cam") is method_class("scorecam")


def test_a_batch_size_of_zero_is_one_clear_error() -> None:
    for m in ("scorecam", "ablationcam"):
        with pytest.raises(
            InvalidParameterError, match=rf"{m}: batch_size must be >= 1 \(an integer in \[1, 64\]\)"
        ):
            validate_params(m, {"batch_size": 0})
        with pytest.raises(InvalidParameterError, match="batch_size must be >= 1"):
            make_explainer(m, SmallCNN(), batch_size=0)


def test_an_explicit_target_and_no_hooks_left(monkeypatch) -> None:
    model = SmallCNN().eval()
    x = images(2)
    for m in NEW:
        out = (
            make_explainer(m, model, layer="features.4", batch_size=8)
            if m in ("scorecam", "ablationcam")
            else (make_explainer(m, model, layer="features.4"))
        )
        ex = out.explain(x, target=3)
        assert ex.target.tolist() == [3, 3] and ex.maps.shape == (2, 32, 32)
        assert torch.isfinite(ex.maps).all() and 0 <= float(ex.maps.min()) <= float(ex.maps.max()) <= 1
        assert count_hooks(model) == 0


@pytest.mark.parametrize("method", NEW)
def test_parity_with_pytorch_grad_cam_on_vit_tokens(method: str, monkeypatch) -> None:
    """A ViT's ``blocks.11.norm1`` tokens, folded as pytorch-grad-cam's ``reshape_transform`` folds them;
    Ablation-CAM ablates a channel at every token, as its ``AblationLayerVit``."""
    timm = pytest.importorskip("timm")
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.ablation_layer import AblationLayerVit
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    if method == "eigencam":
        import pytorch_grad_cam.eigen_cam as ec
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

        monkeypatch.setattr(ec, "get_2d_projection", get_2d_projection_with_sign_correction)
    kw = {"batch_size": 16} if method in ("scorecam", "ablationcam") else {}
    ours = make_explainer(method, model, channels_last=False, fold_bn=False, **kw).explain(x)
    assert (ours.params["layer"], ours.params["layout"], ours.params["grid"]) == (
        "blocks.11.norm1",
        "tokens",
        [4, 4],
    )

    def fold(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:, :].reshape(t.size(0), 4, 4, t.size(2)).permute(0, 3, 1, 2)

    cls = {"xgradcam": pgc.XGradCAM, "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM,
           "ablationcam": pgc.AblationCAM}[method]  # fmt: skip
    extra = {"ablation_layer": AblationLayerVit(), "batch_size": 16} if method == "ablationcam" else {}
    with cls(model=model, target_layers=[model.blocks[11].norm1], reshape_transform=fold, **extra) as cam:
        cam.batch_size = 16
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in ours.target.tolist()])
    assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5


class ConvBN(nn.Module):
    """conv -> BN -> ReLU -> pool -> linear: folding merges the BN into the conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)))


def test_ablation_at_a_folded_conv_runs_the_model_itself() -> None:
    # the folded copy's conv returns conv + BN: replacing its output by the conv's activations would skip the BN
    model, x = ConvBN().eval(), images(2, 16)
    folded = make_explainer("ablationcam", model, layer="conv", batch_size=4).explain(x)
    plain = make_explainer("ablationcam", model, layer="conv", batch_size=4, fold_bn=False).explain(x)
    assert folded.params["fold_bn"] == 1
    torch.testing.assert_close(folded.maps, plain.maps, rtol=0, atol=1e-6)
    at_bn = make_explainer("ablationcam", model, layer="bn", batch_size=4)  # the BN's output: the copy serves
    net, layer = at_bn._network(at_bn.prepare(x), at_bn.capture(at_bn.prepare(x), None))
    assert net is not model and layer is net.get_submodule("bn")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("method", NEW)
def test_on_cuda_the_maps_are_the_cpus(method: str) -> None:
    import copy

    model, x = SmallCNN().eval(), images(2)
    kw = {"batch_size": 8} if method in ("scorecam", "ablationcam") else {}
    cpu = make_explainer(method, model, layer="features.4", **kw).explain(x)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gpu = make_explainer(method, copy.deepcopy(model).cuda(), layer="features.4", **kw).explain(x)
    assert gpu.maps.device.type == "cpu" and torch.equal(gpu.target, cpu.target)
    torch.testing.assert_close(gpu.maps, cpu.maps, rtol=0, atol=1e-5)
