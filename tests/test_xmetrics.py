"""Explanation-quality metrics: hand-computed values on toy models and synthetic masks (fast, 1 thread)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from birdlens.explain.metrics import (
    FAIL_THRESHOLD,
    auc,
    available_metrics,
    baseline_maps,
    bootstrap_ci,
    cascading_randomisation,
    centre_maps,
    energy_share,
    gaussian_blur,
    get_metric,
    metric_info,
    paired_difference,
    part_masses,
    perturbation_curves,
    pointing_game,
    random_maps,
    randomisation_stages,
    rank_methods,
    sanity_verdict,
    seed_stability,
    summarise,
    topk_jaccard,
    true_part_importance,
)
from birdlens.explain.metrics.ranking import pixel_order, spearman


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class RegionSum(nn.Module):
    """Toy classifier with a known output: logit_c = sum of channel 0 over the region of class c."""

    def __init__(self, regions: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("regions", regions.float())
        self.dummy = nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bhw,chw->bc", x[:, 0], self.regions) + 0 * self.dummy


def halves(h: int = 4, w: int = 4) -> torch.Tensor:
    left = torch.zeros(h, w)
    left[:, : w // 2] = 1
    return torch.stack([left, 1 - left])


def ones_image(b: int = 1, h: int = 4, w: int = 4) -> torch.Tensor:
    x = torch.zeros(b, 3, h, w)
    x[:, 0] = 1
    return x


def left_first_map(b: int = 1, h: int = 4, w: int = 4) -> torch.Tensor:
    m = torch.zeros(b, h, w)
    m[:, :, : w // 2] = 1
    return m


# ------------------------------------------------------------------------------- deletion / insertion
def test_deletion_curve_and_auc_hand_computed():
    model = RegionSum(halves())
    res = perturbation_curves(
        model,
        ones_image(),
        left_first_map(),
        torch.tensor([0]),
        n_steps=4,
        modes=("deletion",),
        deletion_substrate="zero",
    )["deletion"]
    # 4 px per step, left half (class 0's evidence) first: logits (l0, l1) = (8,8),(4,8),(0,8),(0,4),(0,0)
    expected = [sig(0), sig(-4), sig(-8), sig(-4), sig(0)]
    np.testing.assert_allclose(res.probs[0], expected, atol=1e-6)
    np.testing.assert_allclose(res.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    exp_auc = (sum(expected) - expected[0] / 2 - expected[-1] / 2) / 4
    assert res.auc[0] == pytest.approx(exp_auc, abs=1e-6)


def test_insertion_curve_hand_computed_and_uneven_steps():
    model = RegionSum(halves())
    res = perturbation_curves(
        model,
        ones_image(),
        left_first_map(),
        torch.tensor([0]),
        n_steps=4,
        modes=("insertion",),
        insertion_substrate="zero",
    )["insertion"]
    np.testing.assert_allclose(res.probs[0], [sig(0), sig(4), sig(8), sig(4), sig(0)], atol=1e-6)
    # 3 steps over 16 px -> 6 px per step: removed 0, 6, 12, 16 -> logits (8,8),(2,8),(0,4),(0,0)
    d = perturbation_curves(
        model, ones_image(), left_first_map(), torch.tensor([0]), n_steps=3, modes=("deletion",)
    )["deletion"]
    np.testing.assert_allclose(d.probs[0], [sig(0), sig(-6), sig(-4), sig(0)], atol=1e-6)
    np.testing.assert_allclose(d.fractions, [0, 6 / 16, 12 / 16, 1.0])


def test_explaining_the_other_class_and_a_good_vs_bad_map():
    model = RegionSum(halves())
    good, bad = left_first_map(), 1 - left_first_map()
    t = torch.tensor([0])
    g = perturbation_curves(model, ones_image(), good, t, n_steps=4, insertion_substrate="zero")
    b = perturbation_curves(model, ones_image(), bad, t, n_steps=4, insertion_substrate="zero")
    assert g["deletion"].auc[0] < b["deletion"].auc[0]
    assert g["insertion"].auc[0] > b["insertion"].auc[0]
    # the bad map for class 0 is the good map for class 1 (symmetric toy)
    o = perturbation_curves(
        model, ones_image(), bad, torch.tensor([1]), n_steps=4, insertion_substrate="zero"
    )
    np.testing.assert_allclose(o["deletion"].probs, g["deletion"].probs, atol=1e-6)


def test_auc_formula_and_ties_keep_raster_order():
    np.testing.assert_allclose(auc(np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])), [1.0, 0.5])
    order = pixel_order(torch.zeros(1, 2, 3))
    assert order[0].tolist() == [0, 1, 2, 3, 4, 5]
    order = pixel_order(torch.tensor([[[0.0, 2.0, 2.0], [1.0, 2.0, float("nan")]]]))
    assert order[0].tolist() == [1, 2, 4, 3, 0, 5]


def test_gaussian_blur_keeps_constants_and_smooths():
    x = torch.full((1, 3, 20, 20), 0.7)
    torch.testing.assert_close(gaussian_blur(x), x)
    y = torch.zeros(1, 1, 21, 21)
    y[0, 0, 10, 10] = 1.0
    b = gaussian_blur(y)
    assert b.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert b.max().item() < 0.02


class TinyCNN(nn.Module):
    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def _naive_curves(model, images, maps, targets, n_steps, substrate, mode):
    """Reference: one image and one step at a time, pixels set by index."""
    b, c, h, w = images.shape
    step = math.ceil(h * w / n_steps)
    out = np.zeros((b, n_steps + 1))
    with torch.no_grad():
        for i in range(b):
            order = torch.sort(maps[i].flatten(), descending=True, stable=True).indices
            for k in range(n_steps + 1):
                idx = order[: min(k * step, h * w)]
                if mode == "deletion":
                    x = images[i].clone().flatten(1)
                    x[:, idx] = substrate[i].flatten(1)[:, idx]
                else:
                    x = substrate[i].clone().flatten(1)
                    x[:, idx] = images[i].flatten(1)[:, idx]
                p = model(x.view(1, c, h, w)).softmax(-1)[0, targets[i]]
                out[i, k] = p.item()
    return out


def test_batched_curves_match_a_naive_loop():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    imgs, maps = torch.randn(3, 3, 12, 12), torch.rand(3, 12, 12)
    t = torch.tensor([0, 2, 1])
    res = perturbation_curves(model, imgs, maps, t, n_steps=10, batch_size=7)
    ref_del = _naive_curves(model, imgs, maps, t, 10, torch.zeros_like(imgs), "deletion")
    ref_ins = _naive_curves(model, imgs, maps, t, 10, gaussian_blur(imgs), "insertion")
    np.testing.assert_allclose(res["deletion"].probs, ref_del, atol=1e-5)
    np.testing.assert_allclose(res["insertion"].probs, ref_ins, atol=1e-5)
    assert model.features[0].weight.is_contiguous()  # the caller's model is left in its own memory format


# ------------------------------------------------------------------------------------- localisation
def test_pointing_game_exact():
    maps = torch.zeros(3, 4, 4)
    regions = torch.zeros(3, 4, 4, dtype=torch.bool)
    regions[:, :2, :2] = True  # top-left quarter
    maps[0, 1, 1] = 5.0  # inside
    maps[1, 3, 3] = 5.0  # outside
    maps[2, 0, 0] = maps[2, 3, 3] = 5.0  # tie: one in, one out -> 0.5
    np.testing.assert_allclose(pointing_game(maps, regions).numpy(), [1.0, 0.0, 0.5])
    # a constant map scores the object's area share; the tolerance dilates the region
    assert pointing_game(torch.ones(1, 4, 4), regions[:1]).item() == pytest.approx(4 / 16)
    m = torch.zeros(1, 4, 4)
    m[0, 2, 2] = 1.0
    assert pointing_game(m, regions[:1]).item() == 0.0
    assert pointing_game(m, regions[:1], tolerance=1).item() == 1.0


def test_energy_share_exact():
    regions = torch.zeros(2, 4, 4, dtype=torch.bool)
    regions[:, :, :2] = True
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 2, 3], maps[0, 3, 3] = 2.0, 4.0, 2.0, -10.0  # 6 in, 2 out
    np.testing.assert_allclose(energy_share(maps, regions).numpy(), [0.75, 0.5])  # zero map -> area
    m = get_metric("energy_inside")
    np.testing.assert_allclose(
        m(None, torch.zeros(2, 3, 4, 4), maps, torch.zeros(2), regions=regions), [0.75, 0.5]
    )
    with pytest.raises(ValueError, match="needs context"):
        m(None, torch.zeros(2, 3, 4, 4), maps, torch.zeros(2))


# -------------------------------------------------------------------------------------------- parts
def _parts_case():
    # 3 parts on a 4x4 image: part 1 = row 0, part 2 = row 1, part 3 = row 2 (row 3 background)
    masks = torch.zeros(2, 4, 4, dtype=torch.uint8)
    masks[:, 0], masks[:, 1], masks[:, 2] = 1, 2, 3
    maps = torch.zeros(2, 4, 4)
    maps[0, 0], maps[0, 1], maps[0, 2] = 3.0, 2.0, 1.0  # mass 12, 8, 4
    maps[1, 0], maps[1, 1], maps[1, 2] = 1.0, 2.0, 3.0  # mass 4, 8, 12
    maps[:, 3] = 100.0  # background mass never counts
    return masks, maps


def test_part_masses_and_rank_correlation():
    masks, maps = _parts_case()
    np.testing.assert_allclose(part_masses(maps, masks, 4).numpy(), [[12, 8, 4, 0], [4, 8, 12, 0]])
    imp = torch.tensor([[0.5, 0.2, 0.1, 0.0], [0.5, 0.2, 0.1, 0.0]])  # part 4 absent: excluded
    vals = get_metric("part_rank_corr")(
        None, torch.zeros(2, 3, 4, 4), maps, torch.zeros(2), part_masks=masks, part_importance=imp
    )
    np.testing.assert_allclose(vals, [1.0, -1.0])


def test_top_part_and_key_share():
    masks, maps = _parts_case()
    key = torch.tensor([[True, False, False, False], [True, False, False, False]])
    ctx = {"part_masks": masks, "key_parts": key}
    x, t = torch.zeros(2, 3, 4, 4), torch.zeros(2)
    np.testing.assert_allclose(get_metric("top_part_key")(None, x, maps, t, **ctx), [1.0, 0.0])
    np.testing.assert_allclose(get_metric("key_part_share")(None, x, maps, t, **ctx), [12 / 24, 4 / 24])
    zero = torch.zeros(2, 4, 4)  # no mass on the bird: uniform choice among 3 present parts
    np.testing.assert_allclose(get_metric("top_part_key")(None, x, zero, t, **ctx), [1 / 3, 1 / 3])
    np.testing.assert_allclose(get_metric("key_part_share")(None, x, zero, t, **ctx), [1 / 3, 1 / 3])


def test_true_part_importance_on_the_toy_model():
    model = RegionSum(halves())
    orig = ones_image(1)
    removed = ones_image(1).repeat(2, 1, 1, 1)[None]  # [1, 2 parts, 3, 4, 4]
    removed[0, 0, 0, :, :2] = 0  # part 0 = class-0 region removed
    removed[0, 1, 0, :, 2:] = 0  # part 1 = class-1 region removed
    imp = true_part_importance(model, orig, removed, torch.tensor([0]))
    np.testing.assert_allclose(imp.numpy(), [[0.5 - sig(-8), 0.5 - sig(8)]], atol=1e-6)


# -------------------------------------------------------------------------------- sanity, stability
def test_randomisation_stages_top_first_and_norms_grouped():
    names = [n for n, _ in randomisation_stages(TinyCNN())]
    assert names == ["head", "features.3+features.4", "features.0+features.1"]


def _input_grad(model, images, targets):
    x = images.clone().requires_grad_(True)
    out = model(x).gather(1, targets.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(out, x)
    return g.abs().sum(1)


def test_cascading_randomisation_separates_model_dependent_maps():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    before = [p.detach().clone() for p in model.parameters()]
    x, t = torch.randn(4, 3, 10, 10), torch.tensor([0, 1, 2, 0])
    dep = cascading_randomisation(model, _input_grad, x, t)
    indep = cascading_randomisation(model, lambda m, i, tt: centre_maps((i.shape[0], 10, 10)), x, t)
    assert dep["stages"] == ["head", "features.3+features.4", "features.0+features.1"]
    assert dep["corr"].shape == (3, 4)
    np.testing.assert_allclose(indep["final"], 1.0)
    assert sanity_verdict(float(np.mean(indep["final"]))) == "fail"
    assert float(np.mean(dep["final"])) < float(np.mean(indep["final"]))
    for p, q in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # the caller's model is not touched
    assert sanity_verdict(FAIL_THRESHOLD - 0.01) == "pass"
    assert sanity_verdict(float("nan")) == "n/a"


def test_spearman_and_stability():
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert math.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))
    a = torch.zeros(1, 10, 10)
    a[0, 0, :] = 1  # top 10% = row 0
    b = torch.zeros(1, 10, 10)
    b[0, 0, :5] = 1
    b[0, 1, :5] = 1  # top 10% = half of row 0 and half of row 1
    assert topk_jaccard(a, b, 0.1)[0] == pytest.approx(5 / 15)
    assert seed_stability([a, a, a])[0] == pytest.approx(1.0)
    r = seed_stability([random_maps((4, 32, 32), seed=s, resolution=None) for s in range(5)])
    assert np.all(r < 0.15)  # chance is 0.1 / 1.9 = 0.053


# --------------------------------------------------------------------------------- bootstrap, ranks
def test_bootstrap_and_paired_difference():
    v = np.array([0.0, 1.0, 1.0, 1.0, np.nan])
    s = bootstrap_ci(v, seed=3, higher_is_better=True)
    assert s["n"] == 4 and s["mean"] == pytest.approx(0.75)
    assert 0.0 <= s["ci95"][0] <= 0.75 <= s["ci95"][1] <= 1.0
    assert s == bootstrap_ci(v, seed=3, higher_is_better=True)
    assert s["direction"] == "higher"
    assert bootstrap_ci([np.nan])["mean"] is None
    d = paired_difference(np.arange(20.0) + 1, np.arange(20.0))
    assert d["mean"] == pytest.approx(1.0) and d["ci95"] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_summary_ranks_by_direction():
    per = {
        "a": {"deletion": [0.1, 0.2], "insertion": [0.5, 0.6]},
        "b": {"deletion": [0.3, 0.4], "insertion": [0.7, 0.8]},
    }
    summ = summarise(per)
    assert summ["a"]["deletion"]["higher_is_better"] is False
    ranks = rank_methods(summ)
    assert ranks["deletion"] == ["a", "b"] and ranks["insertion"] == ["b", "a"]


def test_every_metric_declares_a_direction():
    for name in available_metrics():
        info = metric_info(name)
        assert info["direction"] in ("higher", "lower")
        assert get_metric(name).higher_is_better == (info["direction"] == "higher")


# ------------------------------------------------------------------------------ batch-size invariance
def _full_context(b: int, h: int, w: int, model: nn.Module) -> dict:
    g = torch.Generator().manual_seed(1)
    regions = torch.rand(b, h, w, generator=g) > 0.6
    masks = torch.randint(0, 5, (b, h, w), generator=g, dtype=torch.uint8)
    return {
        "regions": regions,
        "part_masks": masks,
        "part_importance": torch.rand(b, 4, generator=g),
        "key_parts": torch.rand(b, 4, generator=g) > 0.5,
        "background_images": torch.randn(b, 2, 3, h, w, generator=g),
        "pair_images": torch.randn(b, 3, h, w, generator=g),
        "pair_masks": torch.randint(0, 3, (b, h, w), generator=g),
        "pair_targets": torch.randint(0, 3, (b, 2), generator=g),
        "explain_fn": _input_grad,
        # seeded maps must not depend on which batch an image sits in
        "explain_seeded": lambda imgs, tt, s: imgs.abs().sum(1) * (1 + s) + (imgs[:, 1] * s).sin(),
    }


def _slice_ctx(ctx: dict, sl: slice) -> dict:
    return {k: (v[sl] if isinstance(v, torch.Tensor) else v) for k, v in ctx.items()}


@pytest.mark.parametrize("name", available_metrics())
def test_every_metric_is_batch_size_invariant(name):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    b, h, w = 6, 10, 10
    x, maps, t = torch.randn(b, 3, h, w), torch.rand(b, h, w), torch.tensor([0, 1, 2, 0, 1, 2])
    ctx = _full_context(b, h, w, model)
    kwargs = {"n_steps": 7, "batch_size": 4} if name in ("deletion", "insertion") else {}
    metric = get_metric(name, **kwargs)
    full = metric(model, x, maps, t, **ctx)
    parts = []
    for sl in (slice(0, 1), slice(1, 3), slice(3, 6)):
        parts.append(metric(model, x[sl], maps[sl], t[sl], **_slice_ctx(ctx, sl)))
    np.testing.assert_allclose(np.concatenate(parts), full, atol=1e-5, equal_nan=True)
    assert np.isfinite(full).any()


def test_baselines_are_batch_invariant_and_seeded():
    a = baseline_maps("random", (4, 8, 8), seed=3)
    b = torch.cat(
        [baseline_maps("random", (2, 8, 8), seed=3), baseline_maps("random", (2, 8, 8), seed=3, offset=2)]
    )
    torch.testing.assert_close(a, b)
    c = centre_maps((1, 9, 9))
    assert c[0].argmax().item() == 40  # the centre pixel
    with pytest.raises(ValueError):
        baseline_maps("nope", (1, 2, 2))


class DictOut(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": x.mean((1, 2, 3)), "logits": self.inner(x)}


def test_model_outputs_as_dict_are_read_like_explainers_do():
    model = RegionSum(halves())
    a = perturbation_curves(model, ones_image(), left_first_map(), torch.tensor([0]), n_steps=4)
    b = perturbation_curves(DictOut(model), ones_image(), left_first_map(), torch.tensor([0]), n_steps=4)
    np.testing.assert_allclose(a["deletion"].probs, b["deletion"].probs)
    np.testing.assert_allclose(a["insertion"].probs, b["insertion"].probs)


def test_every_metric_gives_no_values_for_no_images() -> None:
    """A shard's block can hold none of a metric's images: the base class answers without computing."""
    from birdlens.explain.metrics.base import Category, Direction, Metric

    class Boom(Metric):
        name = "boom"
        direction = Direction.HIGHER
        category = Category.FAITHFULNESS

        def compute(self, *a, **k):  # type: ignore[no-untyped-def]
            raise AssertionError("compute must not run on an empty batch")

    out = Boom()(None, torch.zeros(0, 3, 4, 4), torch.zeros(0, 4, 4), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)
