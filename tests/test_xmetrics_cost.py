"""The cost of ``explain-eval`` (issue 24): the evaluation counter's exact counts, the shared curve ends, and the
cheaper defaults against the full computation on toy models (fast, 1 thread)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _trainutil import untrained_cnn
from birdlens.data.manifest import Manifest
from birdlens.data.synth import PARTS, generate_dataset
from birdlens.explain.metrics import budgets
from birdlens.explain.metrics.evaluate import EvalSettings, curve_steps, evaluate_explanations
from birdlens.explain.metrics.evaluation_count import EvaluationCounter, format_evaluations
from birdlens.explain.metrics.perturbation import (
    DEFAULT_STEPS,
    auc,
    endpoint_probs,
    perturbation_curves,
)
from birdlens.runs.trained import TrainedModel

SIZE = 64


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate_dataset(
        tmp_path_factory.mktemp("synth") / "birds", classes=3, per_class=8, size=SIZE, seed=0, quiet=True
    )


@pytest.fixture(scope="module")
def trained(synth: Manifest) -> TrainedModel:
    return untrained_cnn(synth.classes, SIZE)


def test_counter_counts_rows_per_phase_and_follows_copies():
    model = nn.Linear(3, 2)
    counter = EvaluationCounter()
    x = torch.zeros(5, 3)
    with counter.watching(model):
        model(x)  # outside a phase: not counted
        with counter.phase("a", "m1"):
            model(x)
            twin = copy.deepcopy(model)  # a copy carries the hook (the sanity check's randomised model)
            twin(x[:2])
            with counter.phase("b"):
                model(x[:1])
        counter.attach(twin)  # already carries the hook: not counted twice
        with counter.phase("a", "m2"):
            twin(x)
    model(x)  # after watching: the hook is gone from the model
    got = counter.as_dict()
    assert got["a"]["evaluations"] == 5 + 2 + 5
    assert got["a"]["methods"] == {
        "m1": {"evaluations": 7, "seconds": got["a"]["methods"]["m1"]["seconds"]},
        "m2": {"evaluations": 5, "seconds": got["a"]["methods"]["m2"]["seconds"]},
    }
    assert got["b"]["evaluations"] == 1 and got["b"]["methods"] == {}
    assert counter.evaluations("a", "m1") == 7 and counter.evaluations("a") == 12
    assert "phase" in format_evaluations(got) and "m2" in format_evaluations(got)


def test_nested_phases_time_exclusively(monkeypatch: pytest.MonkeyPatch):
    import birdlens.explain.metrics.evaluation_count as ec

    clock = iter([0.0, 1.0, 3.0, 6.0])  # enter a, enter b, leave b, leave a
    monkeypatch.setattr(ec.time, "perf_counter", lambda: next(clock))
    counter = EvaluationCounter()
    with counter.phase("a"), counter.phase("b"):
        pass
    got = counter.as_dict()
    assert got["a"]["seconds"] == pytest.approx(1.0 + 3.0) and got["b"]["seconds"] == pytest.approx(2.0)


def test_explain_eval_counts_every_model_evaluation_exactly(synth: Manifest, trained: TrainedModel):
    n, steps, k_sanity, points = 4, 6, 2, 2
    res = evaluate_explanations(
        trained,
        synth,
        ["gradcam"],
        n=n,
        seed=0,
        n_steps=steps,
        sanity_n=k_sanity,
        sanity_points=points,
        stability_n=2,
        stability_seeds=(0, 1, 2),
        figures=False,
        quiet=True,
        fold_bn=False,
    )
    ev = res["evaluations"]
    n = res["data"]["n"]  # the split's images (fewer than asked for on this tiny dataset)
    assert n >= k_sanity
    assert ev["sample"]["evaluations"] == n  # the model's prediction for each image
    assert ev["parts"]["evaluations"] == n * (1 + len(PARTS))  # each image whole and with each part removed
    assert ev["explain"]["methods"] == {"gradcam": {"evaluations": n, "seconds": pytest.approx(0, abs=60)}}
    # 3 maps (gradcam + 2 baselines) x n images x 2 curves x (steps - 1) inner points, + 3 shared ends / image
    assert ev["deletion/insertion"]["evaluations"] == 3 * n * 2 * (steps - 1) + 3 * n
    assert ev["deletion/insertion"]["methods"]["gradcam"]["evaluations"] == n * 2 * (steps - 1)
    assert ev["sanity"]["evaluations"] == points * k_sanity  # one Grad-CAM forward per image per point
    assert ev["stability"]["evaluations"] == 0  # only the random baseline is seeded; it runs no model
    assert sum(e["seconds"] for e in ev.values()) <= res["seconds_total"] + 0.01


def test_stability_reuses_the_run_with_the_evaluation_seed(synth: Manifest, trained: TrainedModel):
    kw = dict(n=2, seed=0, n_steps=2, sanity_n=0, stability_n=2, figures=False, quiet=True, baselines=())
    kw["method_params"] = {"lime": {"num_samples": 8}}
    res = evaluate_explanations(trained, synth, ["lime"], stability_seeds=(0, 1, 2), **kw)
    per_run = res["evaluations"]["explain"]["evaluations"] // 2  # LIME's cost for one image
    assert res["evaluations"]["stability"]["evaluations"] == 2 * 2 * per_run  # seeds 1, 2; seed 0 reused
    fresh = evaluate_explanations(trained, synth, ["lime"], stability_seeds=(3, 1, 2), **kw)
    assert fresh["evaluations"]["stability"]["evaluations"] == 3 * 2 * per_run


class Bump(nn.Module):
    """Toy classifier with smooth, map-dependent curves: logit 0 = gain * (Gaussian-weighted mean of channel 0)."""

    def __init__(self, size: int, gain: float = 12.0) -> None:
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        g = torch.exp(-((yy - size * 0.4) ** 2 + (xx - size * 0.6) ** 2) / (2 * (size / 6) ** 2))
        self.register_buffer("weight", g / g.mean())
        self.gain = gain
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gain * (x[:, 0] * self.weight).mean((1, 2)) - 2.0
        return torch.stack([s, torch.zeros_like(s)], 1) + 0 * self.dummy


def _toy(size: int = 32, b: int = 3) -> tuple[nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    model = Bump(size).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(b, 3, size, size, generator=g) * 0.8 + 0.2
    w = model.weight.expand(b, size, size)
    maps = {
        "perfect": w.clone(),
        "noisy": w + 0.5 * torch.rand(b, size, size, generator=g),
        "random": torch.rand(b, size, size, generator=g),
        "inverted": -w,
    }
    return model, images, maps


def test_shared_ends_give_the_same_curves_as_computing_them():
    model, images, maps = _toy()
    t = torch.zeros(3, dtype=torch.long)
    ends = endpoint_probs(model, images, t)
    for m in maps.values():
        own = perturbation_curves(model, images, m, t, n_steps=16)
        shared = perturbation_curves(model, images, m, t, n_steps=16, endpoints=ends)
        for mode in own:
            np.testing.assert_allclose(shared[mode].probs, own[mode].probs, rtol=0, atol=1e-6)
    # the ends are what they stand for: the image, the zero substrate and the blurred image
    p = model(images).softmax(-1)[:, 0]
    torch.testing.assert_close(ends.original, p)
    torch.testing.assert_close(ends.deleted, model(torch.zeros_like(images)).softmax(-1)[:, 0])
    assert own["deletion"].probs[:, 0] == pytest.approx(p.detach().numpy(), abs=1e-6)
    assert own["insertion"].probs[:, -1] == pytest.approx(p.detach().numpy(), abs=1e-6)


def test_fewer_steps_are_the_subsampled_finer_curve():
    """For a step count dividing the finer one (pixels per step a whole multiple), the coarse curve's points
    are a subset of the fine curve's: what benchmarks/xmetrics_steps.py reads the AUC at fewer steps from."""
    model, images, maps = _toy(size=16)  # 256 pixels: 32 steps of 8, 8 steps of 32
    t = torch.zeros(3, dtype=torch.long)
    fine = perturbation_curves(model, images, maps["noisy"], t, n_steps=32)
    coarse = perturbation_curves(model, images, maps["noisy"], t, n_steps=8)
    for mode in fine:
        np.testing.assert_allclose(coarse[mode].probs, fine[mode].probs[:, ::4], atol=1e-6)
        np.testing.assert_allclose(coarse[mode].auc, auc(fine[mode].probs[:, ::4]), atol=1e-6)


