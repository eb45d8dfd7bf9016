"""Cross-image batching: IG, LIME and SHAP fill each model batch from several images, and every image's result is
bit for bit what explaining it alone gives (torch.equal: the same seeds, the same rows, the same kernels)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from birdlens.explain import make_explainer
from birdlens.explain.base import method_class
from birdlens.explain.batching import Job, alone_rows, chunk_bounds, pooled_values

NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SEG = {"segmentation": "slic", "segmentation_params": {"n_segments": 12}}
# odd sizes on purpose: per-image tails of one row (alone), batches that span images, a last batch of one row
CASES = [
    ("ig", {"steps": 50}),  # the defaults: per-image chunks 12, 13, 13, 12; shared batches of 13
    ("ig", {"steps": 20, "internal_batch_size": 8}),
    ("ig", {"steps": 5, "internal_batch_size": 2}),  # per-image chunks 2, 1, 2: a middle row alone
    ("ig", {"steps": 1}),
    ("lime", {"num_samples": 30, "batch_size": 4, **SEG}),
    ("lime", {"num_samples": 9, "batch_size": 4, **SEG}),  # a tail row alone per image
    (
        "lime",
        {"num_samples": 7, "batch_size": 4, **SEG},
    ),  # 3 images x 7 rows: the last shared batch has 1 row
    ("shap", {"max_evals": 60, "blur_kernel": 16}),
    ("shap", {"max_evals": 40, "blur_kernel": 16, "forward_chunk": 3, "batch_size": 2}),
]


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    # a BatchNorm-folded, SiLU CNN (birdlens' default backbone): where a batch of one row rounds differently
    torch.manual_seed(0)
    return timm.create_model("efficientnet_lite0", num_classes=5).eval()


def photos(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("method", "params"), CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_batched_equals_per_image_loop(lite0: nn.Module, method: str, params: dict) -> None:
    assert method_class(method).batched
    explainer = make_explainer(method, lite0, data_config=NORM, **params)
    x = photos()
    batched = explainer.explain(x)
    alone = [explainer.explain(x[i : i + 1]) for i in range(x.shape[0])]
    assert torch.equal(batched.maps, torch.cat([a.maps for a in alone]))
    assert torch.equal(batched.target, torch.cat([a.target for a in alone]))
    for key in ("logit", "prob"):
        assert torch.equal(batched.scores[key], torch.cat([a.scores[key] for a in alone]))


def test_model_batches_hold_rows_of_several_images(lite0: nn.Module) -> None:
    explainer = make_explainer("lime", lite0, data_config=NORM, num_samples=6, batch_size=4, **SEG)
    sizes: list[int] = []
    explainer.fast_logits(photos(2))  # build the folded copy first, then watch it
    fast = explainer._fast
    assert fast is not None
    h = fast.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        explainer.explain(photos(2))
    finally:
        h.remove()
    # 2 images x 6 rows in batches of 4: 4, 4, 4 (the per-image loop would run 4, 2, 4, 2)
    assert sizes == [4, 4, 4]


def test_pooled_values_keeps_alone_rows_alone_and_pads_a_lone_row(lite0: nn.Module) -> None:
    explainer = make_explainer("lime", lite0, data_config=NORM)
    x = photos(2)
    sizes: list[int] = []
    explainer.fast_logits(x)
    fast = explainer._fast
    assert fast is not None
    jobs = [
        Job(
            5, lambda lo, hi, i=i: x[i : i + 1].expand(hi - lo, -1, -1, -1), 1, alone_rows(chunk_bounds(5, 4))
        )
        for i in range(2)
    ] + [Job(1, lambda lo, hi: x[:1].expand(hi - lo, -1, -1, -1), 2)]
    h = fast.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        values = pooled_values(explainer, jobs, 4, "logit", "fp32")
    finally:
        h.remove()
    assert chunk_bounds(5, 4) == [0, 4, 5] and alone_rows([0, 4, 5]) == frozenset({4})
    # job 0: 4 rows, its row 4 alone; job 1: 4 rows, row 4 alone; job 2's lone row next to a copy of itself
    assert sizes == [4, 1, 4, 1, 2]
    assert [v.shape[0] for v in values] == [5, 5, 1]
    with torch.inference_mode():
        ref = explainer.fast_logits(explainer.to_memory_format(x[:1].expand(4, -1, -1, -1)))[0, 2].double()
    assert float(values[2][0]) == float(ref)


def test_one_image_runs_the_per_image_loops_batches(lite0: nn.Module) -> None:
    # IG's per-image loop cuts 20 steps capped at 16 into two balanced chunks of 10: one image keeps them
    explainer = make_explainer("ig", lite0, data_config=NORM, steps=20, internal_batch_size=16)
    sizes: list[int] = []
    h = lite0.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        explainer.explain(photos(1))
    finally:
        h.remove()
    assert sizes == [2, 10, 10]  # image + baseline, then the two chunks


def test_batched_across_kernel_groups_equals_to_float_rounding(lite0: nn.Module) -> None:
    # 18 samples in batches of 16: alone, an image's 2-row tail runs as a batch of 2; batched, rows share batches
    # of 16, where the CPU picks other kernels (on this CPU from 16 rows on). Each value then differs by float32
    # rounding of the logits (~1e-6 relative), which the ridge fit carries to the weights at the same scale.
    explainer = make_explainer(
        "lime", lite0, data_config=NORM, num_samples=18, batch_size=16, score="logit", **SEG
    )
    x = photos()
    batched = explainer.explain(x)
    alone = torch.cat([explainer.explain(x[i : i + 1]).maps for i in range(x.shape[0])])
    scale = float(alone.abs().max())
    torch.testing.assert_close(batched.maps, alone, rtol=0, atol=1e-5 * scale)  # measured: 5.5e-7 * scale
