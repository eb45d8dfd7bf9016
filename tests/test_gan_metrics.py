"""FD and KID in feature space: exact formula, zero on identical sets, growth with noise, KID unbiasedness."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from birdlens.augment.gan.metrics import (
    distance_report,
    frechet_distance,
    kernel_distance,
    mmd2_unbiased,
    precision_recall_density_coverage,
)


def _fd_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu = a.mean(0) - b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(mu @ mu + np.trace(s1 + s2 - 2 * covmean))


def test_fd_matches_the_matrix_square_root_formula() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(loc=0.5, size=(250, 8)) @ rng.normal(size=(8, 8))
    assert frechet_distance(a, b) == pytest.approx(_fd_scipy(a, b), rel=1e-6)


def test_fd_of_a_set_with_itself_is_zero_and_grows_with_noise() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 32))  # fewer samples than a real 1280-d space, but singular-ish enough
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    fds = [frechet_distance(a, a + s * rng.normal(size=a.shape)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in itertools.pairwise(fds))
    # singular covariances (n < d, as per class) still give a finite, non-negative value
    small = rng.normal(size=(10, 64))
    assert frechet_distance(small, small) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(small, small + 1.0) == pytest.approx(64.0, rel=1e-6)  # pure mean shift


def test_kid_is_unbiased_where_the_biased_estimate_is_not() -> None:
    rng = np.random.default_rng(2)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = rng.normal(size=(20, 16)), rng.normal(size=(20, 16))
        unbiased.append(mmd2_unbiased(x, y))
        k = lambda p, q: (p @ q.T / p.shape[1] + 1) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    u, se = np.mean(unbiased), np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(u) < 3 * se  # same distribution: expectation zero
    assert np.mean(biased) > 10 * se and min(biased) > 0  # the V-statistic is always positive
    shifted = kernel_distance(rng.normal(size=(100, 16)), rng.normal(loc=0.5, size=(100, 16)), 50, 20)[0]
    assert shifted > 10 * se


def test_kid_subset_is_capped_by_the_sample_sizes() -> None:
    rng = np.random.default_rng(3)
    _mean, _std, m = kernel_distance(
        rng.normal(size=(30, 4)), rng.normal(size=(80, 4)), subset_size=100, n_subsets=5
    )
    assert m == 30
    with pytest.raises(ValueError):
        kernel_distance(rng.normal(size=(1, 4)), rng.normal(size=(5, 4)))


def test_distance_report_names_the_feature_space_and_states_sample_sizes() -> None:
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(40, 6)), rng.normal(size=(60, 6))
    rep = distance_report(
        real, np.arange(40) % 2, fake, np.arange(60) % 2, ["A", "B"], kid_subsets=5
    ).to_dict()
    assert {"FD-lite0", "KID-lite0", "KID-lite0_std", "n_real", "n_fake", "kid_subset_size"} <= set(rep)
    assert rep["n_real"] == 40 and rep["n_fake"] == 60 and rep["kid_subset_size"] == 40
    assert rep["per_class"]["A"]["n_real"] == 20 and rep["per_class"]["B"]["n_fake"] == 30
    assert rep["per_class"]["A"]["kid_subset_size"] == 20
    assert "not comparable" in rep["note"]
    # the k-NN metrics overall and per class (20 and 30 images > k = 5), named after the feature space
    assert {"precision-lite0", "recall-lite0", "density-lite0", "coverage-lite0"} <= set(rep) and rep[
        "prdc_k"
    ] == 5
    assert 0.0 <= rep["per_class"]["B"]["coverage-lite0"] <= 1.0
    tiny = distance_report(
        real[:8], np.arange(8) % 2, fake[:8], np.arange(8) % 2, ["A", "B"], kid_subsets=2
    ).to_dict()
    assert "coverage-lite0" in tiny and "coverage-lite0" not in tiny["per_class"]["A"]  # 4 per class: not > k


def test_precision_recall_density_coverage_by_hand() -> None:
    """1-D toy, k = 1. Real 0, 1, 2, 3 (k-NN radius 1 each); fakes 0.5, 2.9, 10 (radii 2.4, 2.4, 7.1)."""
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [2.9], [10.0]])
    m = precision_recall_density_coverage(real, fake, k=1)
    assert m["precision"] == pytest.approx(2 / 3)  # 10 is in no real ball
    assert m["recall"] == pytest.approx(1.0)  # every real lies in some fake's ball (3 only in 2.9's and 10's)
    assert m["density"] == pytest.approx(
        (2 + 2 + 0) / 3
    )  # 0.5 in the balls of 0 and 1, 2.9 in those of 2 and 3
    assert m["coverage"] == pytest.approx(1.0)  # each real has a fake within 1
    # collapse: three copies of one image. It sits in real 0's ball, so its fidelity is perfect, and covers 1 of 4
    collapsed = precision_recall_density_coverage(real, np.zeros((3, 1)), k=1)
    assert (collapsed["precision"], collapsed["recall"], collapsed["coverage"]) == (1.0, 0.0, 0.25)
    with pytest.raises(ValueError, match="more than 5"):
        precision_recall_density_coverage(real, fake, k=5)


def test_precision_recall_density_coverage_match_the_authors_prdc_package() -> None:
    from prdc import compute_prdc

    rng = np.random.default_rng(7)
    real = rng.normal(size=(120, 16)).astype(np.float32)
    for fake in (rng.normal(0.3, 1.2, size=(90, 16)).astype(np.float32), real[:60] + 0.05):
        ours, theirs = (
            precision_recall_density_coverage(real, fake, k=5),
            compute_prdc(real, fake, nearest_k=5),
        )
        for name in ("precision", "recall", "density", "coverage"):
            assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-12), name


def test_lite0_features_are_pooled_1280d() -> None:
    from birdlens.augment.gan.features import Lite0Features

    f = Lite0Features(batch_size=2)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    out = f(x)
    assert out.shape == (3, 1280)
    assert torch.allclose(out, f(x))
    assert not torch.allclose(out[0], out[1])


def test_standard_fid_needs_the_users_inception_weights(tmp_path) -> None:
    from birdlens.augment.gan.inception import inception_fid

    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(FileNotFoundError, match="Inception weights"):
        inception_fid(x, x, tmp_path / "missing.pth")
