"""The selectable metrics (``explain-eval --metrics``) end to end on tiny synthetic birds: scored per method
beside the built-in ones, re-explaining metrics on ``--metrics-n`` images, and every bad input one error line
(exit 2) before anything is written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from _trainutil import save_run, untrained_cnn
from birdlens.cli import app
from birdlens.data.manifest import Manifest
from birdlens.data.synth import generate_dataset
from birdlens.explain.metrics.evaluate import evaluate_explanations

SIZE = 32
ALL = "road_morf,road_lerf,infidelity,max_sensitivity,avg_sensitivity,local_lipschitz,random_logit,sparseness,complexity"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate_dataset(
        tmp_path_factory.mktemp("synth") / "birds", classes=3, per_class=6, size=SIZE, seed=0, quiet=True
    )


@pytest.fixture(scope="module")
def run_dir(synth: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(untrained_cnn(synth.classes, SIZE), tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def plain_csv(synth: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images with no masks, boxes or part files: a dataset without ground truth."""
    out = tmp_path_factory.mktemp("plain") / "manifest.csv"
    with open(Path(synth.root) / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for r in rows:
            w.writerow([str(Path(synth.root) / r["path"]), r["label"], r["split"]])
    return out


def test_selected_metrics_are_scored_per_method(synth: Manifest):
    res = evaluate_explanations(
        untrained_cnn(synth.classes, SIZE),
        synth,
        ["gradcam"],
        n=3,
        seed=0,
        n_steps=4,
        sanity_n=0,
        stability_n=0,
        figures=False,
        quiet=True,
        metrics=tuple(ALL.split(",")),
        metric_params={
            "road_morf": {"percentiles": [50]},
            "road_lerf": {"percentiles": [50]},
            "infidelity": {"n_samples": 2},
            "max_sensitivity": {"n_samples": 2},
            "avg_sensitivity": {"n_samples": 2},
            "local_lipschitz": {"n_samples": 2},
        },
        metrics_n=2,
    )
    grad = res["methods"]["gradcam"]
    for m in ALL.split(","):
        assert m in grad and grad[m]["n"] >= 1, m
        assert res["metrics"][m]["category"] in {"faithfulness", "robustness", "complexity", "randomisation"}
    assert grad["max_sensitivity"]["n"] <= 2 and grad["road_morf"]["n"] == 3  # re-explaining ones: metrics_n
    assert res["methods"]["centre (baseline)"]["max_sensitivity"]["mean"] == pytest.approx(0.0)  # fixed map
    assert np.isfinite(grad["infidelity"]["mean"])


def _args(run_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "explain-eval",
        "--run",
        str(run_dir),
        "--data",
        str(data),
        "--methods",
        "gradcam",
        "--n",
        "2",
        "--steps",
        "3",
        "--sanity-n",
        "0",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metrics", "nope"], "unknown metric(s) ['nope']"),
        (
            ["--metrics", "max_sensitivity", "--metric-param", "max_sensitivity.n_samples=0"],
            "n_samples must be an integer >= 1",
        ),
        (
            ["--metrics", "avg_sensitivity", "--metric-param", "avg_sensitivity.radius=-0.1"],
            "radius must be a number >= 0",
        ),
        (
            ["--metrics", "road_morf", "--metric-param", "road_morf.noise=-1"],
            "road_morf.noise must be a number >= 0",
        ),
        (
            ["--metrics", "sparseness", "--metric-param", "infidelity.n_samples=2"],
            "not among the selected metrics",
        ),
        (["--metrics", "infidelity", "--metric-param", "infidelity.steps=2"], "infidelity"),
    ],
)
def test_bad_metric_options_exit_2_and_write_nothing(
    run_dir: Path, synth: Manifest, tmp_path: Path, extra, message
):
    out = tmp_path / "x"
    r = CliRunner().invoke(app, _args(run_dir, Path(synth.root) / "manifest.csv", out, *extra))
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_a_metric_needing_masks_on_a_dataset_without_them(run_dir: Path, plain_csv: Path, tmp_path: Path):
    out = tmp_path / "x"
    r = CliRunner().invoke(app, _args(run_dir, plain_csv, out, "--metrics", "pointing_game"))
    assert r.exit_code == 2, r.output
    assert "pointing_game needs object masks or boxes" in r.output
    assert not out.exists()