def test_default_steps_keep_every_auc_within_0_01_of_rise_224():
    # 56 x 56 = 224 * 14 pixels: both step counts change whole pixels per step, as at 224 x 224
    model, images, maps = _toy(size=56)
    t = torch.zeros(3, dtype=torch.long)
    cfg = EvalSettings()
    assert max(curve_steps(cfg, "deletion"), curve_steps(cfg, "insertion")) < DEFAULT_STEPS
    spread = []
    for m in maps.values():
        full = perturbation_curves(model, images, m, t, n_steps=DEFAULT_STEPS, batch_size=64)
        for mode in full:
            cheap = perturbation_curves(
                model, images, m, t, modes=(mode,), n_steps=curve_steps(cfg, mode), batch_size=64
            )
            spread.append(full[mode].auc.mean())
            assert np.abs(cheap[mode].auc - full[mode].auc).max() <= 0.01, mode
    assert max(spread) - min(spread) > 0.3  # the maps' AUCs differ widely: the check is not of flat lines


def test_explicit_steps_apply_to_both_curves(synth: Manifest, trained: TrainedModel):
    res = evaluate_explanations(
        trained, synth, ["gradcam"], n=2, n_steps=7, sanity_n=0, baselines=(), figures=False, quiet=True
    )
    assert res["settings"]["curve_steps"] == {"deletion": 7, "insertion": 7}
    assert [len(res["curves"]["gradcam"][m]["fractions"]) for m in ("deletion", "insertion")] == [8, 8]
    default = EvalSettings()
    assert default.n_steps is None
    assert (curve_steps(default, "deletion"), curve_steps(default, "insertion")) == (
        budgets.DELETION_STEPS,
        budgets.INSERTION_STEPS,
    )


