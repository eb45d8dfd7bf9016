"""Classic augmentation: Keras ImageDataGenerator semantics (distributions, directions) and the presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage, stats
from torchvision import tv_tensors

from birdlens.augment import (
    PRESETS,
    KerasRandomAffine,
    apply_keras_affine,
    augment_examples,
    keras_paper_affine,
    make_train_transform,
    mixup_cutmix,
)
from birdlens.models import DataConfig

H, W = 120, 160  # non-square, so row/column mix-ups show


def _draws(n: int = 10_000) -> dict[str, np.ndarray]:
    t = keras_paper_affine()
    p = t.sample_params(H, W, n=n, generator=torch.Generator().manual_seed(0))
    return {k: v.numpy() for k, v in p.items()}


def test_keras_paper_parameter_ranges_and_uniformity() -> None:
    p = _draws()
    # value ranges straight from ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2, zoom_range=0.2)
    expected = {
        "theta": (-40, 40),
        "tx": (-0.2 * H, 0.2 * H),
        "ty": (-0.2 * W, 0.2 * W),
        "zx": (0.8, 1.2),
        "zy": (0.8, 1.2),
    }
    for name, (lo, hi) in expected.items():
        v = p[name]
        assert v.min() >= lo and v.max() <= hi, name
        assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo), (
            f"{name} does not fill its range"
        )
        ks = stats.kstest(v, stats.uniform(loc=lo, scale=hi - lo).cdf)
        assert ks.pvalue > 1e-3, (name, ks)
    # zoom factors are independent draws (Keras: np.random.uniform(lo, hi, 2)), not one isotropic factor
    assert not np.allclose(p["zx"], p["zy"])
    r, pval = stats.pearsonr(p["zx"], p["zy"])
    assert abs(r) < 0.04 and pval > 1e-3
    counts, _, _ = np.histogram2d(p["zx"], p["zy"], bins=5, range=[[0.8, 1.2], [0.8, 1.2]])
    assert stats.chi2_contingency(counts).pvalue > 1e-3
    # flip is a fair coin
    assert stats.binomtest(int(p["flip"].sum()), len(p["flip"]), 0.5).pvalue > 1e-3


def test_transform_uses_sampled_parameters_of_the_input_size() -> None:
    t = KerasRandomAffine(
        rotation_range=0, width_shift_range=0.0, height_shift_range=0.0, zoom_range=0.0, horizontal_flip=False
    )
    img = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    assert torch.equal(t(img), img)  # identity parameters leave the image untouched
    params = keras_paper_affine().make_params([tv_tensors.Image(img)])
    assert set(params) == {"theta", "tx", "ty", "zx", "zy", "flip"}
    with pytest.raises(ValueError, match="zoom_range"):
        KerasRandomAffine(zoom_range=(1.2, 0.8))


def _dot(row: float, col: float, sigma: float = 4.0) -> torch.Tensor:
    """A smooth blob: its centroid survives bilinear resampling (a hard 3-px dot would alias)."""
    rows, cols = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    return torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2)).unsqueeze(0)


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    m = img[0].double()
    rows, cols = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    return float((m * rows).sum() / m.sum()), float((m * cols).sum() / m.sum())


def test_directions_shift_zoom_rotation_flip() -> None:
    cy, cx = (H - 1) / 2, (W - 1) / 2  # 59.5, 79.5
    # tx (from height_shift_range) > 0 moves content up; ty (width) > 0 moves content left
    assert _centroid(apply_keras_affine(_dot(60, 80), tx=10)) == pytest.approx((50, 80), abs=1e-6)
    assert _centroid(apply_keras_affine(_dot(60, 80), ty=12)) == pytest.approx((60, 68), abs=1e-6)
    # zoom > 1 zooms out: distances to the centre shrink by 1/z, independently per axis
    r, c = _centroid(apply_keras_affine(_dot(100, 140), zx=2.0, zy=1.0))
    assert (r - cy, c - cx) == pytest.approx(((100 - cy) / 2, 140 - cx), abs=0.05)
    r, c = _centroid(apply_keras_affine(_dot(100, 140), zx=1.0, zy=1.25))
    assert (r - cy, c - cx) == pytest.approx((100 - cy, (140 - cx) / 1.25), abs=0.05)
    # positive theta turns content clockwise on screen: a point right of the centre goes below it
    r, c = _centroid(apply_keras_affine(_dot(60, 110), theta=90))
    assert (r - cy, c - cx) == pytest.approx((110 - cx, -(60 - cy)), abs=0.05)  # (dr, dc) -> (dc, -dr)
    # flip mirrors columns (after the warp)
    r0, c0 = _centroid(_dot(60, 20))
    assert _centroid(apply_keras_affine(_dot(60, 20), flip=True)) == pytest.approx((r0, W - 1 - c0), abs=1e-6)


def test_fill_is_edge_replicate() -> None:
    img = torch.zeros(1, H, W, dtype=torch.float64)
    img[0, :, 0] = 1.0  # bright left edge column
    out = apply_keras_affine(img, ty=-30)  # content moves 30 px right; the uncovered strip repeats column 0
    assert torch.all(out[0, :, :31] == 1.0) and torch.all(out[0, :, 31:] == 0.0)


def _scipy_keras(img: np.ndarray, theta: float, tx: float, ty: float, zx: float, zy: float) -> np.ndarray:
    """keras-preprocessing's apply_affine_transform (scipy path, (row, col) matrices, true-centre offset)."""
    a = np.deg2rad(theta)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    m = rot @ shift @ zoom
    oy, ox = (img.shape[1] - 1) / 2, (img.shape[2] - 1) / 2
    m = np.array([[1, 0, oy], [0, 1, ox], [0, 0, 1]]) @ m @ np.array([[1, 0, -oy], [0, 1, -ox], [0, 0, 1]])
    return np.stack(
        [ndimage.affine_transform(ch, m[:2, :2], m[:2, 2], order=1, mode="nearest") for ch in img]
    )


