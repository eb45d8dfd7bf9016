"""The report's cases on a tiny probe run whose head swaps two classes (so it confuses them for sure): the
confused pair's most confident mistake with plain and contrastive Grad-CAM, nearest examples, prototypes."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from _trainutil import make_image_folder, tiny_probe_config
from birdlens.evaluate import evaluate_run
from birdlens.explain.examples import index_for_run
from birdlens.explain.run import load_for_model
from birdlens.runs import layout
from birdlens.runs.trained import load_trained
from birdlens.study.cases import cases_stage
from birdlens.study.report_stage import _cases_section, _prototypes_html
from birdlens.study.stages import StageContext
from birdlens.train import train


@pytest.fixture(scope="module")
def swapped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe whose head rows of classes 0 and 1 are swapped: it calls every A a B and every B an A."""
    root = tmp_path_factory.mktemp("cases")
    run = train(tiny_probe_config(make_image_folder(root / "data", train=6, test=3, size=32), root))
    state = load_file(str(run / layout.BEST))
    head = [k for k in state if k.endswith("weight") and state[k].ndim == 2 and state[k].shape[0] == 3][-1]
    for key in (head, head[: -len("weight")] + "bias"):
        state[key] = state[key][[1, 0, 2]].contiguous()
    save_file(state, str(run / layout.BEST))
    return run


def test_cases_show_the_confusions_why_and_what_they_resemble(swapped_run: Path, tmp_path: Path) -> None:
    metrics = evaluate_run(swapped_run, quiet=True, figures=False)
    assert {(p["true"], p["pred"]) for p in metrics["most_confused"][:2]} == {
        ("CLASS A", "CLASS B"),
        ("CLASS B", "CLASS A"),
    }
    out = tmp_path / "cases"
    out.mkdir()
    ctx = StageContext(
        name="cases:tiny",
        dir=out,
        run_dir=tmp_path,
        config={"pairs": 2, "losses": 2, "k": 3, "split": "test"},
        inputs={"evaluate:tiny": {"metrics": metrics, "run": str(swapped_run)}},
        resume=False,
        quiet=True,
    )
    res = cases_stage(ctx)
    trained = load_trained(swapped_run)
    classes = trained.classes
    assert len(res["pairs"]) == 2
    for pair in res["pairs"]:
        t, p = classes.index(pair["true"]), classes.index(pair["pred"])
        assert Path(pair["path"]).parent.name == pair["true"]
        x = load_for_model(pair["path"], trained)[1]
        logits = trained.model(x[None]).detach()[0]
        assert int(logits.argmax()) == p
        assert pair["logit_difference"] == pytest.approx(float(logits[p] - logits[t]), abs=1e-4)
        # the most confident mistake among the true class's test images
        others = sorted((swapped_run.parent / "data" / "test" / pair["true"]).glob("*.png"))
        probs = [trained.predict_proba(load_for_model(o, trained)[1][None])[0, p] for o in others]
        assert float(max(probs)) == pytest.approx(float(logits.softmax(0)[p]), abs=1e-5)
        assert pair["examples"]["predicted"]["class"] == pair["pred"]
        assert {n["class"] for n in pair["examples"]["predicted"]["neighbours"]} == {pair["pred"]}
        assert Path(pair["figure"]).is_file() and Path(pair["examples_figure"]).is_file()
    assert len(res["losses"]) == 2 and all(Path(r["examples_figure"]).is_file() for r in res["losses"])
    index = index_for_run(trained, swapped_run, quiet=True)
    medoids = index.medoids()
    assert res["prototypes"]["classes"] == {classes[c]: index.paths[r] for c, r in medoids.items()}
    html = _cases_section({"cases:tiny": res})
    assert html.count("<img") == 2 * 2 + 2 and "logit(CLASS B) - logit(CLASS A)" in html
    assert _prototypes_html({"cases:tiny": res}).count("<img") == 1


def test_a_model_that_confuses_nothing_says_so() -> None:
    html = _cases_section({"cases:tiny": {"pairs": [], "losses": [], "prototypes": {}}})
    assert "No confused pairs" in html and "<img" not in html
