"""``birdlens train | evaluate | predict | compare`` through the real command line (typer runner)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _trainutil import make_image_folder
from birdlens.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    data = make_image_folder(root / "birds")
    out = root / "run"
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--model",
            "simple_cnn",
            "--mode",
            "probe",
            "--image-size",
            "32",
            "--out",
            str(out),
            "--quiet",
        ],
        env={"BIRDLENS_CACHE": str(root / "cache")},
    )
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output
    return out


def test_train_refuses_existing_run_without_force(probe_run: Path) -> None:
    res = runner.invoke(
        app, ["train", "--data", "unused", "--model", "simple_cnn", "--out", str(probe_run), "-q"]
    )
    assert res.exit_code == 2
    assert "--force" in res.output


def test_train_from_yaml_config(probe_run: Path, tmp_path: Path) -> None:
    # the resolved config.yaml of a run re-runs it; CLI options override it
    out = tmp_path / "again"
    res = runner.invoke(
        app, ["train", "--config", str(probe_run / "config.yaml"), "--out", str(out), "-q", "--no-evaluate"]
    )
    assert res.exit_code == 0, res.output
    cfg = (out / "config.yaml").read_text()
    assert "simple_cnn" in cfg and str(out) in cfg


def test_evaluate_writes_metrics_and_figures(probe_run: Path) -> None:
    res = runner.invoke(app, ["evaluate", "--run", str(probe_run), "--split", "valid", "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((probe_run / "metrics" / "valid.json").read_text())
    for key in (
        "accuracy",
        "accuracy_ci95",
        "n",
        "top5_accuracy",
        "macro_f1",
        "per_class",
        "ece",
        "most_confused",
    ):
        assert key in m
    assert m["n"] == 6 and set(m["per_class"]) == {"CLASS A", "CLASS B", "CLASS C"}
    lo, hi = m["accuracy_ci95"]
    assert lo <= m["accuracy"] <= hi
    for fig in (
        "confusion_valid_counts",
        "confusion_valid_normalized",
        "reliability_valid",
        "top_losses_valid",
        "learning_curves",
    ):
        assert (probe_run / "figures" / f"{fig}.png").stat().st_size > 1000


def test_evaluate_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["evaluate", "--run", str(tmp_path)])
    assert res.exit_code == 1 and "meta.json" in res.output


def test_predict_bad_image_does_not_stop_the_others(probe_run: Path, tmp_path: Path) -> None:
    good = sorted((probe_run.parent / "birds" / "test" / "CLASS B").glob("*.png"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    res = runner.invoke(
        app, ["predict", "--run", str(probe_run), str(bad), str(good), "--top-k", "2", "--json"]
    )
    assert res.exit_code == 1
    err_lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and "broken.jpg" in err_lines[0]
    payload = json.loads(res.output[: res.output.rindex("]") + 1])
    assert payload[0]["path"].endswith("broken.jpg") and "error" in payload[0]
    assert len(payload[1]["top"]) == 2 and payload[1]["label"] in {"CLASS A", "CLASS B", "CLASS C"}
    assert payload[1]["top"][0]["probability"] >= payload[1]["top"][1]["probability"]
    res = runner.invoke(app, ["predict", "--run", str(probe_run), str(good)])
    assert res.exit_code == 0 and str(good) in res.output


def test_compare_writes_table_1(probe_run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["compare", str(probe_run), str(probe_run), "--out", str(tmp_path / "table")])
    assert res.exit_code == 0, res.output
    assert "Runs (test)" in res.output
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    test = json.loads((probe_run / "metrics" / "test.json").read_text())
    assert len(rows) == 2 and float(rows[0]["accuracy"]) == pytest.approx(test["accuracy"])
    assert rows[0]["mode"] == "probe" and rows[0]["augment"] == "none"
    md = (tmp_path / "table.md").read_text()
    assert md.startswith("| run | model |") and "simple_cnn" in md
    assert json.loads((tmp_path / "table.json").read_text())[0]["model"] == "simple_cnn"


def test_evaluate_on_another_dataset_keeps_the_runs_own_results(probe_run: Path, tmp_path: Path) -> None:
    """Issue 26 #7d: ``evaluate --data OTHER`` used to overwrite the run's own metrics/test.json and figures."""
    import shutil

    run = Path(shutil.copytree(probe_run, tmp_path / "run"))
    other = make_image_folder(tmp_path / "other birds", test=3, seed=1)
    own = {p.name: p.read_bytes() for p in [*(run / "metrics").iterdir(), *(run / "figures").iterdir()]}
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(other), "--split", "test", "-q"])
    assert res.exit_code == 0, res.output
    for name, data in own.items():
        folder = "metrics" if name.endswith(".json") else "figures"
        assert (run / folder / name).read_bytes() == data, f"{folder}/{name} was overwritten"
    theirs = run / "metrics" / "test-on-other_birds.json"
    assert str(theirs) in res.output
    m = json.loads(theirs.read_text())
    assert m["n"] == 9 and m["data"] == str(other)
    assert (run / "figures" / "confusion_test-on-other_birds_counts.png").stat().st_size > 1000
