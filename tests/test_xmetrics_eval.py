"""End to end: ``birdlens explain-eval`` and ``evaluate_explanations`` on a tiny synthetic-bird dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from _trainutil import save_run, untrained_cnn
from birdlens.cli import app
from birdlens.data.manifest import Manifest
from birdlens.data.synth import PARTS, generate_dataset
from birdlens.explain.metrics.evaluate import evaluate_explanations, select_records
from birdlens.explain.metrics.regions import match_box, read_boxes
from birdlens.models import DataConfig
from birdlens.runs.trained import TrainedModel

SIZE = 64


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate_dataset(
        tmp_path_factory.mktemp("synth") / "birds", classes=3, per_class=12, size=SIZE, seed=0, quiet=True
    )


@pytest.fixture(scope="module")
def trained(synth: Manifest) -> TrainedModel:
    return untrained_cnn(synth.classes, SIZE)


@pytest.fixture(scope="module")
def run_dir(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(trained, tmp_path_factory.mktemp("run"))


def test_sample_is_seeded_and_class_balanced(synth: Manifest):
    a = select_records(synth, 6, seed=1, split="test")
    assert [r.path for r in a] == [r.path for r in select_records(synth, 6, seed=1, split="test")]
    labels = [r.label for r in a]
    assert all(labels.count(c) == 2 for c in synth.classes)


def test_evaluate_on_synthetic_birds_has_every_metric(
    synth: Manifest, trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import birdlens.explain.metrics.evaluate as ev

    real = ev.method_explain_fn

    def broken_ig(method, *a, **k):  # a method that crashes is reported, the others still run
        if method != "ig":
            return real(method, *a, **k)

        def fn(model, images, targets):
            raise RuntimeError("boom")

        return fn

    monkeypatch.setattr(ev, "method_explain_fn", broken_ig)
    res = evaluate_explanations(
        trained,
        synth,
        ["gradcam", "ig"],
        n=4,
        out_dir=tmp_path,
        seed=0,
        n_steps=6,
        sanity_n=2,
        stability_n=2,
        figures=False,
        quiet=True,
    )
    assert res["errors"] == {"ig": "RuntimeError: boom"}
    assert res["data"]["synthetic_parts"] and res["data"]["regions"] == "mask"
    assert res["data"]["render_vs_disk_max_abs"] < 1e-5  # the re-rendered bird is the image on disk
    assert set(res["methods"]) == {"gradcam", "random (baseline)", "centre (baseline)"}
    for metric in (
        "deletion",
        "insertion",
        "pointing_game",
        "energy_inside",
        "part_rank_corr",
        "top_part_key",
        "key_part_share",
        "sanity_rank_corr",
    ):
        assert metric in res["methods"]["gradcam"], metric
        stats = res["methods"]["gradcam"][metric]
        assert set(stats) >= {"mean", "ci95", "n", "higher_is_better"}
    assert res["methods"]["random (baseline)"]["stability"]["n"] == 2
    assert res["sanity"]["verdicts"]["centre (baseline)"] == "fail"  # content-free maps never change
    assert res["methods"]["centre (baseline)"]["sanity_rank_corr"]["mean"] == pytest.approx(1.0)
    per = json.loads((tmp_path / "per_image.json").read_text())
    assert len(per["methods"]["gradcam"]["deletion"]) == 4


def test_absent_parts_have_zero_true_importance(synth: Manifest, trained: TrainedModel):
    from birdlens.explain.metrics.evaluate import EvalSettings, _part_context
    from birdlens.models import eval_geometry

    recs = select_records(synth, 6, seed=0, split="test")
    ctx = _part_context(
        trained.model,
        recs,
        Path(synth.root),
        torch.zeros(6, dtype=torch.long),
        trained.transform(),
        eval_geometry(trained.data_config, SIZE),
        trained.classes,
        EvalSettings(),
    )
    parts = json.loads((Path(synth.root) / "parts.json").read_text())
    absent = {row["name"]: row["absent_parts"] for row in parts["classes"]}
    checked = 0
    for i, r in enumerate(recs):
        for p in absent[r.label]:
            j = PARTS.index(p)
            assert ctx["part_importance"][i, j].item() == 0.0
            assert not (ctx["part_masks"][i] == j + 1).any()
            checked += 1
    visible = ctx["part_masks"].unique().tolist()
    assert 1 in visible and 0 in visible  # body and background are there
    assert checked > 0 or all(not v for v in absent.values())


def test_cli_writes_results_figures_and_refuses_to_overwrite(synth: Manifest, run_dir: Path, tmp_path: Path):
    out = tmp_path / "xeval"
    args = [
        "explain-eval",
        "--run",
        str(run_dir),
        "--data",
        str(Path(synth.root) / "manifest.csv"),
        "--methods",
        "gradcam,ig,lime",
        "--n",
        "3",
        "--steps",
        "5",
        "--sanity-n",
        "2",
        "--stability-n",
        "2",
        "--param",
        "ig.steps=4",
        "--param",
        "lime.num_samples=40",
        "--out",
        str(out),
        "--quiet",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"gradcam", "ig", "lime", "random (baseline)", "centre (baseline)"}
    assert res["metrics"]["deletion"]["direction"] == "lower"
    assert res["metrics"]["insertion"]["higher_is_better"] is True
    assert "stability" in res["methods"]["lime"] and "stability" not in res["methods"]["gradcam"]
    for fig in ("figures/curves.png", "figures/sanity.png", "figures/bars_insertion.png"):
        assert (out / fig).is_file() and fig in res["figures"]
    assert "insertion ↑" in r.output and "deletion ↓" in r.output
    assert (
        "model evaluations per phase" in r.output
        and res["evaluations"]["deletion/insertion"]["evaluations"] > 0
    )
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
    bad = CliRunner().invoke(app, [*args[:5], "--methods", "nope", *args[7:], "--force"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_boxes_files_are_read_and_matched(tmp_path: Path):
    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text("path,x,y,w,h\ntrain/A/1.jpg,1,2,3,4\n")
    boxes = read_boxes(csv_file)
    assert match_box(boxes, tmp_path / "data" / "train" / "A" / "1.jpg") == (1.0, 2.0, 3.0, 4.0)
    cub = tmp_path / "cub"
    cub.mkdir()
    (cub / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n")
    (cub / "bounding_boxes.txt").write_text("1 10.0 20.0 30.0 40.0\n")
    boxes = read_boxes(cub / "bounding_boxes.txt")
    assert match_box(boxes, "/x/images/001.Black_footed_Albatross/a.jpg") == (10.0, 20.0, 30.0, 40.0)
    assert match_box(boxes, "/x/other.jpg") is None


def test_box_regions_follow_resize_and_crop():
    from birdlens.explain.metrics.regions import box_image, to_input_frame
    from birdlens.models import eval_geometry

    # 200 x 100 image, box on the left half; resize shorter side to 50 then centre-crop 50: the crop keeps
    # x in [50, 150) of the original, so the box [0, 100) shows as the left half of the crop.
    dc = DataConfig(input_size=50, crop_pct=1.0, interpolation="bilinear")
    reg = to_input_frame(box_image((0, 0, 100, 100), (200, 100)), eval_geometry(dc))
    assert reg.shape == (50, 50)
    np.testing.assert_array_equal(reg[:, :24].numpy(), True)
    np.testing.assert_array_equal(reg[:, 26:].numpy(), False)


def test_precision_reaches_the_deletion_insertion_forwards_only_when_asked(
    synth: Manifest, trained: TrainedModel
):
    kw = {"n": 3, "n_steps": 5, "sanity_n": 0, "stability_n": 0, "baselines": (), "quiet": True}
    plain = evaluate_explanations(trained, synth, ["gradcam"], **kw)
    fp32 = evaluate_explanations(trained, synth, ["gradcam"], precision="fp32", **kw)
    bf16 = evaluate_explanations(trained, synth, ["gradcam"], precision="bf16", **kw)
    assert bf16["settings"]["precision"] == "bf16"
    for metric in ("deletion", "insertion"):
        assert plain["methods"]["gradcam"][metric]["mean"] == fp32["methods"]["gradcam"][metric]["mean"]
        # Grad-CAM's map is fp32 either way: a change can only come from the metric's autocast forwards
        assert bf16["methods"]["gradcam"][metric]["mean"] != fp32["methods"]["gradcam"][metric]["mean"]
        assert (
            abs(bf16["methods"]["gradcam"][metric]["mean"] - fp32["methods"]["gradcam"][metric]["mean"])
            < 0.05
        )


def test_part_truth_is_dropped_when_the_images_on_disk_are_not_the_generators(tmp_path: Path):
    """A planted cue (here a white square painted on every test image) makes the re-rendered birds another
    image than the one explained: the part and variant metrics are not scored from the wrong images."""
    from PIL import Image

    from birdlens.data.synth import generate_dataset as gen

    man = gen(tmp_path / "birds", classes=3, per_class=6, size=SIZE, seed=1, quiet=True)
    for rec in man.records:
        if rec.split == "test":
            img = np.asarray(Image.open(rec.path).convert("RGB")).copy()
            img[2:10, 2:10] = 255
            Image.fromarray(img).save(rec.path)
    res = evaluate_explanations(
        untrained_cnn(man.classes, SIZE), man, ["gradcam"], n=3, n_steps=4, sanity_n=1, stability_n=1,
        figures=False, quiet=True,
    )  # fmt: skip
    assert res["data"]["render_vs_disk_max_abs"] > 0.1 and not res["data"]["synthetic_parts"]
    assert not {"part_rank_corr", "background_independence"} & set(res["methods"]["gradcam"])
    assert "deletion" in res["methods"]["gradcam"]
