"""What a method is lives on its class (issue 22) and every per-request parameter has a declared range
(issue 26, finding 4): a method registered in one file shows up in the CLI, the study config, the panel, the
web app and the explanation-quality table; a bad parameter is one clear error naming the allowed range."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from _trainutil import save_run, untrained_cnn
from birdlens.data.manifest import Manifest
from birdlens.data.synth import generate_dataset
from birdlens.explain.base import (
    SEED,
    Explainer,
    InvalidParameterError,
    Param,
    explainer_for,
    list_methods,
    method_class,
    register,
    unregister,
    validate_params,
)
from birdlens.runs.trained import TrainedModel

SIZE = 64


# ---- fixtures: a tiny run on synthetic birds, and a dummy method registered for one test --------------
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


@pytest.fixture
def dummy() -> Iterator[type[Explainer]]:
    """A new method in one place (this fixture); unregistered afterwards so no other test sees it."""

    @register("dummy", "dummy-saliency")
    class Dummy(Explainer):
        """A centred Gaussian blob plus seeded noise: the smallest stochastic method."""

        title = "Dummy Saliency"
        panel_order = 75
        stochastic = True
        tunable = (SEED, Param("sharpness", float, 4.0, lo=0.5, hi=20.0, doc="how peaked the blob is"))

        def __init__(self, model: torch.nn.Module, *, seed: int = 0, sharpness: float = 4.0, **common: Any):
            super().__init__(model, **common)
            self.seed, self.sharpness = int(seed), float(sharpness)
            self.params.update(seed=self.seed, sharpness=self.sharpness)

        def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
            logits, target = self.predict(x, target)
            b, _, h, w = x.shape
            yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            blob = torch.exp(-self.sharpness * (yy**2 + xx**2))
            noise = torch.rand(b, h, w, generator=torch.Generator().manual_seed(self.seed))
            return blob + 0.1 * noise, target, self.target_scores(logits, target), {}

    try:
        yield Dummy
    finally:
        unregister("dummy")


def test_the_dummy_fixture_undoes_its_registration(dummy: type[Explainer]) -> None:
    assert "dummy" in list_methods() and method_class("dummy-saliency") is dummy
    unregister("dummy")
    assert "dummy" not in list_methods()
    with pytest.raises(ValueError, match="unknown explanation method"):
        method_class("dummy-saliency")


# ---- acceptance: one new file, seen everywhere --------------------------------------------------------
def test_a_new_method_shows_in_the_cli(dummy: type[Explainer], run_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from birdlens.cli import app

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(img)
    runner = CliRunner()
    bad = runner.invoke(app, ["explain", str(img), "--run", str(run_dir), "--methods", "nope", "--out", "x"])
    assert bad.exit_code == 2 and "dummy" in bad.output and "Traceback" not in bad.output
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["explain", str(img), "--run", str(run_dir), "--methods", "gradcam,dummy", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["methods"]["dummy"]["params"]["sharpness"] == 4.0 and (out / "dummy" / "in_a.npy").is_file()


def test_smoothgrad_over_a_cam_from_the_cli(trained: TrainedModel, run_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from birdlens.cli import app

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(img)
    args = ["explain", str(img), "--run", str(run_dir), "--methods", "smoothgrad", "--out"]
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(
        app, [*args, str(out), "--param", "smoothgrad.base=gradcam", "--param", "smoothgrad.num_samples=3"]
    )
    assert r.exit_code == 0, r.output
    params = json.loads((out / "manifest.json").read_text())["methods"]["smoothgrad"]["params"]
    assert params["base"] == "gradcam" and params["num_samples"] == 3
    assert params["layer"] == trained.cam_layer == "features.2.act"  # the run's CAM layer, passed to the base
    bad = runner.invoke(app, [*args, str(tmp_path / "bad"), "--param", "smoothgrad.base=eigencam"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "base must be one of 'gradcam', 'gradcam++'" in bad.output and "got 'eigencam'" in bad.output


def test_a_new_method_is_accepted_by_the_study_config(dummy: type[Explainer]) -> None:
    from pydantic import ValidationError

    from birdlens.study.config import ExplainConfig, ExplainEvalConfig

    cfg = ExplainConfig(methods=["gradcam", "dummy"], params={"dummy": {"sharpness": 2}})
    assert cfg.methods == ["gradcam", "dummy"] and cfg.params["dummy"]["sharpness"] == 2.0
    assert ExplainEvalConfig(methods=["dummy"]).methods == ["dummy"]
    with pytest.raises(ValidationError, match=r"sharpness must be <= 20"):
        ExplainConfig(methods=["dummy"], params={"dummy": {"sharpness": 99}})
    unregister("dummy")
    with pytest.raises(ValidationError, match="unknown method"):
        ExplainConfig(methods=["dummy"])


def test_a_new_method_has_its_title_in_the_panel(
    dummy: type[Explainer], trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.axes

    from birdlens.explain.run import explain_images

    titles: list[str] = []
    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_title",
        lambda ax, label, *a, **k: titles.append(label) or real(ax, label, *a, **k),
    )
    arr = np.random.RandomState(1).randint(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    man = explain_images(trained, [arr], ["dummy", "gradcam"], tmp_path / "x", quiet=True)
    assert man["panels"] == ["panel.png"] and (tmp_path / "x" / "panel.png").is_file()
    assert titles == ["Photo", "Dummy Saliency", "Grad-CAM"]
    from birdlens.study.report_stage import _panel_columns  # the study report's caption of that panel

    assert _panel_columns(tmp_path / "x") == "photo | Dummy Saliency | Grad-CAM"

    from birdlens.explain.viz import PanelRow, panel

    titles.clear()  # without an explicit order the panel sorts by the classes' panel_order
    row = PanelRow(image=arr, overlays={"dummy": arr, "ig": arr, "gradcam": arr}, predicted="x")
    panel([row], tmp_path / "p.png")
    assert titles == ["Photo", "Grad-CAM", "Integrated Gradients", "Dummy Saliency"]


def test_a_new_method_is_offered_by_the_web_app(dummy: type[Explainer], run_dir: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from birdlens.app.server import create_app
    from birdlens.app.service import ModelService

    svc = ModelService.from_run(run_dir)
    buf = _png()
    with TestClient(create_app(svc)) as c:
        info = c.get("/api/info").json()
        assert "dummy" in info["methods"] and "random" not in info["methods"]  # in_app=False stays off
        ok = c.post(
            "/api/explain",
            files={"image": ("a.png", buf, "image/png")},
            data={"method": "dummy", "params": '{"sharpness": 2}'},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["params"]["sharpness"] == 2.0
        bad = c.post(
            "/api/explain",
            files={"image": ("a.png", buf, "image/png")},
            data={"method": "dummy", "params": '{"sharpness": 99}'},
        )
        assert bad.status_code == 400 and "[0.5, 20]" in bad.json()["detail"]


def test_a_new_method_is_in_the_explanation_quality_table(
    dummy: type[Explainer], trained: TrainedModel, synth: Manifest
) -> None:
    from rich.console import Console

    from birdlens.explain.metrics.evaluate import evaluate_explanations
    from birdlens.explain.metrics.table import print_results

    res = evaluate_explanations(
        trained,
        synth,
        ["dummy"],
        n=4,
        quiet=True,
        n_steps=8,
        sanity_n=2,
        stability_n=2,
        stability_seeds=(0, 1),
        n_resamples=50,
        figures=False,
    )
    assert not res["errors"], res["errors"]
    assert "stability" in res["methods"]["dummy"]  # stochastic, a class fact: the stability metric applies
    console = Console(record=True, width=200)
    print_results(res, console=console)
    assert "dummy" in console.export_text()


# ---- issue 26: per-request parameters have documented ranges -------------------------------------------
def test_every_tunable_parameter_is_a_constructor_option_with_a_range() -> None:
    for m in list_methods():
        cls = method_class(m)
        accepted = inspect.signature(cls.__init__).parameters
        for p in cls.tunable:
            assert p.name in accepted, (m, p.name)
            # the typed signature repeats the declared default for users' editors; it may never drift from it
            assert accepted[p.name].default == p.default, (m, p.name, accepted[p.name].default, p.default)
            if p.type in (int, float):
                assert p.lo is not None and p.hi is not None and p.lo <= p.default <= p.hi, (m, p)
            if p.type is str:
                choices = p.choice_list()
                assert choices and p.default in choices, (m, p)
            assert p.doc, (m, p.name)
        if cls.budget_param is not None:
            assert cls.budget_param in cls.param_spec(), m


def test_bad_parameters_name_the_parameter_and_the_allowed_values() -> None:
    assert validate_params("lime", {"num_samples": 30.0, "sampler": "antithetic"}) == {
        "num_samples": 30,
        "sampler": "antithetic",
    }
    cases = [
        ({"batch_size": 2000}, "batch_size must be <= 64 (an integer in [1, 64]), got 2000"),
        ({"num_samples": 0}, "num_samples must be >= 1"),
        ({"num_samples": 2.5}, "num_samples must be an integer in [1, 20000]"),
        ({"num_samples": True}, "num_samples must be an integer"),
        ({"sampler": "sobol"}, "sampler must be one of 'uniform', 'antithetic'"),
        ({"bogus": 1}, "unknown parameter 'bogus'; allowed parameters: alpha, batch_size"),
    ]
    for params, msg in cases:
        with pytest.raises(InvalidParameterError) as e:
            validate_params("lime", params)
        assert msg in str(e.value) and "__init__" not in str(e.value)


def test_explainer_for_builds_any_method_from_the_run(trained: TrainedModel) -> None:
    cam = explainer_for(trained, "gradcam", seed=3)
    assert cam.layer_arg == "features.2.act" and "seed" not in cam.params  # a CAM needs the run's layer
    lime = explainer_for(trained, "lime", seed=3, num_samples=20)
    assert lime.seed == 3 and lime.num_samples == 20 and lime.model_name == "simple_cnn"
    assert not hasattr(lime, "layer_arg")  # no layer for a method that does not take one
    with pytest.raises(InvalidParameterError, match="steps must be <= 1024"):
        explainer_for(trained, "ig", steps=10**6)


def test_one_request_cannot_ask_for_a_huge_batch(run_dir: Path) -> None:
    """Issue 26 finding 4: num_samples=2000, batch_size=2000 went to LIME as given (the server grew to
    24 GB); now num_samples is capped to the budget and batch_size refused with its range, before any work."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from birdlens.app.server import create_app
    from birdlens.app.service import ModelService

    svc = ModelService.from_run(run_dir)
    buf = _png()
    with TestClient(create_app(svc)) as c:
        for method, params, msg in [
            ("lime", {"num_samples": 2000, "batch_size": 2000}, "batch_size must be <= 64"),
            ("shap", {"max_evals": 100, "forward_chunk": 100000}, "forward_chunk must be <= 64"),
            ("ig", {"steps": 8, "internal_batch_size": 10**6}, "internal_batch_size must be <= 32"),
            ("gradcam", {"bogus": 1}, "unknown parameter 'bogus'; allowed parameters: normalize"),
            ("lime", {"num_samples": "many"}, "num_samples must be an integer in [1, 2000]"),
        ]:
            r = c.post(
                "/api/explain",
                files={"image": ("a.png", buf, "image/png")},
                data={"method": method, "params": json.dumps(params)},
            )
            assert r.status_code == 400, (method, params, r.text)
            detail = r.json()["detail"]
            assert msg in detail and "__init__" not in detail, detail
        info = c.get("/api/info").json()
        assert info["budget"]["lime_num_samples"] == 2000 and info["budget"]["ig_steps"] == 128


