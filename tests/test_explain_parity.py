"""Parity with the reference libraries (test-only dependencies): pytorch-grad-cam, captum, lime, shap.

On ``tf_efficientnet_lite0`` with its bundled ImageNet weights and a real bird photo, and on a small VGG
(ReLU(inplace) convs, max-pools, a dense head). Budgets are kept small; the algorithms do not change with them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from birdlens.explain import make_explainer
from birdlens.explain.methods.lime import lime_kernel, sample_design, weighted_ridge

pytest.importorskip("pytorch_grad_cam")


class SmallVGG(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 16 * 16, 32), nn.ReLU(inplace=True), nn.Linear(32, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    models = pytest.importorskip("birdlens.models")
    try:
        return models.create_model("efficientnet_lite0", pretrained=True).eval()
    except Exception as e:  # the bundled-weights package missing
        pytest.skip(f"Lite0 with bundled weights unavailable: {e}")


@pytest.fixture(scope="module")
def bird(shared_birds) -> torch.Tensor:
    """Two real photos, normalised for Lite0 (mean = std = 0.5)."""
    from PIL import Image

    files = sorted((shared_birds / "test").glob("*/*.jpg"))[:2]
    arr = [np.asarray(Image.open(f).convert("RGB").resize((224, 224)), dtype=np.float32) / 255 for f in files]
    return (torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2) - 0.5) / 0.5


def vgg_images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    return torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear") * 2 - 1


def _grad_cam_reference(
    cls_name: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, target: list[int]
):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
           "hirescam": pgc.HiResCAM}[cls_name]  # fmt: skip
    with cls(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target])


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "hirescam"])
def test_cams_equal_pytorch_grad_cam_on_small_vgg(method: str) -> None:
    model = SmallVGG().eval()
    x = vgg_images()
    ours = make_explainer(method, model, layer="features.6").explain(x)
    ref = _grad_cam_reference(method, model, model.features[6], x, ours.target.tolist())
    assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cams_equal_pytorch_grad_cam_on_lite0(lite0: nn.Module, bird: torch.Tensor, method: str) -> None:
    ours = make_explainer(method, lite0).explain(bird)
    assert ours.params["layer"] == "bn2" and ours.params["layer_choice"] == "registry"
    ref = _grad_cam_reference(method, lite0, lite0.bn2, bird, ours.target.tolist())
    assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5


@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_trapezoid"])
def test_ig_equals_captum(quadrature: str) -> None:
    from captum.attr import IntegratedGradients

    model = SmallVGG().eval()
    x = vgg_images()
    ours = make_explainer(
        "ig",
        model,
        steps=12,
        quadrature=quadrature,
        baseline="black",
        internal_batch_size=5,
        mean=[0.5] * 3,
        std=[0.5] * 3,
    ).explain(x)
    ref, delta = IntegratedGradients(model).attribute(
        x,
        baselines=torch.full_like(x, -1.0),
        target=ours.target,
        n_steps=12,
        method=quadrature,
        return_convergence_delta=True,
    )
    torch.testing.assert_close(ours.scores["attributions"], ref.detach(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(ours.maps, ref.detach().sum(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.scores["completeness_error"], delta.abs().float(), atol=1e-5, rtol=1e-3)


def _lime_reference(model: nn.Module, x: torch.Tensor, segments: np.ndarray, target: int, n: int, seed: int):
    """lime's own pipeline: mean-colour fill, ``data_labels`` (its sampling and image building), then
    ``LimeBase.explain_instance_with_data`` with sklearn cosine distances."""
    from lime.lime_image import LimeImageExplainer
    from sklearn.metrics import pairwise_distances

    image = x[0].permute(1, 2, 0).numpy().copy()

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).permute(0, 3, 1, 2)).softmax(1).numpy()

    explainer = LimeImageExplainer(kernel_width=0.25, random_state=seed)
    fudged = image.copy()
    for s in np.unique(segments):  # lime_image.explain_instance's mean-colour fill, verbatim
        fudged[segments == s] = (
            np.mean(image[segments == s][:, 0]), np.mean(image[segments == s][:, 1]),
            np.mean(image[segments == s][:, 2]),
        )  # fmt: skip
    data, labels = explainer.data_labels(image, fudged, segments, classifier_fn, n, batch_size=10)
    distances = pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    _, local_exp, _, _ = explainer.base.explain_instance_with_data(data, labels, distances, target, 100000)
    coef = np.zeros(data.shape[1])
    for feature, weight in local_exp:
        coef[feature] = weight
    return data, labels, distances, coef, explainer.base.kernel_fn


def _check_lime(model: nn.Module, x: torch.Tensor, n: int, **params) -> None:
    seed = 7
    ours = make_explainer("lime", model, num_samples=n, seed=seed, sampler="uniform", **params).explain(x)
    segments = ours.scores["segments"][0].numpy()
    t = int(ours.target[0])
    data, labels, distances, coef, kernel_fn = _lime_reference(model, x, segments, t, n, seed)
    # same perturbation matrix as lime's seeded sampler
    np.testing.assert_array_equal(data, sample_design(segments.max() + 1, n, seed))
    # the surrogate: same data, labels and distances -> same coefficients within 1e-6
    np.testing.assert_allclose(lime_kernel(distances), kernel_fn(distances), rtol=1e-12)
    mine, _, _, _ = weighted_ridge(data, labels[:, t], lime_kernel(distances), alpha=1.0)
    assert np.abs(mine - coef).max() <= 1e-6
    # end to end (our images, batches and model calls): equal up to float32 model rounding
    np.testing.assert_allclose(ours.scores["weights"][0].numpy(), coef, atol=2e-5, rtol=1e-3)


def test_lime_equals_lime_on_small_vgg() -> None:
    _check_lime(SmallVGG().eval(), vgg_images()[:1], 120, segmentation="slic",
                segmentation_params={"n_segments": 20}, mean=[0.5] * 3, std=[0.5] * 3)  # fmt: skip


def test_lime_equals_lime_on_lite0(lite0: nn.Module, bird: torch.Tensor) -> None:
    _check_lime(lite0, bird[:1], 32)  # quickshift with lime's default parameters


def _shap_reference(model: nn.Module, x: torch.Tensor, target: int, max_evals: int, k: int, seed: int):
    shap = pytest.importorskip("shap")
    image = x[0].permute(1, 2, 0).numpy().copy()

    def f(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)).softmax(1).numpy()

    masker = shap.maskers.Image(f"blur({k},{k})", image.shape)
    explainer = shap.Explainer(f, masker)
    np.random.seed(seed)  # shap breaks priority ties with numpy's global RandomState
    sv = explainer(image[None], max_evals=max_evals, batch_size=10, outputs=[target], silent=True)
    return sv.values[0, ..., 0].sum(-1), sv.base_values[0]


def _check_shap(model: nn.Module, x: torch.Tensor, max_evals: int, k: int) -> None:
    ours = make_explainer("shap", model, max_evals=max_evals, blur_kernel=k, seed=3).explain(x)
    ref, base = _shap_reference(model, x, int(ours.target[0]), max_evals, k, seed=3)
    diff = np.abs(ours.maps[0].numpy() - ref)
    assert diff.max() <= 1e-4
    # the values are small per pixel, so also hold them to 1e-4 of their own scale and compare the shapes
    assert diff.max() <= 1e-4 * np.abs(ref).max()
    assert np.corrcoef(ours.maps[0].numpy().ravel(), ref.ravel())[0, 1] >= 0.999999
    assert float(ours.scores["base_value"][0]) == pytest.approx(float(base[0]), abs=1e-6)


def test_shap_equals_shap_on_small_vgg() -> None:
    _check_shap(SmallVGG().eval(), vgg_images()[:1], max_evals=80, k=16)


def test_shap_equals_shap_on_lite0(lite0: nn.Module, bird: torch.Tensor) -> None:
    _check_shap(lite0, bird[:1], max_evals=62, k=128)
