"""Class, method and run names are drawn as plain text in every figure (issue 26, finding 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook

from _trainutil import make_image_folder, tiny_probe_config
from birdlens.utils.plaintext import plain

HOSTILE = [r"$\undefinedcmd{x}$", "$x^2$ and $y$", r"back\slash $", "price: $5 to $10", r"a\$b"]
BAD = r"$\undefinedcmd{x}$"


@pytest.mark.parametrize("name", HOSTILE)
def test_plain_is_never_mathtext_and_reads_back_as_typed(name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert not cbook.is_math_text(plain(name))
    fig, ax = plt.subplots()
    t = ax.set_title(plain(name))
    fig.canvas.draw()  # raises on mathtext it cannot parse
    shown, is_math = t._preprocess_math(t.get_text())
    plt.close(fig)
    assert (shown, is_math) == (name, False)


def test_evaluation_figures_take_hostile_class_names(tmp_path: Path) -> None:
    from birdlens.evaluate.plots import (
        plot_confusion,
        plot_learning_curves,
        plot_reliability,
        plot_top_losses,
    )

    classes = [BAD, "$x^2$", "ok"]
    plot_confusion(np.eye(3), classes, tmp_path / "cm.png", title=f"{BAD} test")
    plot_confusion(np.eye(3), classes, tmp_path / "cmn.png", normalize=True)
    img = np.zeros((8, 8, 3), np.uint8)
    plot_top_losses([img], [BAD], ["$x^2$"], [0.5], [1.0], tmp_path / "top.png", title=BAD)
    bins = [{"lo": 0.0, "hi": 1.0, "accuracy": 0.5, "confidence": 0.5, "count": 2}]
    plot_reliability(bins, 0.1, tmp_path / "rel.png", title=BAD)
    rows = [{"epoch": 0, "stage": "probe $C=1$", "train_loss": 1.0, "valid_loss": 1.0, "train_acc": 0.5}]
    plot_learning_curves(rows, tmp_path / "lc.png", title=BAD)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "cm.png",
        "cmn.png",
        "lc.png",
        "rel.png",
        "top.png",
    ]


def test_explanation_and_study_figures_take_hostile_names(tmp_path: Path) -> None:
    from birdlens.explain.metrics.figures import plot_curves, plot_metric_bars, plot_sanity
    from birdlens.explain.viz import PanelRow, panel

    img = np.zeros((8, 8, 3), np.uint8)
    row = PanelRow(image=img, overlays={BAD: img}, predicted=BAD, probability=0.5, true="$x$")
    panel([row], tmp_path / "panel.png", methods=[BAD], title=BAD)
    curves = {BAD: {"deletion": {"fractions": [0, 1], "mean": [1, 0], "auc": [0.5]}}}
    plot_curves(curves, tmp_path / "curves.png")
    summary = {BAD: {"deletion": {"mean": 0.5, "ci95": [0.4, 0.6], "n": 3}}}
    plot_metric_bars(summary, "deletion", tmp_path / "bars.png")
    sanity = {"methods": {BAD: {"stages": ["$layer$"], "corr": [[0.5, 0.4]]}}}
    plot_sanity(sanity, tmp_path / "sanity.png")
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_study_sample_grid_and_ablation_take_hostile_names(tmp_path: Path) -> None:
    from birdlens.data.manifest import Manifest, Record
    from birdlens.study.ablation import plot_ablation
    from birdlens.study.figures import sample_grid

    data = _hostile_folder(tmp_path / "birds")
    records = [
        Record(path=p, label=p.parent.name, split="train") for p in sorted((data / "train").rglob("*.png"))
    ]
    sample_grid(Manifest(records), tmp_path / "grid.png", per_class=2)
    stat = {"mean": 0.5, "ci95": [0.4, 0.6]}
    result = {"summary": {10: {BAD: stat}}, "arms": [BAD], "image_size": 32, "seeds": [0]}
    plot_ablation(result, tmp_path / "ablation.png")
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "ablation.png").is_file()


def _hostile_folder(root: Path) -> Path:
    """The tiny training folder with its three classes renamed to names matplotlib would read as maths."""
    make_image_folder(root)
    for split in ("train", "valid", "test"):
        for old, new in zip(("CLASS A", "CLASS B", "CLASS C"), (BAD, "$x^2$", "$y$ ok"), strict=True):
            (root / split / old).rename(root / split / new)
    return root


def test_train_with_hostile_class_names_writes_every_figure_and_result(tmp_path: Path) -> None:
    from birdlens.train import train

    data = _hostile_folder(tmp_path / "birds")
    cfg = tiny_probe_config(data, tmp_path)
    run = train(cfg)
    for name in ("metrics/valid.json", "metrics/test.json", "figures/confusion_test_counts.png"):
        assert (run / name).is_file(), name
    classes = json.loads((run / "meta.json").read_text())["classes"]  # labels are upper-cased
    assert sorted(classes) == sorted(c.upper() for c in (BAD, "$x^2$", "$y$ ok"))
    assert len(list((run / "figures").glob("*.png"))) == 5


def test_a_failing_figure_never_loses_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from birdlens.evaluate import run as evaluate_module
    from birdlens.train import train

    data = make_image_folder(tmp_path / "birds")
    cfg = tiny_probe_config(data, tmp_path)
    run = train(cfg, evaluate=False)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no figure today")

    monkeypatch.setattr(evaluate_module, "plot_reliability", broken)
    metrics = evaluate_module.evaluate_run(run, split="test", quiet=True)
    assert json.loads((run / "metrics" / "test.json").read_text())["accuracy"] == metrics["accuracy"]
    assert (run / "figures" / "confusion_test_counts.png").is_file()
    assert (run / "figures" / "top_losses_test.png").is_file()
    assert not (run / "figures" / "reliability_test.png").exists()
    err = capsys.readouterr().err
    assert "reliability_test.png not written" in err and "no figure today" in err


def _broken(*args: object, **kwargs: object) -> None:
    raise RuntimeError("no figure today")


def test_a_failing_panel_never_loses_the_explanations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from birdlens.explain import run as explain_run
    from test_explain_run import photos, tiny_trained

    monkeypatch.setattr(explain_run, "panel", _broken)
    out = tmp_path / "out"
    man = explain_run.explain_images(tiny_trained(), photos(tmp_path), ["gradcam"], out, quiet=True)
    assert json.loads((out / "manifest.json").read_text())["panels"] == man["panels"] == []
    assert any((out / "gradcam").glob("*.npy"))
    assert "panel.png not written: RuntimeError: no figure today" in capsys.readouterr().err


def test_a_failing_quality_figure_never_loses_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from birdlens.explain.metrics import evaluate as xeval
    from birdlens.explain.metrics import figures as xfigures

    monkeypatch.setattr(xfigures, "plot_curves", _broken)
    curves = {"gradcam": {"deletion": {"fractions": [0, 1], "mean": [1, 0], "auc": [0.5]}}}
    summary = {"gradcam": {"deletion": {"mean": 0.5, "ci95": [0.4, 0.6], "n": 3}}}
    results = {
        "curves": curves,
        "ranking": ["deletion"],
        "methods": summary,
        "sanity": {"methods": {}},
        "data": {"images": ["a.png"]},
    }
    xeval._write(results, {"gradcam": {}}, tmp_path, figures=True)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["figures"] == ["figures/bars_deletion.png", "figures/categories.png"]
    assert (tmp_path / "per_image.json").is_file() and (tmp_path / "figures" / "bars_deletion.png").is_file()
    assert "curves.png not written" in capsys.readouterr().err