def test_the_budget_reads_the_ranges_from_the_classes() -> None:
    from birdlens.app.budget import Budget, offered_methods, param_ranges

    assert offered_methods() == [
        "gradcam",
        "gradcam++",
        "layercam",
        "hirescam",
        "xgradcam",
        "eigencam",
        "scorecam",
        "ablationcam",
        "lime",
        "occlusion",
        "rise",
        "shap",
        "saliency",
        "smoothgrad",
        "ig",
        "lrp",
    ]  # every method but the random baseline, in panel order
    b = Budget(lime_max_samples=300)
    ranges = param_ranges(b)
    assert ranges["lime"]["num_samples"]["max"] == 300 and ranges["lime"]["batch_size"]["max"] == 64
    assert ranges["gradcam"] == {"normalize": method_class("gradcam").param_spec()["normalize"].describe()}
    used, notes = b.clamp("lime", {"num_samples": 5000, "batch_size": 8})
    assert used == {"num_samples": 300, "batch_size": 8} and notes == [
        "num_samples 5000 capped to 300 (server budget)"
    ]
    assert b.clamp("shap", {})[0] == {"max_evals": 500}


def _png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(2).randint(0, 255, (80, 90, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_one_gaussian_blur_serves_methods_and_metrics() -> None:
    from birdlens.explain.imaging import gaussian_blur
    from birdlens.explain.metrics.perturbation import make_substrate

    x = torch.randn(2, 3, 20, 9)
    torch.testing.assert_close(make_substrate(x, "blur"), gaussian_blur(x, 5.0, radius=5), rtol=0, atol=0)
    const = torch.full((1, 3, 6, 6), 0.25)
    torch.testing.assert_close(gaussian_blur(const, 10.0), const)  # radius shrunk to what reflect allows
    assert gaussian_blur(torch.zeros(1, 1, 4, 4, dtype=torch.float64), 1.0).dtype == torch.float64


def test_explain_eval_refuses_a_bad_parameter_before_any_work(
    trained: TrainedModel, synth: Manifest, run_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from birdlens.cli import app
    from birdlens.explain.metrics.evaluate import evaluate_explanations

    with pytest.raises(InvalidParameterError, match="batch_size must be <= 64"):
        evaluate_explanations(
            trained, synth, ["lime"], n=2, quiet=True, method_params={"lime": {"batch_size": 999}}
        )
    args = ["explain-eval", "--run", str(run_dir), "--data", str(synth.root), "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, [*args, "--methods", "lime", "--param", "lime.bogus=1", "--n", "2"])
    assert r.exit_code != 0 and "unknown parameter 'bogus'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "results.json").exists()


def test_the_api_documents_every_parameter_range(run_dir: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from birdlens.app.server import create_app
    from birdlens.app.service import ModelService

    with TestClient(create_app(ModelService.from_run(run_dir))) as c:
        info = c.get("/api/info").json()
        params = info["params"]
    assert params["lime"]["batch_size"] == {
        "type": "int",
        "default": 4,
        "min": 1,
        "max": 64,
        "choices": None,
        "optional": False,
        "doc": "perturbed images per model call",
    }
    assert params["lime"]["num_samples"]["max"] == 2000  # the server's cap, not the library's
    assert sorted(params) == sorted(info["methods"]) and "random" not in params  # every served method's