def test_cli_scores_the_default_and_named_metrics(run_dir: Path, synth: Manifest, tmp_path: Path):
    out = tmp_path / "x"
    r = CliRunner().invoke(
        app,
        _args(
            run_dir,
            Path(synth.root) / "manifest.csv",
            out,
            "--metrics",
            "sparseness,road_lerf",
            "--metric-param",
            "road_lerf.percentiles=[50]",
        ),
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert {"sparseness", "road_lerf"} <= set(res["methods"]["gradcam"])
    assert "complexity" not in res["methods"]["gradcam"]
    assert res["settings"]["metric_params"] == {"road_lerf": {"percentiles": [50]}}
    assert "figures/categories.png" in res["figures"] and (out / "figures" / "categories.png").is_file()
    assert "Per category" in r.output and "complexity" in r.output


def test_category_winners_by_hand():
    from birdlens.explain.metrics.summary import category_winners

    def st(mean, lo, hi):
        return {"mean": mean, "ci95": [lo, hi], "n": 4}

    summary = {
        # faithfulness: a is 1st on deletion (lower) and 2nd on insertion; b the reverse; c last on both
        "a": {
            "deletion": st(0.1, 0.05, 0.15),
            "insertion": st(0.5, 0.4, 0.6),
            "sparseness": st(0.9, 0.8, 1.0),
        },
        "b": {
            "deletion": st(0.2, 0.18, 0.22),
            "insertion": st(0.7, 0.65, 0.75),
            "sparseness": st(0.2, 0.1, 0.3),
        },
        "c": {"deletion": st(0.3, 0.2, 0.4), "insertion": st(0.1, 0.0, 0.2)},
    }
    cats = category_winners(summary)
    f = cats["faithfulness"]
    assert f["mean_rank"] == {"a": 1.5, "b": 1.5, "c": 3.0}
    assert {f["best"], f["runner_up"]} == {"a", "b"}
    assert f["overlap"] == {"deletion": False, "insertion": False}
    c = cats["complexity"]
    assert (c["best"], c["runner_up"], c["overlap"]) == ("a", "b", {"sparseness": False})


def _study(params: dict, data: dict | None = None) -> dict:
    return {
        "models": [{"name": "cnn", "model": "simple_cnn", "mode": "scratch", "epochs": 1}],
        "data": data or {"source": "synth"},
        "explain_eval": {"params": params},
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"metrics": ["nope"]}, "unknown metric(s) ['nope']"),
        (
            {"metrics": ["max_sensitivity"], "metric_params": {"max_sensitivity": {"n_samples": 0}}},
            "n_samples must be an integer >= 1",
        ),
        (
            {"metrics": ["infidelity"], "metric_params": {"infidelity": {"noise": -0.1}}},
            "infidelity.noise must be a number >= 0",
        ),
        ({"metrics_n": -1}, "metrics_n must be an integer >= 0"),
        ({"stepz": 3}, "unknown setting(s) ['stepz']"),
    ],
)
def test_study_config_refuses_bad_metric_options_at_validation(params, message):
    from birdlens.study.config import ConfigError, parse_study_config

    with pytest.raises(ConfigError) as err:
        parse_study_config(_study(params))
    assert message in str(err.value)