def test_cli_without_steps_uses_each_curves_default(synth: Manifest, trained: TrainedModel, tmp_path: Path):
    import json

    from typer.testing import CliRunner

    from _trainutil import save_run
    from birdlens.cli import app

    run = save_run(trained, tmp_path / "run")
    args = ["explain-eval", "--run", str(run), "--data", str(Path(synth.root) / "manifest.csv"), "--quiet"]
    args += ["--methods", "gradcam", "--n", "2", "--sanity-n", "0", "--stability-n", "0", "--out"]
    r = CliRunner().invoke(app, [*args, str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "x" / "results.json").read_text())["settings"]["curve_steps"]
    assert got == {"deletion": budgets.DELETION_STEPS, "insertion": budgets.INSERTION_STEPS}


def test_two_sanity_points_give_the_verdict_of_four(synth: Manifest, trained: TrainedModel):
    kw = dict(n=3, seed=0, n_steps=2, sanity_n=3, stability_n=0, figures=False, quiet=True)
    four = evaluate_explanations(trained, synth, ["gradcam", "ig"], sanity_points=4, **kw)
    two = evaluate_explanations(trained, synth, ["gradcam", "ig"], sanity_points=budgets.SANITY_POINTS, **kw)
    assert budgets.SANITY_POINTS == 2
    for name in four["sanity"]["methods"]:
        a, b = four["sanity"]["methods"][name], two["sanity"]["methods"][name]
        assert len(b["stages"]) == 2 and b["stages"][-1] == a["stages"][-1]
        np.testing.assert_allclose(b["corr"][-1], a["corr"][-1], atol=1e-12)
    assert two["sanity"]["verdicts"] == four["sanity"]["verdicts"]
    assert four["evaluations"]["sanity"]["evaluations"] == 2 * two["evaluations"]["sanity"]["evaluations"]


def test_results_json_has_the_evaluations(synth: Manifest, trained: TrainedModel, tmp_path: Path):
    import json

    evaluate_explanations(
        trained, synth, ["gradcam"], n=2, out_dir=tmp_path, n_steps=2, sanity_n=1, figures=False, quiet=True
    )
    got = json.loads((tmp_path / "results.json").read_text())["evaluations"]
    # "variants": the re-rendered birds of background_independence and target_sensitivity (synthetic data)
    assert set(got) == {
        "sample",
        "parts",
        "explain",
        "deletion/insertion",
        "variants",
        "sanity",
        "stability",
        "selected metrics",
    }
    assert all(math.isfinite(e["seconds"]) and e["evaluations"] >= 0 for e in got.values())