def test_warp_matches_keras_scipy_reference() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((3, H, W)).astype(np.float64)
    img = ndimage.gaussian_filter(img, (0, 2, 2))  # smooth, so bilinear sampling differences stay tiny
    t = keras_paper_affine()
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        p = {k: float(v) for k, v in t.sample_params(H, W, generator=g).items() if k != "flip"}
        ours = apply_keras_affine(torch.from_numpy(img), **p).numpy()
        ref = _scipy_keras(img, **p)
        assert np.abs(ours - ref).max() < 1e-6, p


def test_keras_transform_on_uint8_pil_and_masks() -> None:
    t = keras_paper_affine()
    img = tv_tensors.Image(torch.randint(0, 256, (3, H, W), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 4, (H, W), dtype=torch.uint8))
    out_img, out_mask = t(img, mask)
    assert (
        out_img.dtype == torch.uint8 and out_img.shape == img.shape and isinstance(out_img, tv_tensors.Image)
    )
    assert set(out_mask.unique().tolist()) <= {0, 1, 2, 3}  # nearest: no blended labels
    pil = Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8))
    assert t(pil).size == (W, H)


CFG = DataConfig(
    input_size=96, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875
)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_give_normalised_tensors_at_input_size(preset: str) -> None:
    img = torch.randint(0, 256, (3, 130, 150), dtype=torch.uint8)
    torch.manual_seed(0)
    for inp in (img, tv_tensors.Image(img), Image.fromarray(img.permute(1, 2, 0).numpy())):
        out = make_train_transform(preset, CFG)(inp)
        assert out.shape == (3, 96, 96) and out.dtype == torch.float32
        assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6  # (x - 0.5) / 0.5 of [0, 1]
    assert make_train_transform(preset, CFG, image_size=64)(img).shape == (3, 64, 64)


def test_none_preset_is_the_eval_transform_and_unknown_names_fail() -> None:
    from birdlens.models import eval_transform

    img = torch.randint(0, 256, (3, 130, 150), dtype=torch.uint8)
    assert torch.equal(make_train_transform("none", CFG)(img), eval_transform(CFG)(img))
    with pytest.raises(ValueError, match="keras-paper"):
        make_train_transform("heavy", CFG)


def test_mixup_cutmix_switches() -> None:
    assert mixup_cutmix(5) is None
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for kwargs in ({"mixup": 0.2}, {"cutmix": 1.0}, {"mixup": 0.2, "cutmix": 1.0}):
        t = mixup_cutmix(5, **kwargs)
        assert t is not None
        xo, yo = t(x, y)
        assert xo.shape == x.shape and yo.shape == (4, 5)
        assert torch.allclose(yo.sum(1), torch.ones(4))


def test_augment_examples_are_seeded_and_leave_global_rng_alone() -> None:
    from skimage import data

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = augment_examples(data.chelsea(), "keras-paper", n=4, data_config=CFG)
    assert torch.equal(state, torch.get_rng_state())
    b = augment_examples(data.chelsea(), "keras-paper", n=4, data_config=CFG)
    assert a.shape == (4, 3, 96, 96) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_augment_examples_figure_writes_a_png(tmp_path) -> None:
    from birdlens.augment import augment_examples_figure

    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(path)
    out = augment_examples_figure(
        [path], ["keras-paper", "light"], tmp_path / "fig" / "examples.png", n=3, image_size=64
    )
    with Image.open(out) as fig:
        assert fig.format == "PNG" and fig.width > fig.height > 0
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        augment_examples_figure([path], ["nope"], tmp_path / "x.png")