def test_study_config_refuses_a_mask_metric_on_a_csv_without_masks(plain_csv: Path, tmp_path: Path):
    from birdlens.study.config import ConfigError, parse_study_config

    flat = tmp_path / "flat.csv"
    flat.write_text("path,label,split\na.png,A,train\n")
    with pytest.raises(ConfigError, match="energy_inside needs object masks or boxes"):
        parse_study_config(_study({"metrics": ["energy_inside"]}, {"source": "path", "path": str(flat)}))
    with pytest.raises(ConfigError, match="part_rank_corr needs the synthetic-bird part ground truth"):
        parse_study_config(_study({"metrics": ["part_rank_corr"]}, {"source": "path", "path": str(flat)}))
    ok = parse_study_config(_study({"metrics": ["energy_inside", "road_morf"]}))  # synthetic birds have masks
    assert ok.explain_eval.params["metrics"] == ["energy_inside", "road_morf"]


def test_report_names_each_categorys_first_and_runner_up():
    from birdlens.study.report_stage import _category_html, _findings

    def st(mean, lo, hi):
        return {"mean": mean, "ci95": [lo, hi], "n": 8}

    methods = {
        "gradcam": {"deletion": st(0.1, 0.05, 0.15), "sparseness": st(0.6, 0.55, 0.65)},
        "ig": {"deletion": st(0.12, 0.1, 0.2), "sparseness": st(0.3, 0.25, 0.35)},
    }
    text = _findings([], {"lite0": {"methods": methods}})
    comp = next(t for t in text if ", complexity (" in t)
    assert "gradcam ranks first (mean rank 1.0), ig second (2.0)" in comp
    assert "do not overlap on any" in comp
    faith = next(t for t in text if ", faithfulness (" in t)
    assert "overlap on every one" in faith
    html = _category_html(methods)
    assert "<b>gradcam</b>" in html and "sparseness: separate" in html and "deletion: overlap" in html


def test_selected_metrics_in_blocks_equal_one_process(synth: Manifest, tmp_path: Path):
    """Per-image draws and metrics_n shared out per block: the resumable block path gives the same values."""
    trained = untrained_cnn(synth.classes, SIZE)
    kw = {
        "n": 3,
        "seed": 0,
        "n_steps": 3,
        "batch_size": 2,
        "explain_batch": 1,  # blocks of 1 image (sharded.block_size): the third gets none of metrics_n
        "sanity_n": 0,
        "stability_n": 0,
        "variants_n": 0,
        "figures": False,
        "quiet": True,
        "metrics": ("road_morf", "infidelity", "max_sensitivity", "random_logit", "sparseness"),
        "metric_params": {
            "road_morf": {"percentiles": [50]},
            "infidelity": {"n_samples": 2},
            "max_sensitivity": {"n_samples": 2},
        },
        "metrics_n": 2,
    }
    one = evaluate_explanations(trained, synth, ["gradcam"], out_dir=tmp_path / "one", **kw)
    parts = evaluate_explanations(trained, synth, ["gradcam"], out_dir=tmp_path / "parts", resume=True, **kw)
    a = json.loads((tmp_path / "one" / "per_image.json").read_text())["methods"]
    b = json.loads((tmp_path / "parts" / "per_image.json").read_text())["methods"]
    for method in a:
        for metric in kw["metrics"]:
            # the draws are equal; the model's float32 outputs differ by rounding between batch sizes
            np.testing.assert_allclose(
                b[method][metric], a[method][metric], rtol=1e-5, atol=1e-6, equal_nan=True
            )
    n = one["data"]["n"]
    assert n == 3  # one test bird per class
    sens = np.asarray(a["gradcam"]["max_sensitivity"], dtype=float)
    assert np.isfinite(sens[:2]).all() and np.isnan(sens[2:]).all() and sens.size == n
    assert one["methods"]["gradcam"]["road_morf"]["n"] == parts["methods"]["gradcam"]["road_morf"]["n"] == n


def test_study_config_refuses_method_params_among_the_eval_settings():
    from birdlens.study.config import ConfigError, parse_study_config

    with pytest.raises(ConfigError, match=r"explain_eval\.method_params, not in explain_eval\.params"):
        parse_study_config(_study({"method_params": {"lime": {"num_samples": 10}}}))
